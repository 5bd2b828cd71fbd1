"""``bioqmmm quickstart``: a short QM/MM MD of solvated alanine dipeptide, end to end.

Builds ACE-ALA-NME in a cubic TIP3P box (amber14), treats the dipeptide with a cheap QM
level (GFN2-xTB by default, or any PySCF method and basis) in the field of the water charges,
relaxes and thermalises the solvent at MM cost, and runs Langevin MD at 300 K with a stock
``openmm.app.Simulation``: a thousand 0.5 fs steps at GFN2-xTB/MM. Everything it writes goes into
one output directory:

``topology.pdb``
    The MD start structure (step 0), with the periodic box.
``trajectory.dcd``
    One frame every ``report_every(N)`` steps (molecules whole, the dipeptide centred).
``energies.csv``
    One row every ``report_every(N)`` steps, the same structures as the DCD frames
    (:class:`bioqmmm.simulation.reporters.QMMMReporter` columns: energies, temperature, SCF cycles, timings).
``energies.png``
    Energies relative to step 1, temperature and SCF cycles against time.
``checkpoint.npz``
    The end state (:mod:`bioqmmm.simulation.checkpoint`).

The MD itself is :func:`bioqmmm.protocols.md.run_md`, the engine of ``bioqmmm run``.

Units: nm, ps, kJ/mol, K, s.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from bioqmmm.errors import InputError
from bioqmmm.examples import alanine_dipeptide
from bioqmmm.protocols.md import MDSettings, run_md
from bioqmmm.qm.factory import Level, create_engine
from bioqmmm.qmmm.system import QMMMSystem
from bioqmmm.results import plot_md
from bioqmmm.simulation.reporters import read_rows
from bioqmmm.units import positions_nm

#: The QM region: the whole dipeptide (residues ACE, ALA, NME).
QM_SELECTION = "not water"
#: Nonbonded cutoff of the MM force field (nm); the box edge must exceed twice this.
NONBONDED_CUTOFF = 0.9
DEFAULT_STEPS = 1000  # 0.5 ps; a GFN2-xTB/MM step of this box takes a few hundredths of a second
DEFAULT_METHOD = "gfn2-xtb"
#: Methods run with :class:`bioqmmm.qm.XTBEngine` (anything else goes to :class:`bioqmmm.qm.PySCFEngine`).
XTB_METHODS = {"gfn2-xtb": "gfn2", "gfn1-xtb": "gfn1"}
#: Rows of energies.csv and trajectory frames per run (at most; one per step for short runs).
REPORTS = 100
TEMPERATURE = 300.0  # K
FRICTION = 1.0  # 1/ps
TIMESTEP = 0.0005  # ps (0.5 fs: X-H bonds inside the QM region are not constrained)


def run_quickstart(
    outdir: str | Path = "quickstart_out",
    steps: int = DEFAULT_STEPS,
    method: str = DEFAULT_METHOD,
    basis: str = "sto-3g",
    box_size: float = 2.7,
    threads: int | None = None,
    *,
    seed: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the quickstart QM/MM MD and write its files into ``outdir``.

    Parameters
    ----------
    outdir:
        Output directory, created if missing; existing quickstart files are overwritten.
    steps:
        Number of MD steps (0.5 fs each); one QM evaluation per step plus one.
    method, basis:
        QM level: ``gfn2-xtb`` or ``gfn1-xtb`` (:class:`bioqmmm.qm.XTBEngine`; ``basis`` unused), else
        :class:`bioqmmm.qm.PySCFEngine` with HF or any functional PySCF knows and ``basis``.
    box_size:
        Edge of the cubic water box, nm (2.7 nm gives about 1,800 atoms).
    threads:
        CPU threads for PySCF and for OpenMM's CPU platform (None: their defaults).
    seed:
        Seed for the initial velocities and the Langevin noise (None: random).
    progress:
        Show a tqdm progress bar on stderr.

    Returns
    -------
    dict
        ``steps``, ``n_atoms``, ``n_qm_atoms``, ``mean_scf_cycles``, ``max_scf_cycles``,
        ``mean_qm_wall_s``, ``setup_wall_s``, ``md_wall_s``, ``total_wall_s`` (s),
        ``final_qm_energy_kjmol``, ``final_mm_energy_kjmol``, ``final_total_energy_kjmol``,
        ``method``, ``basis``, ``box_size_nm``, ``outdir`` and ``files`` (name -> Path).

    Raises
    ------
    bioqmmm.errors.InputError
        Bad options (before any expensive work).
    bioqmmm.errors.CalculationError
        A QM evaluation failed (e.g. SCF did not converge); the rows written so far stay in
        ``energies.csv`` and the last checkpoint in ``checkpoint.npz``.
    """
    start = time.perf_counter()
    steps = _check_options(steps, box_size, threads)
    engine = _engine(method, basis, threads)  # raises InputError for an unknown method
    level = method if method.lower() in XTB_METHODS else f"{method}/{basis}"
    topology, reference, positions = alanine_dipeptide(box_size=box_size, nonbonded_cutoff=NONBONDED_CUTOFF)
    # validates charge, multiplicity and basis before anything is written or minimised
    qmmm = QMMMSystem(topology, reference, QM_SELECTION, charge=0, multiplicity=1, engine=engine, platform="CPU")
    out = _make_outdir(outdir)
    for stale in ("checkpoint.npz", "energies.csv", "trajectory.dcd"):  # a quickstart always starts afresh
        (out / stale).unlink(missing_ok=True)
    settings = MDSettings(
        steps=steps,
        timestep_fs=TIMESTEP * 1000.0,
        temperature_k=TEMPERATURE,
        friction_per_ps=FRICTION,
        seed=seed,
        report_interval=report_every(steps),
        trajectory_interval=report_every(steps),
        checkpoint_interval=steps,
    )
    box = positions_nm(reference.getDefaultPeriodicBoxVectors())
    setup_wall = time.perf_counter() - start
    outcome = run_md(
        qmmm,
        positions_nm(positions),
        settings,
        out,
        box=box,
        threads=threads,
        identity=f"quickstart {level} {box_size}",
        progress=progress,
    )
    files = {**outcome.files, "plot": out / "energies.png"}
    rows = read_rows(files["energies"])
    plot_md(rows, files["plot"], f"{level} QM/MM MD of solvated alanine dipeptide")
    cycles = np.array([row["scf_cycles"] for row in rows])
    temperature = np.array([row["temperature_k"] for row in rows])
    last = rows[-1]
    return {
        "steps": steps,
        "n_atoms": topology.getNumAtoms(),
        "n_qm_atoms": len(qmmm.qm_atoms),
        "method": method,
        "basis": basis,
        "level": level,
        "mean_temperature_k": float(temperature.mean()),
        "md_wall_per_step_s": outcome.wall_s / max(steps, 1),
        "box_size_nm": float(box_size),
        "mean_scf_cycles": float(cycles.mean()),
        "max_scf_cycles": int(cycles.max()),
        "mean_qm_wall_s": float(np.mean([row["qm_wall_s"] for row in rows])),
        "setup_wall_s": setup_wall,
        "md_wall_s": outcome.wall_s,
        "total_wall_s": time.perf_counter() - start,
        "final_qm_energy_kjmol": last["qm_kjmol"],
        "final_mm_energy_kjmol": last["mm_kjmol"],
        "final_total_energy_kjmol": last["potential_kjmol"],
        "outdir": out,
        "files": files,
    }


def report_every(steps: int) -> int:
    """Steps between rows of energies.csv and trajectory frames: at most :data:`REPORTS` of each."""
    return max(1, math.ceil(steps / REPORTS))


def _engine(method: str, basis: str, threads: int | None):
    """The quickstart's engine through the engine factory: xtb for the GFN methods, else PySCF."""
    if method.lower() in XTB_METHODS:
        return create_engine(Level(XTB_METHODS[method.lower()], engine="xtb"), threads)
    return create_engine(Level(method, basis, options={"conv_tol": 1e-8}), threads)


def format_summary(summary: dict[str, Any]) -> str:
    """A short plain-text table of a :func:`run_quickstart` summary (energies kJ/mol, times s)."""
    rows = [
        ("system", f"{summary['n_atoms']} atoms, {summary['n_qm_atoms']} QM atoms, "
                   f"{summary['box_size_nm']:g} nm box"),
        ("QM level", summary["level"]),
        ("MD steps", f"{summary['steps']} x {TIMESTEP * 1000:g} fs, Langevin at {TEMPERATURE:g} K"),
        ("mean temperature", f"{summary['mean_temperature_k']:.0f} K"),
        *([("SCF cycles/step", f"{summary['mean_scf_cycles']:.1f} mean, {summary['max_scf_cycles']} max")]
          if summary["max_scf_cycles"] else []),  # xtb reports none
        ("time/step", f"{summary['md_wall_per_step_s']:.3f} s (QM {summary['mean_qm_wall_s']:.3f} s)"),
        ("final E_QM", f"{summary['final_qm_energy_kjmol']:.3f} kJ/mol"),
        ("final E_MM", f"{summary['final_mm_energy_kjmol']:.3f} kJ/mol"),
        ("wall time", f"{summary['total_wall_s']:.1f} s (setup {summary['setup_wall_s']:.1f} s, "
                      f"MD {summary['md_wall_s']:.1f} s)"),
        ("output", str(summary["outdir"])),
    ]
    rows += [(f"  {name}", path.name) for name, path in summary["files"].items()]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


#: Printed after the summary by ``bioqmmm quickstart``.
NEXT_STEPS = """Next:
  bioqmmm quickstart --method b3lyp --basis 6-31g* --steps 20   # the same box at DFT/MM (PySCF)
  bioqmmm run protocols/md.yaml          # a protocol file: QM/MM MD with checkpoints (rerun resumes)
  bioqmmm run protocols/pmf.yaml         # a free-energy profile reweighted to QM/MM
  bioqmmm prepare 1AKI -o lysozyme/      # your own protein: fix, protonate, solvate a PDB entry
  bioqmmm protocols                      # every protocol and engine; README.md and docs/ for the rest"""


# --------------------------------------------------------------------------- helpers
def _check_options(steps: int, box_size: float, threads: int | None) -> int:
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    if not math.isfinite(box_size) or box_size <= 2 * NONBONDED_CUTOFF:
        raise InputError(f"box size must exceed twice the {NONBONDED_CUTOFF} nm nonbonded cutoff, got {box_size} nm")
    if threads is not None and (isinstance(threads, bool) or int(threads) != threads or threads < 1):
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    return int(steps)


def _make_outdir(outdir: str | Path) -> Path:
    out = Path(outdir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output directory {str(out)!r}: {exc.strerror or exc}") from exc
    return out
