"""``bioqmmm quickstart``: run_quickstart end to end, and the CLI around it."""

from __future__ import annotations

import math
import shutil
import subprocess

import mdtraj
import pytest

from bioqmmm.cli import main
from bioqmmm.errors import InputError
from bioqmmm.quickstart import format_summary, run_quickstart
from bioqmmm.simulation.reporters import COLUMNS
from bioqmmm.simulation.reporters import read_rows as read_report

SMALL_BOX = 2.2  # nm, about 1,000 atoms; the QM cost is the same as in the default box


def read_rows(path):
    rows = read_report(path)
    assert all(tuple(row) == COLUMNS for row in rows)
    return rows


def test_run_quickstart_writes_consistent_files(tmp_path):
    summary = run_quickstart(tmp_path, steps=3, box_size=SMALL_BOX, seed=7, progress=False)

    files = summary["files"]
    for name in ("topology.pdb", "trajectory.dcd", "energies.csv", "energies.png"):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    assert set(files.values()) == {tmp_path / n for n in ("topology.pdb", "trajectory.dcd", "energies.csv",
                                                          "energies.png", "checkpoint.npz")}
    assert (tmp_path / "energies.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = read_rows(tmp_path / "energies.csv")
    assert len(rows) == 3
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert [float(r["time_ps"]) for r in rows] == pytest.approx([0.0005, 0.001, 0.0015])
    for r in rows:
        qm, mm, total = (r[k] for k in ("qm_kjmol", "mm_kjmol", "potential_kjmol"))
        assert all(math.isfinite(x) for x in (qm, mm, total))
        assert total == pytest.approx(qm + mm, abs=1e-6)
        assert float(r["qm_wall_s"]) > 0
    # consecutive 0.5 fs steps: the potential energy moves smoothly (no blow-up from a hot start)
    totals = [r["potential_kjmol"] for r in rows]
    assert max(totals) - min(totals) < 500.0

    # one DCD frame per CSV row, same atoms as the PDB, QM region = the 22 dipeptide atoms
    traj = mdtraj.load_dcd(str(tmp_path / "trajectory.dcd"), top=str(tmp_path / "topology.pdb"))
    assert traj.n_frames == 3
    assert traj.n_atoms == summary["n_atoms"]
    assert summary["n_qm_atoms"] == 22
    assert summary["steps"] == 3
    assert summary["level"] == "gfn2-xtb"
    assert summary["final_total_energy_kjmol"] == pytest.approx(totals[-1])

    text = format_summary(summary)
    assert "gfn2-xtb" in text and str(tmp_path) in text


def test_cli_quickstart_succeeds(tmp_path, capsys):
    assert main(["quickstart", "-o", str(tmp_path), "--steps", "2", "--box", str(SMALL_BOX), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "gfn2-xtb" in out and "mean temperature" in out and str(tmp_path) in out
    assert "Next:" in out and "bioqmmm run protocols/md.yaml" in out
    assert len(read_rows(tmp_path / "energies.csv")) == 2


def test_cli_unknown_method_is_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["quickstart", "--method", "nonsense-functional"]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert "nonsense-functional" in lines[0] and lines[0].startswith("bioqmmm quickstart: error:")
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []  # failed before writing anything


@pytest.mark.filterwarnings("ignore:Basis may be available in basis-set-exchange")
@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"box_size": 1.5}, {"threads": 0}, {"method": "b3lyyp"},
                                    {"method": "hf", "basis": "no-such-basis"}])
def test_run_quickstart_rejects_bad_options_early(tmp_path, kwargs):
    with pytest.raises(InputError):
        run_quickstart(tmp_path / "out", **kwargs)


def test_cli_help_and_usage(capsys):
    assert main(["--help"]) == 0
    assert "quickstart" in capsys.readouterr().out
    assert main(["quickstart", "--help"]) == 0
    help_text = capsys.readouterr().out
    for option in ("--outdir", "--steps", "--method", "--basis", "--box", "--threads"):
        assert option in help_text
    assert main([]) == 2  # a subcommand is required
    assert main(["quickstart", "--steps", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("bioqmmm") is None, reason="console script not installed")
def test_console_script_help():
    result = subprocess.run(["bioqmmm", "quickstart", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "--steps" in result.stdout


def test_cli_reports_scf_failure_during_md(tmp_path, monkeypatch, capsys):
    """A failure inside the QM force reaches main as its typed error: one line naming the step, exit 1."""
    from bioqmmm.errors import SCFAttempt, SCFConvergenceError
    from bioqmmm.qm.pyscf_engine import PySCFEngine

    def fail(self, *args, step=None, **kwargs):
        raise SCFConvergenceError(step, [SCFAttempt("cdiis", 50, False, -1.0)])

    monkeypatch.setattr(PySCFEngine, "compute", fail)
    assert main(["quickstart", "-o", str(tmp_path), "--box", str(SMALL_BOX), "--no-progress", "--method", "hf"]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "SCF did not converge at step 0" in lines[0]
    assert "Traceback" not in captured.err
