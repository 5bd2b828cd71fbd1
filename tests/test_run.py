"""Run machinery: protocol files, MD with checkpoints, exact continuation, failures, optimisation."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from bioqmmm.cli import main
from bioqmmm.errors import CalculationError
from bioqmmm.protocols.md import run_md
from bioqmmm.qm import SCFStrategy
from bioqmmm.run import docs_numbers
from bioqmmm.run.build import build_qmmm
from bioqmmm.run.protocol import load_protocol
from bioqmmm.run.schema import ProtocolError
from bioqmmm.simulation.checkpoint import read_meta
from bioqmmm.simulation.reporters import read_rows

PROTOCOLS = Path(__file__).resolve().parents[1] / "protocols"

MD_FILE = """\
system:
  example: alanine_dipeptide
  box_size_nm: 2.4
qm:
  sidechains: [ALA2]
  charge: 0
  multiplicity: 1
  method: hf
  basis: sto-3g
  options:
    conv_tol: 1e-9
protocol:
  type: md
  steps: {steps}
  seed: 11
  minimize_mm_first: false
  checkpoint_interval: 10
output: out
resources:
  platform: Reference
"""


def _write(tmp_path: Path, text: str, name: str = "protocol.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("  steps: 5", "  stpes: 5"), r"yaml:14: unknown key 'stpes' in 'protocol' \(did you mean 'steps'\?\)"),
        (("  seed: 11", "  seed: eleven"), r"protocol.yaml:15: 'seed' must be an integer or null"),
        (("  charge: 0\n", ""), r"protocol.yaml:5: 'charge': is required with a QM region"),
        (("    conv_tol: 1e-9", "    conv_tl: 1e-9"), r"yaml:11: unknown key 'conv_tl' in 'options' \(did you mean"),
        (("  type: md", "  type: dynamics"),
         r"yaml:13: 'protocol': unknown protocol 'dynamics'; known: adaptive_md, elastic, fep, finite_size, interface, "
         r"md, neb"),
        (("  method: hf", "  engine: orca\n  method: hf"),
         r"yaml:8: 'engine': unknown QM engine 'orca'; known: mixed, pyscf"),
        (("  method: hf", "  engine: mixed\n  method: hf"), r"yaml:\d+: unknown key 'conv_tol' in 'options'"),
        (("  box_size_nm: 2.4", "  box_size_nm: [2.4"), r"protocol.yaml:\d+: not valid YAML"),
        (("  steps: 5", "  steps: 0"), r"protocol.yaml:14: 'steps': must be a positive integer"),
        (("  seed: 11", "  seed: 0"), r"protocol.yaml:15: 'seed': must be a positive integer \(omit it"),
        (("  checkpoint_interval: 10", "  report_interval: 50"), r"yaml:\d+: 'report_interval': must not exceed steps"),
        (("  multiplicity: 1", "  multiplicity: true"), r"protocol.yaml:7: 'multiplicity' must be an integer"),
        (("    conv_tol: 1e-9", "    conv_tol: [1e-9]"), r"yaml:11: 'conv_tol' must be a single value"),
        (("  seed: 11", "  seed: 11\n  mts_reference: {engine: xtb, method: gfn2}"),
         r"yaml:\d+: 'mts_reference': a reference level needs multiple time steps: set qm_every > 1"),
        (("  seed: 11", "  seed: 11\n  qm_every: 4\n  mts_reference: {engine: xtb, method: gfn7}"),
         r"yaml:17: 'method': QM engine 'xtb' has no method 'gfn7'; known: gfn2, gfn1"),
    ],
)
def test_malformed_protocol_fails_before_any_computation_naming_key_and_line(tmp_path, edit, message):
    path = _write(tmp_path, MD_FILE.format(steps=5).replace(*edit))
    with pytest.raises(ProtocolError, match=message):
        load_protocol(path)
    assert main(["run", str(path)]) == 1
    assert not (tmp_path / "out").exists()


def _md(tmp_path: Path, steps: int, out: str, qm_every: int = 1, extra: str = ""):
    text = MD_FILE.format(steps=steps).replace("  seed: 11", f"  seed: 11\n  qm_every: {qm_every}{extra}")
    config = load_protocol(_write(tmp_path, text, f"md_{out}_{steps}.yaml"))
    qmmm, positions, box = build_qmmm(config)
    return qmmm, run_md(qmmm, positions, config.protocol, tmp_path / out, box=box, platform="Reference",
                        identity="continuation-test", progress=False)


@pytest.mark.parametrize(("charge", "multiplicity", "message"), [
    (10, 1, r"charge 10 leaves 0 electrons in the QM region \(5 atoms, nuclear charge 10\): the charge is wrong"),
    (12, 1, r"charge 12 leaves -2 electrons in the QM region .* the charge is wrong"),
    (1, 1, r"charge 1 and multiplicity 1 are inconsistent with 9 electrons"),
])
def test_impossible_qm_charges_stop_the_shipped_md_file_before_any_step(tmp_path, capsys, charge, multiplicity,
                                                                        message):
    """protocols/md.yaml's side chain (CH3 + link H, 10 electrons) with a charge that leaves no electrons, fewer
    than none, or the wrong parity: one line naming the charge (and the multiplicity), exit 1, nothing run."""
    text = (PROTOCOLS / "md.yaml").read_text().replace("charge: 0", f"charge: {charge}")
    text = text.replace("multiplicity: 1", f"multiplicity: {multiplicity}")
    assert main(["run", str(_write(tmp_path, text)), "-o", str(tmp_path / "out"), "--no-progress"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and re.search(message, error[0]), error
    assert not (tmp_path / "out" / "checkpoint.npz").exists()


@pytest.mark.parametrize("qm_every", [1, pytest.param(3, marks=pytest.mark.slow)],
                         ids=["single-step", "multiple-time-step"])
def test_twenty_steps_equal_ten_plus_checkpoint_plus_ten(tmp_path, qm_every):
    _, straight = _md(tmp_path, 20, "straight", qm_every)
    _, first = _md(tmp_path, 10, "split", qm_every)
    assert first.steps == 10 and read_meta(tmp_path / "split" / "checkpoint.npz")["step"] == 10
    fresh_qmmm, resumed = _md(tmp_path, 20, "split", qm_every)  # a new process would build everything anew, too
    assert (fresh_qmmm.reference_group is not None) == (qm_every > 1)
    assert resumed.resumed_from == 10 and resumed.steps == 20
    assert np.abs(resumed.positions - straight.positions).max() < 1e-10
    straight_rows, split_rows = (read_rows(tmp_path / d / "energies.csv") for d in ("straight", "split"))
    assert [r["step"] for r in split_rows] == [r["step"] for r in straight_rows] == list(range(1, 21))
    for a, b in zip(straight_rows, split_rows, strict=True):
        assert a["potential_kjmol"] == pytest.approx(b["potential_kjmol"], abs=1e-6)
        assert a["qm_kjmol"] == pytest.approx(b["qm_kjmol"], abs=1e-6)
    assert resumed.qm_evaluations == 10  # one per step: reports reuse the cached QM result


def test_two_level_time_steps_run_resume_and_count_both_levels(tmp_path):
    """md with qm_every 4 and GFN2-xTB/MM as the reference level: one HF evaluation per (outer) step, one
    xTB evaluation per MM step; a resumed run continues the straight one (to xtb's SCC convergence: libxtb
    keeps its own guess, which a new process does not have)."""
    extra = "\n  warmup_ps: 0\n  mts_reference: {engine: xtb, method: gfn2}"
    qmmm, straight = _md(tmp_path, 6, "straight", 4, extra)
    # one per step, and the first step re-evaluates its start (MTS integrators ask for the QM group alone)
    assert straight.qm_evaluations in (6, 7) and straight.reference_evaluations in (24, 25)
    _md(tmp_path, 3, "split", 4, extra)
    _, resumed = _md(tmp_path, 6, "split", 4, extra)
    assert resumed.resumed_from == 3 and resumed.qm_evaluations in (3, 4)
    assert np.abs(resumed.positions - straight.positions).max() < 1e-6  # nm


def test_failed_scf_stops_the_run_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
    qmmm, done = _md(tmp_path, 10, "failing")
    config = load_protocol(_write(tmp_path, MD_FILE.format(steps=20), "more.yaml"))
    hopeless = (SCFStrategy("cdiis", max_cycle=1),)
    qmmm, positions, box = build_qmmm(config)
    qmmm.engine.options = qmmm.engine.options.__class__(
        **{**qmmm.engine.options.__dict__, "ladder": hopeless, "conv_tol": 1e-14}
    )
    with pytest.raises(CalculationError, match=r"MD stopped near step 1[01].*checkpoint.npz \(step 10\)"):
        run_md(qmmm, positions, config.protocol, tmp_path / "failing", box=box, platform="Reference",
               identity="continuation-test", progress=False)
    assert read_meta(tmp_path / "failing" / "checkpoint.npz")["step"] == 10


def test_sigterm_during_a_checkpoint_write_leaves_the_previous_checkpoint_usable(tmp_path):
    """Kill a process while it rewrites a large checkpoint; the file on disk is always complete."""
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(f"""
        import numpy as np, openmm
        from bioqmmm.simulation.checkpoint import write_checkpoint

        class Big:  # engine and kernel stand-ins with a large state, so each write takes a while
            def get_state(self):
                return {{"guess_dm": np.random.default_rng(0).random((3000, 3000))}}
        class Fake:
            engine = Big()
            kernel = Big()
            reference_springs = None
        system = openmm.System(); system.addParticle(1.0)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions([[0, 0, 0]])
        step = 0
        while True:
            step += 1
            write_checkpoint({str(tmp_path / "chk.npz")!r}, context, Fake(), {{"step": step}})
    """))
    process = subprocess.Popen([sys.executable, str(script)])
    temporary = tmp_path / "chk.npz.tmp"
    try:
        deadline = time.time() + 120
        while not (tmp_path / "chk.npz").exists() and time.time() < deadline:
            time.sleep(0.01)
        while not temporary.exists() and time.time() < deadline:  # a write is under way
            time.sleep(0.001)
        assert temporary.exists()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        process.kill()
    meta = read_meta(tmp_path / "chk.npz")
    assert meta["step"] >= 1
    with np.load(tmp_path / "chk.npz") as data:
        assert data["engine.guess_dm"].shape == (3000, 3000)


def test_shipped_md_protocol_runs_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "md"
    assert main(["run", str(PROTOCOLS / "md.yaml"), "-o", str(out), "--no-progress"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == load_protocol(PROTOCOLS / "md.yaml").protocol.steps
    assert result["n_link_atoms"] == 1 and result["qm_evaluations_this_run"] == result["steps"]
    for name in ("summary.txt", "energies.png", "energies.csv", "trajectory.dcd", "topology.pdb"):
        assert (out / name).stat().st_size > 0
    assert "mean scf cycles per step" in capsys.readouterr().out
    target = load_protocol(PROTOCOLS / "md.yaml").protocol.temperature_k  # thermalised start (warm-up)
    assert abs(result["mean_temperature"]["value"] - target) < 0.1 * target
    assert docs_numbers.compare("md", result) == []  # the temperature docs/running.md quotes
    traj = mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "topology.pdb"))
    start = mdtraj.load(str(out / "topology.pdb"))
    bonds = np.array([(a.index, b.index) for a, b in start.topology.bonds])
    qm = start.topology.select("resname ALA and not name N H C O CA HA")
    for frames in (start, traj):  # molecules whole, the QM side chain at the box centre, in every frame
        assert np.linalg.norm(frames.xyz[:, bonds[:, 0]] - frames.xyz[:, bonds[:, 1]], axis=2).max() < 0.2
        centre = frames.unitcell_vectors.sum(axis=1) / 2
        assert np.abs(frames.xyz[:, qm].mean(axis=1) - centre).max() < 1e-3


@pytest.mark.slow
def test_shipped_xtb_md_protocol_runs_from_the_command_line(tmp_path):
    """protocols/md_xtb.yaml: GFN2-xTB/MM MD of solvated alanine dipeptide, the whole solute in QM."""
    out = tmp_path / "md_xtb"
    assert main(["run", str(PROTOCOLS / "md_xtb.yaml"), "-o", str(out), "--no-progress"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["qm_level"] == "gfn2-xtb" and result["n_qm_atoms"] == 22 and result["n_link_atoms"] == 0
    assert result["steps"] == load_protocol(PROTOCOLS / "md_xtb.yaml").protocol.steps
    qm_energies = np.loadtxt(out / "energies.csv", delimiter=",", skiprows=1, usecols=3)
    assert np.all(np.isfinite(qm_energies)) and np.ptp(qm_energies) < 200  # kJ/mol: a stable run


@pytest.mark.slow
def test_microiterations_reach_the_force_criterion_below_the_frozen_environment_energy(tmp_path):
    shipped = (PROTOCOLS / "optimize.yaml").read_text()
    fmax = load_protocol(PROTOCOLS / "optimize.yaml").protocol.fmax_kjmol_nm
    assert main(["run", str(PROTOCOLS / "optimize.yaml"), "-o", str(tmp_path / "micro"), "--no-progress"]) == 0
    frozen_file = _write(tmp_path, shipped.replace("microiterations: true", "microiterations: false"), "frozen.yaml")
    assert main(["run", str(frozen_file), "-o", str(tmp_path / "frozen"), "--no-progress"]) == 0
    micro = json.loads((tmp_path / "micro" / "result.json").read_text())
    frozen = json.loads((tmp_path / "frozen" / "result.json").read_text())
    assert micro["converged"] and micro["max_force_inner_atoms"]["value"] < fmax
    assert micro["mm_relaxation_steps"] > 0 and frozen["mm_relaxation_steps"] == 0
    assert micro["final_energy"]["value"] < frozen["final_energy"]["value"]
    for name in ("optimized.pdb", "optimization.csv", "optimization.png", "summary.txt"):
        assert (tmp_path / "micro" / name).stat().st_size > 0
