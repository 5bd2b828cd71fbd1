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

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

from bioqmmm.errors import BioQMMMError, CalculationError, InputError, ReplicaAbortedError
from bioqmmm.run.protocol import MDProtocol
from bioqmmm.simulation.checkpoint import read_checkpoint, read_meta, read_section, write_checkpoint
from bioqmmm.simulation.environment import relax_environment, reproducible_properties
from bioqmmm.simulation.mts import mts_integrator
from bioqmmm.simulation.reporters import QMMMReporter, close_reporter

#: MM relaxation of a fresh start structure (QM atoms fixed): RMS force tolerance (kJ/mol/nm) and
#: iteration cap (removes solvation clashes; a full minimisation is the optimize protocol's job).
START_RELAX_TOLERANCE = 10.0
START_RELAX_MAX_ITERATIONS = 500


@dataclass
class MDOutcome:
    """What :func:`run_md` did: final step, positions (nm), wall time (s), QM evaluation counts."""

    steps: int
    resumed_from: int
    positions: np.ndarray
    wall_s: float
    qm_evaluations: int
    files: dict[str, Path]


def _integrator(settings: MDProtocol, qmmm, positions: np.ndarray, box: np.ndarray | None,
                springs: np.ndarray | None) -> openmm.Integrator:
    """The protocol's integrator; multiple time steps reuse stored reference ``springs`` or fit them
    at ``positions``."""
    dt = settings.timestep_fs * 1e-3  # ps
    langevin = settings.integrator == "langevin"
    if settings.qm_every > 1:
        integrator = mts_integrator(qmmm, settings.qm_every * dt, settings.qm_every,
                                    temperature=settings.temperature_k if langevin else None,
                                    friction=settings.friction_per_ps, fit_positions=positions, box_vectors=box,
                                    springs=springs)
    elif langevin:
        integrator = openmm.LangevinMiddleIntegrator(
            settings.temperature_k * unit.kelvin, settings.friction_per_ps / unit.picosecond, dt * unit.picosecond
        )
    else:
        integrator = openmm.VerletIntegrator(dt * unit.picosecond)
    if langevin and settings.seed is not None:
        integrator.setRandomNumberSeed(settings.seed)
    return integrator


def array_digest(array: np.ndarray, decimals: int = 6) -> str:
    """sha256 of an array rounded to ``decimals`` (coordinates in nm: 1e-6 nm)."""
    return hashlib.sha256(np.ascontiguousarray(np.round(array, decimals)).tobytes()).hexdigest()


def fingerprint(*parts) -> str:
    """A short hash of the settings a checkpoint belongs to (steps excluded by the caller)."""
    text = json.dumps([asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_md(
    qmmm,
    positions: np.ndarray,
    settings: MDProtocol,
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
    from tqdm import tqdm

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "topology": out / "topology.pdb",
        "trajectory": out / f"trajectory.{settings.trajectory_format}",
        "energies": out / "energies.csv",
        "checkpoint": out / "checkpoint.npz",
    }
    identity = identity or fingerprint(settings.__class__.__name__, settings.timestep_fs, settings.integrator,
                                       *([settings.qm_every] if settings.qm_every > 1 else []))
    resume = files["checkpoint"].exists()
    if resume:
        meta = read_meta(files["checkpoint"])
        if meta.get("identity") != identity:
            raise InputError(
                f"{out} holds a checkpoint of a different run (other system or settings): "
                "use another output folder or remove the old one"
            )
    if settings.pressure_bar is not None and not any(
        isinstance(f, openmm.MonteCarloBarostat) for f in qmmm.system.getForces()
    ):
        barostat = openmm.MonteCarloBarostat(settings.pressure_bar * unit.bar, settings.temperature_k)
        if settings.seed is not None:
            barostat.setRandomNumberSeed(settings.seed)
        qmmm.system.addForce(barostat)
    if not resume and settings.minimize_mm_first:
        positions, _ = relax_environment(
            qmmm, positions, tolerance=START_RELAX_TOLERANCE, max_iterations=START_RELAX_MAX_ITERATIONS,
            box=box, platform="CPU" if platform == "Reference" else platform,
        )
    springs = read_section(files["checkpoint"], "mts.").get("springs") if resume else None
    integrator = _integrator(settings, qmmm, positions, box, springs)  # before the Context: MTS adds forces
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
        state = context.getState(getPositions=True, enforcePeriodicBox=True)
        with open(files["topology"], "w") as handle:
            app.PDBFile.writeFile(qmmm.topology, state.getPositions(), handle)
        write_checkpoint(files["checkpoint"], context, qmmm, {"identity": identity, "step": 0})

    trajectory = _trajectory_reporter(files["trajectory"], settings, resume, start_step, qmmm.topology)
    energies = QMMMReporter(files["energies"], settings.report_interval, qmmm, append=resume, resume_step=start_step)
    simulation.reporters += [trajectory, energies] + ([PollReporter(poll)] if poll is not None else [])
    evaluations = qmmm.kernel.evaluations
    wall = time.perf_counter()
    step = start_step
    try:
        with tqdm(total=settings.steps, initial=min(step, settings.steps), unit="step", disable=not progress,
                  desc="QM/MM MD") as bar:
            while step < settings.steps:
                chunk = min(settings.checkpoint_interval - step % settings.checkpoint_interval, settings.steps - step)
                try:
                    with qmmm.typed_errors():
                        simulation.step(chunk)
                except ReplicaAbortedError:
                    raise
                except BioQMMMError as exc:
                    raise CalculationError(
                        f"MD stopped near step {simulation.currentStep}: {exc}; the last good state is "
                        f"{files['checkpoint']} (step {step}); rerun to resume from it"
                    ) from exc
                step = simulation.currentStep
                write_checkpoint(files["checkpoint"], context, qmmm, {"identity": identity, "step": step})
                bar.update(chunk)
    finally:
        for reporter in simulation.reporters:
            close_reporter(reporter)
        simulation.reporters.clear()
    final = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return MDOutcome(
        steps=step,
        resumed_from=start_step,
        positions=np.asarray(final),
        wall_s=time.perf_counter() - wall,
        qm_evaluations=qmmm.kernel.evaluations - evaluations,
        files=files,
    )


class PollReporter:
    """Calls ``poll`` after every step (an OpenMM reporter that reports nothing)."""

    def __init__(self, poll: Callable[[], None]) -> None:
        self._poll = poll

    def describeNextReport(self, simulation):  # noqa: N802 (OpenMM's reporter interface)
        return {"steps": 1, "periodic": None, "include": []}

    def report(self, simulation, state) -> None:
        self._poll()


def _trajectory_reporter(path: Path, settings: MDProtocol, resume: bool, start_step: int, topology):
    """DCD/XTC reporter; on resume, frames written after the checkpoint are dropped first."""
    interval = settings.trajectory_interval
    if resume and path.exists():
        _truncate_trajectory(path, topology, start_step // interval)
    append = resume and path.exists()
    if settings.trajectory_format == "xtc":
        return app.XTCReporter(str(path), interval, append=append, enforcePeriodicBox=True)
    return app.DCDReporter(str(path), interval, append=append, enforcePeriodicBox=True)


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
