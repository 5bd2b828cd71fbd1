"""The real-system showcases of systems/ (their --quick modes: the whole pipeline, short and unconverged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import shared_pdb

SYSTEMS = Path(__file__).resolve().parents[1] / "systems"


@pytest.mark.shared_data
@pytest.mark.timeout(2400)  # ~10 min alone on 2 cores
def test_chorismate_mutase_quick_run_goes_from_the_pdb_file_to_both_profiles(tmp_path):
    """systems/chorismate_mutase/run --quick: the snapshot is prepared in the enzyme and in water, a steered
    GFN2-xTB/MM path crosses from reactant to product in each, windows started along it give a profile with a
    positive barrier between the reactant and product ranges, and the summary sets the catalytic effect beside
    the experimental one."""
    shared_pdb("cm_md_ccpbiosim.pdb")
    done = subprocess.run([sys.executable, str(SYSTEMS / "chorismate_mutase" / "run"), "--quick", "-o",
                           str(tmp_path), "--no-progress"], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "result.json").read_text())
    for environment in ("enzyme", "water"):
        steer = json.loads((tmp_path / environment / "steer_out" / "result.json").read_text())
        models = steer["path_models_s"]["value"]
        assert models[0] < -0.12 and models[-1] > 0.10, models  # reactant (O7-C5 bonded) to product (C1-C9)
        profile = json.loads((tmp_path / environment / "pmf_out" / "result.json").read_text())
        assert record[f"{environment}_barrier"]["value"] == profile["free_energy_barrier"]["value"] > 0
        assert -0.12 < profile["barrier_position"]["value"] < 0.10  # between the reactant and product ranges
    assert record["catalytic_effect"]["value"] == pytest.approx(
        record["water_barrier"]["value"] - record["enzyme_barrier"]["value"])
    assert record["literature"]["catalytic_effect"]["value"] == pytest.approx((24.5 - 15.4) * 4.184)
    assert (tmp_path / "profiles.png").stat().st_size > 0 and "experiment" in (tmp_path / "summary.md").read_text()
