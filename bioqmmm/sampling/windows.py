"""Sampling in resumable chunks: Langevin dynamics of a System (:func:`sample`), and one biased window
under an umbrella (:func:`sample_window`).

    samples = sample_window(system, coordinate, bias, positions, settings, folder)

The System (MM, or a QM/MM ``qmmm.system``) gains the bias force in a force group of its own;
every ``sample_interval`` steps the sampler records the reaction coordinate s (nm or rad), the
System's energy without the bias (kJ/mol) and the positions (nm, float32, with the box).
Samples are written in chunks of ``checkpoint_interval`` (``samples_NNNN.npz``), each followed
by a checkpoint (:mod:`bioqmmm.simulation.checkpoint`); a rerun into the same folder resumes from the
last checkpoint bit for bit (CPU platform with deterministic forces, or Reference).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm
from openmm import unit

from bioqmmm.errors import BioQMMMError, CalculationError, InputError, ReplicaAbortedError
from bioqmmm.qmmm.surgery import free_force_group
from bioqmmm.sampling.coordinates import Bias, ReactionCoordinate, Umbrella
from bioqmmm.sampling.reweighting import Window, decorrelate
from bioqmmm.simulation.checkpoint import read_checkpoint, read_meta, save_arrays, write_checkpoint
from bioqmmm.simulation.environment import mm_context, reproducible_properties
from bioqmmm.simulation.identity import require_same_run

#: MM minimisation that pulls a start structure into a window: RMS force tolerance (kJ/mol/nm), iterations.
PULL_TOLERANCE = 10.0
PULL_MAX_ITERATIONS = 2000
#: How much stiffer than the window's umbrella the pulling restraint is.
PULL_STIFFENING = 100.0
#: Frames between saves of the evaluated energies (``retained_window(cache=...)``).
ENERGY_CACHE_EVERY = 10


@dataclass(frozen=True)
class SamplingSettings:
    """Langevin (LangevinMiddle) sampling of one window: ``equilibration_steps`` unrecorded, then
    ``samples`` recorded every ``sample_interval`` steps, ``checkpoint_interval`` samples per chunk."""

    samples: int
    sample_interval: int = 10
    equilibration_steps: int = 0
    timestep_fs: float = 2.0
    temperature_k: float = 300.0
    friction_per_ps: float = 1.0
    seed: int = 1
    checkpoint_interval: int = 100


class ChunkedFrames:
    """The recorded positions (nm, float32) of a sampling folder, read from its chunk files on demand: one
    chunk is held at a time, so the memory of evaluating every frame does not grow with the number of
    samples. ``frames[i]`` is one (N, 3) frame; ``np.asarray(frames)`` loads them all."""

    def __init__(self, folder: Path, sizes: list[int], count: int) -> None:
        self.folder = Path(folder)
        self._starts = np.cumsum([0, *sizes])
        self._count = min(count, int(self._starts[-1]))
        self._held: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> np.ndarray:
        index = int(index)
        if not -self._count <= index < self._count:
            raise IndexError(f"frame {index} of {self._count}")
        index %= self._count
        k = int(np.searchsorted(self._starts, index, side="right")) - 1
        if self._held is None or self._held[0] != k:
            self._held = (k, _load_chunk(self.folder, k, keys=("positions",))["positions"])
        return self._held[1][index - self._starts[k]]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        frames = np.concatenate([_load_chunk(self.folder, k, keys=("positions",))["positions"]
                                 for k in range(len(self._starts) - 1)])[: self._count]
        return frames if dtype is None else frames.astype(dtype)


@dataclass
class WindowSamples:
    """What a window recorded: s, the unbiased energy (kJ/mol), positions (nm; :class:`ChunkedFrames`, read
    on demand) and boxes (nm, or None)."""

    s: np.ndarray
    energy: np.ndarray
    positions: ChunkedFrames
    boxes: np.ndarray | None


def sample_window(
    system: openmm.System,
    coordinate: ReactionCoordinate,
    bias: Bias,
    positions: np.ndarray,
    settings: SamplingSettings,
    folder: str | Path,
    *,
    box: np.ndarray | None = None,
    qmmm=None,
    platform: str = "CPU",
    threads: int | None = None,
    identity: str = "",
    poll: Callable[[], None] | None = None,
) -> WindowSamples:
    """Sample (or resume sampling) one window into ``folder``; return all its samples.

    ``system`` gains the bias force (build a fresh one per window). ``qmmm`` is the QMMMSystem whose
    ``system`` this is, if any: its SCF guess and cached QM result go into the checkpoints.
    Start from ``positions`` near the window (:func:`pulled_start`). ``poll`` is called after every
    sample and may raise to stop.
    A checkpoint from other settings (``identity``) is refused.
    """
    bias_force, unbiased_energy = add_bias(system, coordinate, bias)

    def measure(context: openmm.Context, state: openmm.State) -> dict[str, float]:
        return {"s": coordinate.value(bias_force.getCollectiveVariableValues(context)),
                "energy": unbiased_energy(context)}

    joined = sample(system, positions, settings, folder, measure, box=box, qmmm=qmmm, platform=platform,
                    threads=threads, identity=identity, poll=poll, what=f"window at {bias.describe()}",
                    holds="window's samples")
    return WindowSamples(joined["s"], joined["energy"], joined["positions"], joined.get("boxes"))


Measure = Callable[[openmm.Context, openmm.State], dict[str, float]]


def add_bias(system: openmm.System, coordinate: ReactionCoordinate,
             bias: Bias) -> tuple[openmm.CustomCVForce, Callable[[openmm.Context], float]]:
    """Add ``bias`` on ``coordinate`` to ``system`` in a force group of its own; return the force (whose
    collective variables give s) and a function of a Context giving the energy without it (kJ/mol)."""
    bias_force = coordinate.bias_force(bias, system.usesPeriodicBoundaryConditions())
    group = free_force_group(system, "the umbrella bias")
    bias_force.setForceGroup(group)
    system.addForce(bias_force)
    unbiased = sum(1 << g for g in range(32) if g != group)

    def unbiased_energy(context: openmm.Context) -> float:
        energy = context.getState(getEnergy=True, groups=unbiased).getPotentialEnergy()
        return energy.value_in_unit(unit.kilojoule_per_mole)

    return bias_force, unbiased_energy


def sample(
    system: openmm.System,
    positions: np.ndarray,
    settings: SamplingSettings,
    folder: str | Path,
    measure: Measure,
    *,
    box: np.ndarray | None = None,
    qmmm=None,
    platform: str = "CPU",
    threads: int | None = None,
    identity: str = "",
    poll: Callable[[], None] | None = None,
    what: str = "sampling",
    holds: str = "run's samples",
) -> dict[str, np.ndarray]:
    """Langevin sampling of ``system`` into ``folder`` with checkpoints (or its resumption): every
    ``sample_interval`` steps the positions (nm, float32), the box (nm, periodic systems) and the values
    ``measure(context, state)`` returns (``state`` holds the positions) are recorded.

    ``qmmm``: whatever holds the Python-side state of ``system``'s forces (a QMMMSystem, or an object with
    its ``engine``/``kernel`` state interface); ``what`` names the run in errors, ``holds`` what its folder
    holds. Returns every recorded array, one row per sample, the first ``settings.samples`` when more are
    stored; the positions as :class:`ChunkedFrames`, left on disk (the memory of a long window stays flat).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "checkpoint.npz"
    periodic = system.usesPeriodicBoundaryConditions()
    integrator = openmm.LangevinMiddleIntegrator(
        settings.temperature_k * unit.kelvin, settings.friction_per_ps / unit.picosecond,
        settings.timestep_fs * 1e-3 * unit.picosecond,
    )
    integrator.setRandomNumberSeed(settings.seed)
    properties = reproducible_properties(platform, threads or 1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform), properties)

    def typed():
        return qmmm.typed_errors() if qmmm is not None else contextlib.nullcontext()

    meta = {"identity": identity, "samples": 0, "chunks": 0, "equilibrated": False}
    if checkpoint.exists():
        require_same_run(read_meta(checkpoint).get("identity"), identity, folder, holds)
        meta = read_checkpoint(checkpoint, context, qmmm)
    else:
        if box is not None:
            context.setPeriodicBoxVectors(*box)
        context.setPositions(positions)
        with typed():
            context.setVelocitiesToTemperature(settings.temperature_k * unit.kelvin, settings.seed)
    chunks = [_load_chunk(folder, k, skip=("positions",)) for k in range(meta["chunks"])]
    sizes = [len(next(iter(c.values()))) for c in chunks]  # samples per chunk, from any recorded value
    try:
        if not meta["equilibrated"]:
            with typed():
                integrator.step(settings.equilibration_steps)
            meta["equilibrated"] = True
            write_checkpoint(checkpoint, context, qmmm, meta)
        while meta["samples"] < settings.samples:
            count = min(settings.checkpoint_interval, settings.samples - meta["samples"])
            chunk = _record(context, integrator, measure, count, settings.sample_interval, periodic, typed, poll)
            save_arrays(folder / f"samples_{len(chunks):04d}.npz", chunk)
            sizes.append(len(chunk.pop("positions")))
            chunks.append(chunk)
            meta["samples"] += count
            meta["chunks"] = len(chunks)
            write_checkpoint(checkpoint, context, qmmm, meta)
    except (ReplicaAbortedError, InputError):
        raise
    except BioQMMMError as exc:
        raise CalculationError(f"{what} stopped after {meta['samples']} samples: {exc}; "
                               f"rerun to resume from {checkpoint}") from exc
    # a rerun asking for fewer samples than are stored gets the first ones
    recorded = {key: np.concatenate([c[key] for c in chunks])[:settings.samples] for key in chunks[0]}
    recorded["positions"] = ChunkedFrames(folder, sizes, settings.samples)
    return recorded


def pulled_start(mm_system: openmm.System, coordinate: ReactionCoordinate, bias: Umbrella, positions: np.ndarray,
                 box: np.ndarray | None = None) -> np.ndarray:
    """``positions`` (nm) minimised on the MM energy plus the window's bias made :data:`PULL_STIFFENING` times
    stiffer: s pulled close to the centre (across barriers a weak umbrella would not cross) at MM cost, a
    start for sampling at any level. ``mm_system`` is copied, not modified."""
    system = openmm.XmlSerializer.clone(mm_system)
    stiff = dataclasses.replace(bias, force_constant=bias.force_constant * PULL_STIFFENING)
    system.addForce(coordinate.bias_force(stiff, system.usesPeriodicBoundaryConditions()))
    context = mm_context(system)
    if box is not None:
        context.setPeriodicBoxVectors(*box)
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, PULL_TOLERANCE, PULL_MAX_ITERATIONS)
    return np.asarray(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))


def _record(context, integrator, measure: Measure, count: int, interval: int, periodic: bool, typed,
            poll) -> dict[str, np.ndarray]:
    rows: list[dict[str, float]] = []
    positions, boxes = [], []
    for _ in range(count):
        with typed():
            integrator.step(interval)
            state = context.getState(getPositions=True)
            rows.append(measure(context, state))
        positions.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer).astype(np.float32))
        if periodic:
            boxes.append(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
        if poll is not None:
            poll()
    chunk = {key: np.array([row[key] for row in rows]) for key in rows[0]}
    chunk["positions"] = np.array(positions)
    if periodic:
        chunk["boxes"] = np.array(boxes)
    return chunk


def _load_chunk(folder: Path, k: int, keys: tuple[str, ...] | None = None,
                skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays of chunk ``k`` (only ``keys``, if given; none of ``skip``)."""
    path = folder / f"samples_{k:04d}.npz"
    try:
        with np.load(path) as data:
            return {key: data[key] for key in data.files if (keys is None or key in keys) and key not in skip}
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot read {path} to resume: {exc}; remove {folder} to sample the window afresh") from exc


EnergyFunction = Callable[[np.ndarray, "np.ndarray | None"], float]


def system_energy(system: openmm.System, platform: str = "CPU") -> EnergyFunction:
    """U(positions nm, box nm or None) in kJ/mol of an OpenMM System (MM, or QM/MM with its QM force)."""
    context = mm_context(system, platform)

    def energy(positions: np.ndarray, box: np.ndarray | None = None) -> float:
        if box is not None:
            context.setPeriodicBoxVectors(*box)
        context.setPositions(np.asarray(positions, dtype=float))
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    return energy


def retained_window(name: str, level: str, bias: Bias, samples: WindowSamples,
                    energies: dict[str, EnergyFunction], temperature: float,
                    poll: Callable[[], None] | None = None, cache: Path | None = None,
                    cache_identity: str = "") -> Window:
    """The window's decorrelated samples (:func:`~bioqmmm.sampling.reweighting.decorrelate`) with the energy
    (kJ/mol) of every named level in ``energies`` evaluated on their frames, ready for
    :func:`~bioqmmm.sampling.reweighting.reweight`; ``level`` names the one the window sampled.

    With ``cache`` (an .npz path), the energies of every evaluated frame are saved every
    :data:`ENERGY_CACHE_EVERY` frames; a rerun with the same ``cache_identity`` (what the frames and the
    energy models are) reuses them for every frame it retains again, and evaluates only new ones.
    """
    levels = sorted(energies)
    indices, g = decorrelate(samples.s, samples.energy, bias, temperature)
    known = _cached_energies(cache, cache_identity, levels)
    fresh = 0
    for i in indices:
        if int(i) in known:
            continue
        box = None if samples.boxes is None else samples.boxes[i]
        x = samples.positions[i].astype(float)
        known[int(i)] = tuple(energies[level](x, box) for level in levels)
        fresh += 1
        if poll is not None:
            poll()
        if cache is not None and fresh % ENERGY_CACHE_EVERY == 0:
            _save_energies(cache, cache_identity, known, levels)
    if cache is not None and fresh:
        _save_energies(cache, cache_identity, known, levels)
    table = np.array([known[int(i)] for i in indices], dtype=float).reshape(-1, len(levels))
    return Window(name, level, bias, samples.s[indices], dict(zip(levels, table.T, strict=True)),
                  frames=len(samples.s), statistical_inefficiency=g, retained=indices)


def _cached_energies(cache: Path | None, identity: str, levels: list[str]) -> dict[int, tuple[float, ...]]:
    """{frame: energies of ``levels``} saved for ``identity`` (empty when there is none)."""
    try:
        with np.load(cache, allow_pickle=False) as data:
            if str(data["identity"]) == identity:
                columns = np.array([data[level] for level in levels], dtype=float).T
                return {int(f): tuple(map(float, row)) for f, row in zip(data["frames"], columns, strict=True)}
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable: evaluate afresh
        pass
    return {}


def _save_energies(cache: Path, identity: str, known: dict[int, tuple[float, ...]], levels: list[str]) -> None:
    frames = np.array(sorted(known), dtype=int)
    values = np.array([known[f] for f in frames], dtype=float).reshape(-1, len(levels))
    save_arrays(cache, {"identity": np.array(identity), "frames": frames,
                        **{level: values[:, k] for k, level in enumerate(levels)}})
