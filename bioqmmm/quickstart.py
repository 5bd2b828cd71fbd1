"""``bioqmmm quickstart``: a short QM/MM MD of solvated alanine dipeptide, end to end.

Builds ACE-ALA-NME in a cubic TIP3P box (amber14), treats the dipeptide with a cheap QM
level (HF/STO-3G by default) in the field of the water charges, relaxes the solvent with
a short MM minimisation of the reference system, and runs a few steps of Langevin MD with
a stock ``openmm.app.Simulation``. Everything it writes goes into one output directory:

``topology.pdb``
    The MD start structure (step 0), with the periodic box.
``trajectory.dcd``
    One frame per MD step, steps 1..N (``openmm.app.DCDReporter``).
``energies.csv``
    One row per MD step, steps 1..N, the same structures as the DCD frames: step, time
    (ps), QM energy, MM energy and their sum (kJ/mol), SCF cycles and QM wall time (s).
``energies.png``
    Energies relative to step 1 against time, and SCF cycles per step.

Units: nm, ps, kJ/mol, K, s.
"""

from __future__ import annotations

import copy
import csv
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import openmm
from openmm import app, unit

from bioqmmm.errors import CalculationError, InputError
from bioqmmm.examples import alanine_dipeptide
from bioqmmm.qm import PySCFEngine
from bioqmmm.run.reporters import close_reporter
from bioqmmm.system import QMMMSystem

#: The QM region: the whole dipeptide (residues ACE, ALA, NME).
QM_SELECTION = "not water"
#: Nonbonded cutoff of the MM force field (nm); the box edge must exceed twice this.
NONBONDED_CUTOFF = 0.9
DEFAULT_STEPS = 5  # ~6 QM evaluations of ~5-11 s each: well under 2 minutes on 2 cores
TEMPERATURE = 300.0  # K
FRICTION = 1.0  # 1/ps
TIMESTEP = 0.0005  # ps (0.5 fs: X-H bonds inside the QM region are not constrained)
#: MM minimisation of the reference system before QM/MM MD: force tolerance (kJ/mol/nm) and iteration cap.
MINIMIZE_TOLERANCE = 10.0
MINIMIZE_MAX_ITERATIONS = 100

CSV_COLUMNS = (
    "step",
    "time_ps",
    "qm_energy_kjmol",
    "mm_energy_kjmol",
    "total_energy_kjmol",
    "scf_cycles",
    "qm_wall_s",
)


def run_quickstart(
    outdir: str | Path = "quickstart_out",
    steps: int = DEFAULT_STEPS,
    method: str = "hf",
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
        QM level for :class:`bioqmmm.qm.PySCFEngine` (HF or any functional PySCF knows).
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
        A QM evaluation failed during the MD (e.g. SCF did not converge); the rows written
        so far stay in ``energies.csv``.
    """
    start = time.perf_counter()
    steps = _check_options(steps, box_size, threads)
    engine_options: dict[str, Any] = {"conv_tol": 1e-8}
    if threads is not None:
        engine_options["threads"] = threads
    engine = PySCFEngine(method, basis, **engine_options)  # raises InputError for an unknown method
    topology, reference, positions = alanine_dipeptide(box_size=box_size, nonbonded_cutoff=NONBONDED_CUTOFF)
    # validates charge, multiplicity and basis before anything is written or minimised
    qmmm = QMMMSystem(topology, reference, QM_SELECTION, charge=0, multiplicity=1, engine=engine, platform="CPU")
    out = _make_outdir(outdir)
    files = {
        "topology": out / "topology.pdb",
        "trajectory": out / "trajectory.dcd",
        "energies": out / "energies.csv",
        "plot": out / "energies.png",
    }

    platform = openmm.Platform.getPlatformByName("CPU")
    properties = {"Threads": str(threads)} if threads is not None else {}
    positions = _minimize_mm(reference, positions, platform, properties)

    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE * unit.kelvin, FRICTION / unit.picosecond,
                                                 TIMESTEP * unit.picosecond)
    rng = np.random.default_rng(seed)
    if seed is not None:
        integrator.setRandomNumberSeed(int(rng.integers(1, 2**31 - 1)))
    simulation = app.Simulation(topology, qmmm.system, integrator, platform, properties)
    simulation.context.setPositions(positions)
    _set_velocities(simulation.context, qmmm.system, TEMPERATURE, rng)
    initial = simulation.context.getState(getPositions=True, enforcePeriodicBox=True)
    with open(files["topology"], "w") as handle:
        app.PDBFile.writeFile(topology, initial.getPositions(), handle)
    simulation.reporters.append(app.DCDReporter(str(files["trajectory"]), 1, enforcePeriodicBox=True))
    setup_wall = time.perf_counter() - start

    md_start = time.perf_counter()
    try:
        rows = _run_md(simulation, qmmm, steps, files["energies"], progress)
    finally:
        _close_reporters(simulation)
    md_wall = time.perf_counter() - md_start

    _plot(rows, files["plot"], f"{method.upper()}/{basis} QM/MM MD of solvated alanine dipeptide")
    cycles = np.array([row["scf_cycles"] for row in rows], dtype=float)
    last = rows[-1]
    return {
        "steps": steps,
        "n_atoms": topology.getNumAtoms(),
        "n_qm_atoms": len(qmmm.qm_atoms),
        "method": method,
        "basis": basis,
        "box_size_nm": float(box_size),
        "mean_scf_cycles": float(cycles.mean()),
        "max_scf_cycles": int(cycles.max()),
        "mean_qm_wall_s": float(np.mean([row["qm_wall_s"] for row in rows])),
        "setup_wall_s": setup_wall,
        "md_wall_s": md_wall,
        "total_wall_s": time.perf_counter() - start,
        "final_qm_energy_kjmol": last["qm_energy_kjmol"],
        "final_mm_energy_kjmol": last["mm_energy_kjmol"],
        "final_total_energy_kjmol": last["total_energy_kjmol"],
        "outdir": out,
        "files": files,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A short plain-text table of a :func:`run_quickstart` summary (energies kJ/mol, times s)."""
    rows = [
        ("system", f"{summary['n_atoms']} atoms, {summary['n_qm_atoms']} QM atoms, "
                   f"{summary['box_size_nm']:g} nm box"),
        ("QM level", f"{summary['method']}/{summary['basis']}"),
        ("MD steps", f"{summary['steps']} x {TIMESTEP * 1000:g} fs"),
        ("SCF cycles/step", f"{summary['mean_scf_cycles']:.1f} mean, {summary['max_scf_cycles']} max"),
        ("QM time/step", f"{summary['mean_qm_wall_s']:.2f} s"),
        ("final E_QM", f"{summary['final_qm_energy_kjmol']:.3f} kJ/mol"),
        ("final E_MM", f"{summary['final_mm_energy_kjmol']:.3f} kJ/mol"),
        ("wall time", f"{summary['total_wall_s']:.1f} s (setup {summary['setup_wall_s']:.1f} s, "
                      f"MD {summary['md_wall_s']:.1f} s)"),
        ("output", str(summary["outdir"])),
    ]
    rows += [(f"  {name}", path.name) for name, path in summary["files"].items()]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


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


def _minimize_mm(reference: openmm.System, positions, platform: openmm.Platform, properties: dict[str, str]):
    """Relax the freshly solvated structure with the reference MM force field (no QM call)."""
    context = openmm.Context(copy.deepcopy(reference), openmm.VerletIntegrator(TIMESTEP), platform, properties)
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, MINIMIZE_TOLERANCE, MINIMIZE_MAX_ITERATIONS)
    return context.getState(getPositions=True).getPositions(asNumpy=True)


def _set_velocities(context: openmm.Context, system: openmm.System, temperature: float,
                    rng: np.random.Generator) -> None:
    """Maxwell-Boltzmann velocities (nm/ps) at ``temperature`` K without the centre-of-mass drift.

    ``Context.setVelocitiesToTemperature`` evaluates every force once, which here would be a
    whole extra QM calculation; this draws the velocities in numpy instead.
    """
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])
    kt = (unit.MOLAR_GAS_CONSTANT_R * temperature * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)
    moving = masses > 0
    velocities = np.zeros((len(masses), 3))
    velocities[moving] = rng.standard_normal((int(moving.sum()), 3)) * np.sqrt(kt / masses[moving])[:, None]
    drift = (masses[:, None] * velocities).sum(axis=0) / masses.sum()
    velocities[moving] -= drift
    context.setVelocities(velocities)
    context.applyVelocityConstraints(1e-6)


def _run_md(simulation: app.Simulation, qmmm: QMMMSystem, steps: int, csv_path: Path, progress: bool) -> list[dict]:
    """Step one at a time; write one CSV row per step as soon as its QM energy is known.

    The integrator evaluates the forces, and so the QM energy, of the structure at step k
    at the start of step k + 1; the QM energy of the last structure takes one extra
    evaluation. The MM energy excludes the QM force group, so it costs no QM call.
    """
    from tqdm import tqdm

    context = simulation.context
    mm_groups = sum(1 << g for g in range(32) if g != qmmm.qm_force_group)
    rows: list[dict] = []
    pending: tuple[int, float, float] | None = None  # (step, time ps, MM energy) awaiting its QM energy
    with open(csv_path, "w", newline="") as handle, tqdm(total=steps, unit="step", disable=not progress,
                                                         desc="QM/MM MD") as bar:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        handle.flush()

        def record() -> None:
            step, time_ps, mm_energy = pending
            rows.append(_row(qmmm, step, time_ps, mm_energy))
            writer.writerow(rows[-1])
            handle.flush()
            bar.set_postfix(E_QM=f"{rows[-1]['qm_energy_kjmol']:.1f}", scf=rows[-1]["scf_cycles"])
            bar.update(1)

        for _ in range(steps):
            with qmmm.typed_errors():
                simulation.step(1)
            if pending is not None:
                record()
            state = context.getState(getEnergy=True, groups=mm_groups)
            pending = (simulation.currentStep, state.getTime().value_in_unit(unit.picosecond),
                       state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        with qmmm.typed_errors():
            context.getState(getEnergy=True, groups={qmmm.qm_force_group})
        record()
    return rows


def _row(qmmm: QMMMSystem, step: int, time_ps: float, mm_energy: float) -> dict:
    result = qmmm.last_qm
    if result is None or qmmm.last_qm_step != step:
        raise CalculationError(
            f"internal error: expected the QM energy of step {step}, but the last QM evaluation was of step "
            f"{qmmm.last_qm_step}"
        )
    return {
        "step": step,
        "time_ps": time_ps,
        "qm_energy_kjmol": result.energy,
        "mm_energy_kjmol": mm_energy,
        "total_energy_kjmol": result.energy + mm_energy,
        "scf_cycles": result.qm.info.scf_cycles,
        "qm_wall_s": result.qm.info.wall_time,
    }


def _close_reporters(simulation: app.Simulation) -> None:
    for reporter in simulation.reporters:
        close_reporter(reporter)
    simulation.reporters.clear()


def _plot(rows: list[dict], path: Path, title: str) -> None:
    """Energies relative to the first row (kJ/mol) and SCF cycles against time (ps), as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = np.array([row["time_ps"] for row in rows])
    fig = Figure(figsize=(7.0, 6.0), layout="constrained")
    FigureCanvasAgg(fig)  # Agg, whatever pyplot's backend is
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    for key, label in (("qm_energy_kjmol", "QM"), ("mm_energy_kjmol", "MM"), ("total_energy_kjmol", "total")):
        values = np.array([row[key] for row in rows])
        top.plot(t, values - values[0], marker="o", markersize=3, label=f"{label} ({values[0]:.1f} at start)")
    top.set_ylabel("E - E(first step) / kJ mol$^{-1}$")
    top.legend(fontsize="small")
    top.set_title(title, fontsize="medium")
    bottom.bar(t, [row["scf_cycles"] for row in rows], width=0.8 * TIMESTEP)
    bottom.set_ylabel("SCF cycles")
    bottom.set_xlabel("time / ps")
    fig.savefig(path, dpi=120)
