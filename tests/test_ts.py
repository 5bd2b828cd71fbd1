"""Transition states with a relaxing environment and the IRC: analytic surface, then the ``ts`` protocol."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from bioqmmm.paths.irc import intrinsic_reaction_coordinate
from bioqmmm.paths.surfaces import muller_brown
from bioqmmm.paths.tsopt import refine_transition_state
from bioqmmm.run.runner import run_protocol

# Müller & Brown, Theor. Chim. Acta 53, 75 (1979): minima A and B and the intermediate minimum M (as
# tabulated in the NEB literature, e.g. Henkelman et al. 2000), and a point near the A–M saddle.
MB_A = np.array([-0.558224, 1.441726])
MB_M = np.array([-0.050011, 0.466694])
MB_NEAR_SADDLE = np.array([[-0.80, 0.60, 0.0]])
PRODUCT_PDB = Path(__file__).resolve().parents[1] / "protocols" / "formamide_product.pdb"


def _planar(x: np.ndarray) -> tuple[float, np.ndarray]:
    """Müller–Brown in the plane, z held by a harmonic well."""
    energy, forces = muller_brown(x)
    forces[0, 2] = -100.0 * x[0, 2]
    return energy + 50.0 * x[0, 2] ** 2, forces


def test_irc_from_the_muller_brown_saddle_descends_into_the_two_minima_it_joins():
    """From the A–M saddle the two branches end (to the force criterion) at A and at the intermediate minimum,
    each point lower than the one before."""
    saddle = refine_transition_state(_planar, MB_NEAR_SADDLE, np.array([0]), np.array([1.0]),
                                     direction=np.array([1.0, -1, 0]), fmax=1e-6, max_steps=50, trust=0.05)
    values, vectors = np.linalg.eigh(saddle.hessian)
    irc = intrinsic_reaction_coordinate(_planar, saddle.positions, [0], [1.0], vectors[:, 0].reshape(1, 3),
                                        step=0.02, max_steps=400, fmax=0.5)
    ends = {}
    for branch in (irc.forward, irc.backward):
        assert branch.reached_minimum
        assert np.all(np.diff(branch.energies) < 0) and branch.energies[0] < irc.ts_energy
        end = branch.positions[-1][0, :2]
        ends["A" if np.linalg.norm(end - MB_A) < 0.01 else "M" if np.linalg.norm(end - MB_M) < 0.01 else "?"] = end
    assert set(ends) == {"A", "M"}, ends


@pytest.fixture(scope="module")
def gas_ts(tmp_path_factory):
    """The ``ts`` protocol on formamide → formamidic acid in the gas phase (HF/3-21G, the shipped minima),
    from the midpoint guess; the run folder and the run's record."""
    folder = tmp_path_factory.mktemp("ts")
    config = {
        "system": {"example": "formamide", "constraints": "none"},
        "qm": {"atoms": "all", "charge": 0, "multiplicity": 1, "method": "hf", "basis": "3-21g",
               "options": {"conv_tol": 1e-10}},
        "protocol": {"type": "ts", "guess": "midpoint", "product": str(PRODUCT_PDB), "fmax_kjmol_nm": 5.0,
                     "irc_step": 0.03, "irc_max_steps": 25},
        "output": str(folder / "out"),
    }
    path = folder / "ts.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, run_protocol(path, progress=False)


def test_gas_phase_ts_has_one_imaginary_mode_and_its_irc_joins_reactant_and_product(gas_ts):
    """A first-order saddle (one imaginary mode, converged forces) whose IRC ends, once minimised, are the
    shipped reactant and product (QM-atom RMSD < 0.005 nm), the product above the reactant."""
    _, record = gas_ts
    assert record["converged"] and record["max_force_qm"]["value"] < 5.0
    assert len(record["imaginary_frequencies"]["value"]) == 1 and record["imaginary_frequencies"]["value"][0] < -1000
    ends = {record["irc"][name]["ends_at"]: record["irc"][name] for name in ("forward", "backward")}
    assert set(ends) == {"reactant", "product"}
    for label, end in ends.items():
        assert end["minimised"]["converged"] and end["rmsd_to"][label]["value"] < 0.005, (label, end)
    barrier = ends["reactant"]["minimised"]["energy_below_ts"]["value"]
    assert barrier > ends["product"]["minimised"]["energy_below_ts"]["value"] > 0
    out = Path(record_folder(gas_ts))
    for name in ("ts.pdb", "modes_ts.molden", "frequencies_ts.csv", "irc.pdb", "irc.csv", "irc.png"):
        assert (out / name).stat().st_size > 0


def record_folder(gas_ts) -> Path:
    path, _ = gas_ts
    return Path(yaml.safe_load(path.read_text())["output"])


def test_ts_rerun_resumes_from_its_stages(gas_ts, monkeypatch):
    """A rerun reads the saddle and the IRC from their stage files (searching again would fail here) and
    continues the minimised ends from their checkpoints: the same saddle, IRC and ends."""
    import bioqmmm.protocols.ts as ts_protocol

    def refuse(*args, **kwargs):
        raise AssertionError("a rerun searched again instead of reading its stage file")

    path, record = gas_ts
    monkeypatch.setattr(ts_protocol, "refine_in_environment", refuse)
    monkeypatch.setattr(ts_protocol, "irc_in_environment", refuse)
    again = run_protocol(path, progress=False)
    assert again["imaginary_frequencies"] == record["imaginary_frequencies"]
    for name in ("forward", "backward"):
        before, after = record["irc"][name], again["irc"][name]
        assert json.dumps({k: before[k] for k in ("steps", "energy_below_ts", "max_force")}) == \
            json.dumps({k: after[k] for k in ("steps", "energy_below_ts", "max_force")})
        assert after["ends_at"] == before["ends_at"]
        assert after["minimised"]["energy_below_ts"]["value"] == pytest.approx(
            before["minimised"]["energy_below_ts"]["value"], abs=1e-6)


@pytest.mark.parametrize("protocol, message", [
    ({"type": "ts", "guess": "midpoint"}, "the midpoint guess needs a product structure"),
    ({"type": "ts", "guess": "midpoint", "product": "p.pdb", "start": "s.pdb"}, "give either a start structure"),
    ({"type": "ts", "irc_step": -0.01}, "irc_step"),
])
def test_bad_ts_settings_are_named_before_anything_runs(tmp_path, protocol, message):
    """Settings that cannot work are refused when the file is read, naming the key."""
    from bioqmmm.errors import InputError
    from bioqmmm.run.protocol import load_protocol

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"system": {"example": "formamide"}, "qm": {"atoms": "all", "charge": 0,
                                    "multiplicity": 1, "method": "hf", "basis": "sto-3g"}, "protocol": protocol}))
    with pytest.raises(InputError, match=message):
        load_protocol(path)
