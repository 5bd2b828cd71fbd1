"""QM/MM molecular dynamics with checkpoints, reporters and a resumable output folder.

``run_md`` drives a stock ``openmm.app.Simulation`` over ``qmmm.system``: LangevinMiddle (NVT)
or Verlet (NVE) with an optional Monte Carlo barostat. Every ``checkpoint_interval`` steps it
writes ``checkpoint.npz`` atomically (:mod:`bioqmmm.simulation.checkpoint`); a rerun into the same
folder resumes from it, bit-for-bit on the Reference and CPU platforms (the SCF guess and the
QM force's cached result are part of the checkpoint; the CPU platform runs with deterministic
force sums). A failed SCF or a non-finite energy stops
the run with the step named; the last checkpoint is the last good state.

Files: ``topology.pdb`` (start structure), ``trajectory.dcd``/``.xtc``, ``energies.csv``
(:class:`~bioqmmm.simulation.reporters.QMMMReporter`), ``checkpoint.npz``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import openmm
from openmm import app, unit

from bioqmmm.errors import InputError
from bioqmmm.protocols.context import RunContext
from bioqmmm.protocols.pmf_settings import LevelSection
from bioqmmm.protocols.registry import Protocol
from bioqmmm.protocols.settings import Declared, FieldError, setting, settings_record
from bioqmmm.qm.factory import create_engine
from bioqmmm.results import plot_md, quantity, write_pdb_models, write_results
from bioqmmm.simulation.checkpoint import read_checkpoint, read_meta, read_section, write_checkpoint
from bioqmmm.simulation.environment import fixed_atoms, reproducible_properties, settled_environment
from bioqmmm.simulation.identity import fingerprint, require_same_run
from bioqmmm.simulation.imaging import ImagedReporter, MoleculeImager
from bioqmmm.simulation.mts import mts_integrator
from bioqmmm.simulation.reporters import QMMMReporter, read_rows
from bioqmmm.simulation.stepping import closing_reporters, progress_bar, step_with_checkpoints


@dataclass(frozen=True)
class MDSettings(Declared):
    """QM/MM molecular dynamics: Langevin (NVT, LangevinMiddle) or Verlet (NVE), optional barostat.

    ``qm_every`` > 1: multiple time steps (:mod:`bioqmmm.simulation.mts`): MM forces every ``timestep_fs``,
    the QM force once per step, so each of ``steps`` is ``qm_every * timestep_fs`` long. ``mts_reference``
    is the fast reference potential: ``mm`` (the force field's terms of the QM region, X-H springs fitted
    to the QM forces) or a cheaper QM level of the region (e.g. GFN2-xTB: two-level time stepping, the
    cheap level every MM step).
    """

    steps: int = setting(doc="MD steps (a rerun with more steps continues the run)", check="positive_int")
    timestep_fs: float = setting(0.5, doc="time step (the MM step under multiple time steps)", check="positive")
    integrator: Literal["langevin", "verlet"] = setting("langevin", doc="LangevinMiddle (NVT) or Verlet (NVE)")
    qm_every: int = setting(1, doc="n > 1: multiple time steps, the QM force once per n MM steps",
                            check="positive_int")
    mts_reference: Literal["mm"] | LevelSection = setting(
        "mm", doc="reference potential of multiple time steps: mm, or a cheaper QM level of the region")
    temperature_k: float = setting(300.0, doc="thermostat and initial velocities", check="positive")
    friction_per_ps: float = setting(1.0, doc="Langevin friction", check="non_negative")
    pressure_bar: float | None = setting(None, doc="Monte Carlo barostat (one QM evaluation per trial move)",
                                         check="positive")
    seed: int | None = setting(None, doc="velocities and Langevin noise (none: random)")
    minimize_mm_first: bool = setting(True, doc="relax the environment (QM atoms fixed) before MD")
    warmup_ps: float = setting(0.5, doc="Langevin MD of the environment at temperature_k (QM atoms fixed, their "
                               "charges from one QM/MM evaluation; 1 fs steps, friction 10/ps) before the QM/MM "
                               "run, so that it starts thermalised; 0: none", check="non_negative")
    report_interval: int = setting(1, doc="steps between rows of energies.csv", check="positive_int")
    trajectory_interval: int = setting(1, doc="steps between trajectory frames", check="positive_int")
    trajectory_format: Literal["dcd", "xtc"] = setting("dcd", doc="trajectory file format")
    checkpoint_interval: int = setting(10, doc="steps between checkpoints", check="positive_int")
    new_keys = ("qm_every", "warmup_ps", "mts_reference")  # added later: runs at their defaults keep their identities

    def check(self) -> None:
        if self.seed is not None and self.seed < 1:
            raise FieldError("seed", "must be a positive integer (omit it for a random seed)")
        if self.report_interval > self.steps:
            raise FieldError("report_interval", f"must not exceed steps ({self.steps})")
        if self.pressure_bar is not None and self.integrator == "verlet":
            raise FieldError("pressure_bar", "a barostat needs a thermostat: use integrator 'langevin'")
        if self.mts_reference != "mm" and self.qm_every == 1:
            raise FieldError("mts_reference", "a reference level needs multiple time steps: set qm_every > 1")

@dataclass
class MDOutcome:
    """What :func:`run_md` did: final step, positions (nm), wall time (s), QM evaluation counts."""

    steps: int
    resumed_from: int
    positions: np.ndarray
    wall_s: float
    qm_evaluations: int
    files: dict[str, Path]
    warmup_temperature: float | None = None
    reference_evaluations: int | None = None


def _integrator(settings: MDSettings, qmmm, positions: np.ndarray, box: np.ndarray | None,
                springs: np.ndarray | None, threads: int | None) -> openmm.Integrator:
    """The protocol's integrator; multiple time steps with the force field's reference reuse stored
    ``springs`` or fit them at ``positions``."""
    if settings.qm_every == 1:
        return single_step_integrator(settings)
    dt = settings.timestep_fs * 1e-3  # ps
    langevin = settings.integrator == "langevin"
    level = settings.mts_reference
    integrator = mts_integrator(qmmm, settings.qm_every * dt, settings.qm_every,
                                temperature=settings.temperature_k if langevin else None,
                                friction=settings.friction_per_ps, fit_positions=positions, box_vectors=box,
                                springs=springs,
                                reference_engine=None if level == "mm" else create_engine(level.level(), threads))
    if langevin and settings.seed is not None:
        integrator.setRandomNumberSeed(settings.seed)
    return integrator


def single_step_integrator(settings) -> openmm.Integrator:
    """LangevinMiddle (``settings.integrator == "langevin"``, at ``temperature_k`` with ``friction_per_ps`` and
    ``seed``) or Verlet, with time step ``settings.timestep_fs``."""
    dt = settings.timestep_fs * 1e-3 * unit.picosecond
    if settings.integrator != "langevin":
        return openmm.VerletIntegrator(dt)
    integrator = openmm.LangevinMiddleIntegrator(settings.temperature_k * unit.kelvin,
                                                 settings.friction_per_ps / unit.picosecond, dt)
    if settings.seed is not None:
        integrator.setRandomNumberSeed(settings.seed)
    return integrator


def run_md(
    qmmm,
    positions: np.ndarray,
    settings: MDSettings,
    outdir: str | Path,
    *,
    box: np.ndarray | None = None,
    platform: str = "CPU",
    threads: int | None = None,
    identity: str = "",
    progress: bool = True,
    poll: Callable[[], None] | None = None,
) -> MDOutcome:
    """Run (or resume) ``settings.steps`` steps of QM/MM MD into ``outdir``.

    ``identity`` identifies the model and settings (e.g. :func:`fingerprint` of the protocol
    file): a checkpoint in ``outdir`` with another identity is refused rather than resumed.
    ``poll`` is called after every step and may raise to stop the run (the replica runner's abort).
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "topology": out / "topology.pdb",
        "trajectory": out / f"trajectory.{settings.trajectory_format}",
        "energies": out / "energies.csv",
        "checkpoint": out / "checkpoint.npz",
    }
    identity = identity or fingerprint("MDProtocol", settings.timestep_fs, settings.integrator,
                                       *([settings.qm_every] if settings.qm_every > 1 else []),
                                       *([settings_record(settings.mts_reference)]
                                         if settings.mts_reference != "mm" else []))
    resume = files["checkpoint"].exists()
    if resume:
        require_same_run(read_meta(files["checkpoint"]).get("identity"), identity, out)
    if settings.pressure_bar is not None and not any(
        isinstance(f, openmm.MonteCarloBarostat) for f in qmmm.system.getForces()
    ):
        barostat = openmm.MonteCarloBarostat(settings.pressure_bar * unit.bar, settings.temperature_k)
        if settings.seed is not None:
            barostat.setRandomNumberSeed(settings.seed)
        qmmm.system.addForce(barostat)
    mm_platform = "CPU" if platform == "Reference" else platform
    warm_velocities, warmup_temperature = None, None
    if not resume:
        positions, warm_velocities, warmup_temperature = settled_environment(
            qmmm, positions, box=box, relax=settings.minimize_mm_first, warmup_ps=settings.warmup_ps,
            temperature=settings.temperature_k, timestep_fs=settings.timestep_fs, seed=settings.seed,
            platform=mm_platform)
    springs = read_section(files["checkpoint"], "mts.").get("springs") if resume else None
    integrator = _integrator(settings, qmmm, positions, box, springs, threads)  # before the Context: MTS adds forces
    simulation = app.Simulation(qmmm.topology, qmmm.system, integrator,
                                openmm.Platform.getPlatformByName(platform), reproducible_properties(platform, threads))
    context = simulation.context
    start_step = 0
    if resume:
        start_step = int(read_checkpoint(files["checkpoint"], context, qmmm)["step"])
        simulation.currentStep = start_step
    else:
        if box is not None:
            context.setPeriodicBoxVectors(*box)
        context.setPositions(positions)
        with qmmm.typed_errors():
            context.setVelocitiesToTemperature(settings.temperature_k * unit.kelvin, settings.seed or 0)
        if warm_velocities is not None:  # the thermalised environment's, Maxwell–Boltzmann on the fixed atoms
            drawn = context.getState(getVelocities=True).getVelocities(asNumpy=True).value_in_unit(
                unit.nanometer / unit.picosecond)
            fixed = sorted(fixed_atoms(qmmm.system, set(qmmm.qm_atoms)))
            warm_velocities[fixed] = drawn[fixed]
            context.setVelocities(warm_velocities)
            context.applyVelocityConstraints(1e-8)
        start = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        write_pdb_models(files["topology"], qmmm.topology, [start], box, centre_atoms=qmmm.qm_atoms)
        write_checkpoint(files["checkpoint"], context, qmmm, {"identity": identity, "step": 0})

    trajectory = trajectory_reporter(files["trajectory"], settings, resume, start_step, qmmm.topology, qmmm.qm_atoms)
    energies = QMMMReporter(files["energies"], settings.report_interval, qmmm, append=resume, resume_step=start_step)
    simulation.reporters += [trajectory, energies] + ([PollReporter(poll)] if poll is not None else [])
    evaluations = [kernel.evaluations for kernel in qmmm.kernels]
    wall = time.perf_counter()
    with closing_reporters(simulation.reporters), progress_bar(settings.steps, start_step, "QM/MM MD", progress) as bar:
        step = step_with_checkpoints(simulation, qmmm, steps=settings.steps,
                                     checkpoint_interval=settings.checkpoint_interval, checkpoint=files["checkpoint"],
                                     meta={"identity": identity}, bar=bar, label="QM/MM MD")
    final = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return MDOutcome(
        steps=step,
        resumed_from=start_step,
        positions=np.asarray(final),
        wall_s=time.perf_counter() - wall,
        qm_evaluations=qmmm.kernel.evaluations - evaluations[0],
        files=files,
        warmup_temperature=warmup_temperature,
        reference_evaluations=(qmmm.reference_kernel.evaluations - evaluations[1]
                               if qmmm.reference_kernel is not None else None),
    )


class PollReporter:
    """Calls ``poll`` after every step (an OpenMM reporter that reports nothing)."""

    def __init__(self, poll: Callable[[], None]) -> None:
        self._poll = poll

    def describeNextReport(self, simulation):  # noqa: N802 (OpenMM's reporter interface)
        return {"steps": 1, "periodic": None, "include": []}

    def report(self, simulation, state) -> None:
        self._poll()


def trajectory_reporter(path: Path, settings, resume: bool, start_step: int, topology, centre_atoms=()):
    """DCD/XTC reporter every ``settings.trajectory_interval`` steps in ``settings.trajectory_format``, frames
    imaged (molecules whole, ``centre_atoms`` centred: :mod:`bioqmmm.simulation.imaging`); on resume, frames
    written after the checkpoint are dropped first."""
    interval = settings.trajectory_interval
    if resume and path.exists():
        _truncate_trajectory(path, topology, start_step // interval)
    append = resume and path.exists()
    reporter = (app.XTCReporter if settings.trajectory_format == "xtc" else app.DCDReporter)(
        str(path), interval, append=append, enforcePeriodicBox=False)
    return ImagedReporter(reporter, MoleculeImager(topology, centre_atoms))


def _truncate_trajectory(path: Path, topology, n_frames: int) -> None:
    """Keep the first ``n_frames`` frames (written before the checkpoint), replacing the file atomically."""
    import mdtraj

    try:
        traj = mdtraj.load(str(path), top=mdtraj.Topology.from_openmm(topology))
    except Exception as exc:  # a frame cut short by a kill
        raise InputError(f"cannot read {path} to resume: {exc}; remove it to start the trajectory afresh") from exc
    if traj.n_frames > n_frames:
        if n_frames == 0:
            path.unlink()
            return
        tmp = path.with_name(f"rewind.{path.name}")
        traj[:n_frames].save(str(tmp))
        os.replace(tmp, path)


def run(context: RunContext, settings: MDSettings) -> dict:
    """The ``md`` protocol: :func:`run_md` into the output folder, then the energy plot and the record."""
    outcome = run_md(context.qmmm, context.positions, settings, context.output, box=context.box,
                     platform=context.platform, threads=context.threads, identity=context.identity,
                     progress=context.progress, poll=context.poll)
    out = context.output
    rows = read_rows(outcome.files["energies"])
    plot_md(rows, out / "energies.png", f"QM/MM MD, {context.record['qm_level']}")
    scf = np.array([r["scf_cycles"] for r in rows])
    temperature = np.array([r["temperature_k"] for r in rows])
    wall = np.array([r["wall_per_step_s"] for r in rows])
    figures = {
        **context.record,
        "steps": outcome.steps,
        "resumed_from_step": outcome.resumed_from,
        "simulated_time": quantity(outcome.steps * settings.qm_every * settings.timestep_fs * 1e-3, "ps"),
        "final_potential_energy": quantity(rows[-1]["potential_kjmol"], "kJ/mol"),
        "final_qm_energy": quantity(rows[-1]["qm_kjmol"], "kJ/mol"),
        "mean_temperature": quantity(temperature.mean(), "K"),
        **({"warmup": f"{settings.warmup_ps:g} ps of environment MD at {settings.temperature_k:g} K (QM atoms "
                      f"fixed), ending at {outcome.warmup_temperature:.0f} K"}
           if outcome.warmup_temperature is not None else {}),
        "mean_scf_cycles_per_step": quantity(scf.mean(), "cycles"),
        "qm_evaluations_this_run": outcome.qm_evaluations,
        **({"reference_level_evaluations_this_run": outcome.reference_evaluations}
           if outcome.reference_evaluations is not None else {}),
        "wall_time_per_step": quantity(np.nanmean(wall) if np.isfinite(wall).any() else float("nan"), "s"),
        "qm_wall_time_per_step": quantity(float(np.nanmean([r["qm_wall_s"] for r in rows])), "s"),
        "files": sorted([p.name for p in outcome.files.values()] + ["energies.png", "result.json", "summary.txt"]),
    }
    return write_results(out, "md", figures)


PROTOCOL = Protocol("md", "QM/MM molecular dynamics (NVT/NVE, barostat, multiple time steps) with checkpoints",
                    MDSettings, run, length_keys=("steps",))
