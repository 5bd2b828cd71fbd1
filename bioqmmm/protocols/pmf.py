"""``protocol: pmf``: umbrella windows and/or a frozen-bias metadynamics state at a cheap level (and
optionally windows at the target level), MBAR to the target.

Every window (and the metadynamics state) is a replica of the replica runner (over MPI under
mpirun): its start is pulled into the window on the MM surface (or, with ``starts``, is the given
model nearest its centre: :mod:`bioqmmm.sampling.starts`), it samples at its level
(:mod:`bioqmmm.sampling.windows`) into ``OUTPUT/windows/NAME`` with checkpoints, decorrelates
its samples and evaluates both levels on the retained frames (the target's QM/MM energies, the
expensive part, are thus spread over the ranks). Rank 0 then merges all states in one MBAR
(:mod:`bioqmmm.sampling.reweighting`) and writes ``pmf.csv``, ``windows.csv``, ``overlap.csv``,
``pmf.png``, ``overlap.png`` and ``result.json``.

A window sampled at a QM level keeps the MM model's bond constraints (also those inside the QM
region, which the QM/MM System otherwise leaves flexible), so that every state lives on the same
constrained configuration space and MBAR can merge them.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import openmm
from openmm import app

from bioqmmm.errors import CalculationError, InputError
from bioqmmm.parallel.replicas import Replica, replica_seed, run_replicas
from bioqmmm.parallel.schedule import estimated_cost
from bioqmmm.protocols.context import RunContext
from bioqmmm.protocols.pmf_settings import CoordinateSection, MetadynamicsSection, PMFSettings, WindowsSection
from bioqmmm.protocols.registry import Protocol
from bioqmmm.protocols.settings import settings_record
from bioqmmm.region.selection import resolve_qm_atoms
from bioqmmm.results import new_figure, quantity, write_results
from bioqmmm.sampling.coordinates import ReactionCoordinate, Term, Umbrella, distance_difference, umbrella_windows
from bioqmmm.sampling.metadynamics import MetadynamicsSettings, TabulatedBias, build_bias
from bioqmmm.sampling.reweighting import Profile, Window, in_range, reweight
from bioqmmm.sampling.starts import coordinate_values, nearest_frames, read_models
from bioqmmm.sampling.windows import SamplingSettings, pulled_start, retained_window, sample_window, system_energy
from bioqmmm.simulation.checkpoint import save_arrays
from bioqmmm.simulation.identity import array_digest, fingerprint

#: The two named levels of a profile: windows sample at either, MBAR reweights every sample to the second.
LEVELS = ("cheap", "target")


@dataclasses.dataclass(frozen=True)
class WindowPlan:
    """One window to run: ``level`` ('cheap' or 'target'), its umbrella, sampling section and seed."""

    name: str
    level: str
    bias: Umbrella | None  # None: a metadynamics state, whose bias is built when it runs
    section: WindowsSection | MetadynamicsSection
    seed: int


def reaction_coordinate(section: CoordinateSection, topology: app.Topology) -> ReactionCoordinate:
    """The protocol's reaction coordinate, each selection resolved to exactly one atom."""

    def atoms(selections) -> tuple[int, ...]:
        found = []
        for selection in selections:
            match = resolve_qm_atoms(topology, selection)
            if len(match) != 1:
                raise InputError(f"coordinate: {selection!r} selects {len(match)} atoms, not one")
            found.append(match[0])
        return tuple(found)

    try:
        if section.kind == "combination":
            return ReactionCoordinate(tuple(Term(t.kind, atoms(t.atoms), t.coefficient) for t in section.terms))
        if section.kind == "distance_difference":
            return distance_difference(*atoms(section.atoms))
        return ReactionCoordinate((Term(section.kind, atoms(section.atoms)),))
    except ValueError as exc:  # an atom named twice in a term
        raise InputError(f"coordinate: {exc}") from exc


def window_plans(settings: PMFSettings, coordinate: ReactionCoordinate) -> list[WindowPlan]:
    """Cheap windows ``c-1.0472`` …, target windows ``t+0.0000`` … (named by level and centre, so that
    adding a window leaves the others' folders, names and seeds alone) and the metadynamics state ``m``."""
    plans = []
    for level, prefix, section in zip(LEVELS, "ct", (settings.windows, settings.target_windows), strict=True):
        if section is None:
            continue
        for bias in _umbrellas(section, coordinate.period, settings.temperature_k):
            name = f"{prefix}{bias.center:+.4f}"
            plans.append(WindowPlan(name, level, bias, section, replica_seed(settings.seed, name)))
    if settings.metadynamics is not None:
        plans.append(WindowPlan("m", "cheap", None, settings.metadynamics, replica_seed(settings.seed, "m")))
    names = [p.name for p in plans]
    if len(set(names)) != len(names):
        raise InputError(f"two windows of one level share a centre (to 4 decimals): {sorted(names)}")
    return plans


def _umbrellas(section: WindowsSection, period: float | None, temperature: float) -> list[Umbrella]:
    if section.centers:
        return [Umbrella(c, section.force_constant, period) for c in section.centers]
    low, high = section.range
    if period is not None and abs(high - low - period) < 1e-3:  # a whole turn given to a few digits
        high = low + period
    if period is not None and high - low > period:
        raise InputError(f"windows range {list(section.range)} spans more than a turn ({period:.6g} rad): "
                         "dihedral ranges are in radians")
    return umbrella_windows(low, high, section.count, temperature, section.force_constant, period)


def bin_edges(settings: PMFSettings, period: float | None) -> np.ndarray:
    """``bins`` equal bins over (−π, π] for a dihedral, else over the span of all window sets and the
    metadynamics range."""
    if period is not None:
        return np.linspace(-math.pi, math.pi, settings.bins + 1)
    spans = [s.span() for s in (settings.windows, settings.target_windows, settings.metadynamics) if s is not None]
    low, high = min(a for a, _ in spans), max(b for _, b in spans)
    if not high > low:
        raise InputError("the windows span no range of the coordinate: give a 'range' or several centres")
    return np.linspace(low, high, settings.bins + 1)


def run(context: RunContext, settings: PMFSettings) -> dict:
    """The ``pmf`` protocol on every rank (windows shared out); rank 0 writes the files."""
    qmmm, positions, box, comm, out = context.qmmm, context.positions, context.box, context.comm, context.output
    topology = qmmm.topology
    coordinate = reaction_coordinate(settings.coordinate, topology)
    plans = {p.name: p for p in window_plans(settings, coordinate)}
    edges = bin_edges(settings, coordinate.period)
    ranges = {name: _checked_range(getattr(settings, name), edges, name, coordinate.period)
              for name in ("reactant_range", "product_range")}
    if settings.metadynamics is not None:
        metadynamics_range(settings.metadynamics, coordinate.period)
    start = comm.bcast(np.asarray(positions) if comm.rank == 0 else None)
    starts = _given_starts(context, settings, coordinate, plans)
    identities = {name: _window_identity(context, settings, plan, coordinate) for name, plan in plans.items()}
    identities.update({name: fingerprint(identities[name], array_digest(x, 6)) for name, x in starts.items()})
    energies_identity = fingerprint(*context.inputs_at(None), settings_record(settings.cheap), context.platform)
    levels = _Levels(context, settings)
    folder = out / "windows"

    def work(replica: Replica, poll) -> dict[str, Any]:
        plan = plans[replica.name]
        where = folder / plan.name
        sampling = SamplingSettings(
            samples=plan.section.samples, sample_interval=plan.section.sample_interval,
            equilibration_steps=plan.section.equilibration_steps, timestep_fs=plan.section.timestep_fs,
            temperature_k=settings.temperature_k, friction_per_ps=settings.friction_per_ps, seed=plan.seed,
            checkpoint_interval=settings.checkpoint_interval,
        )
        resumed = (where / "checkpoint.npz").exists()
        identity = identities[plan.name]
        if plan.bias is None:
            bias, x = _metadynamics_bias(plan, where, identity, start, coordinate, levels, settings, poll)
            identity = fingerprint(identity, array_digest(np.array(bias.values), 9))  # the samples' own bias
        else:
            bias = plan.bias
            x = starts.get(plan.name)
            if x is None:
                x = start if resumed else pulled_start(qmmm.reference_system, coordinate, bias, start, box)
        system, sampled_qmmm = levels.sampling_system(plan.level)
        samples = sample_window(system, coordinate, bias, x, sampling, where, box=box, qmmm=sampled_qmmm,
                                platform=context.platform, threads=context.threads,
                                identity=identity, poll=poll)
        window = retained_window(plan.name, plan.level, bias, samples, levels.energies(), settings.temperature_k,
                                 poll, cache=where / "energies.npz",
                                 cache_identity=fingerprint(energies_identity, identity))
        save_arrays(where / "window.npz", {
            "s": window.s, **window.energies, "retained": window.retained,
            "meta": np.array(json.dumps({"identity": identities[plan.name], "energies": energies_identity,
                                         "samples": window.frames,
                                         "statistical_inefficiency": window.statistical_inefficiency})),
        })
        if context.progress:
            rank = f"rank {comm.rank}: " if comm.size > 1 else ""
            print(f"{rank}window {plan.name} ({plan.level}): {window.frames} samples, g = "
                  f"{window.statistical_inefficiency:.1f}, {len(window.s)} kept with both energies", flush=True)
        return {"samples": window.frames, "retained": len(window.s)}

    def finished(replica: Replica) -> dict[str, Any] | None:
        meta = _window_meta(folder / replica.name / "window.npz")
        plan = plans[replica.name]
        same = meta is not None and (meta["identity"], meta.get("energies")) == (identities[plan.name],
                                                                                   energies_identity)
        done = same and meta["samples"] == plan.section.samples
        return {"samples": meta["samples"]} if done else None

    replicas = [Replica(name, cost=_cost(plan, qmmm, settings.cheap == "mm")) for name, plan in plans.items()]
    run_replicas(replicas, work, folder, finished=finished, comm=comm)
    outcome = None
    if comm.rank == 0:
        try:
            windows = [_load_window(folder / name / "window.npz", plan, coordinate.period)
                       for name, plan in plans.items()]
            profile = reweight(windows, settings.temperature_k, edges, bootstraps=settings.bootstraps,
                               seed=settings.seed, reactant=ranges["reactant_range"],
                               product=ranges["product_range"], min_ess_fraction=settings.min_ess_fraction)
            outcome = _write(out, profile, windows, coordinate, context.record, settings)
        except (InputError, CalculationError) as exc:  # every rank raises it (the others wait for rank 0)
            outcome = (type(exc).__name__, str(exc))
    outcome = comm.bcast(outcome)
    if isinstance(outcome, tuple):
        raise {"InputError": InputError}.get(outcome[0], CalculationError)(outcome[1])
    return outcome


class _Levels:
    """The cheap and target models of this rank: Systems to sample with, energy functions to evaluate."""

    def __init__(self, context: RunContext, settings: PMFSettings) -> None:
        self.context, self.qmmm, self.settings = context, context.qmmm, settings
        self._energies: dict[str, Any] | None = None
        self._qm_level("cheap")  # a cheap QM level is validated (basis, electrons) before any sampling

    def _qm_level(self, level: str):
        """A fresh QMMMSystem at the level's QM method (None for the MM cheap level)."""
        cheap = self.settings.cheap
        if level == "cheap" and cheap == "mm":
            return None
        return self.context.model_at(cheap.level() if level == "cheap" else None)

    def sampling_system(self, level: str) -> tuple[openmm.System, Any]:
        model = self._qm_level(level)
        if model is None:
            return openmm.XmlSerializer.clone(self.qmmm.reference_system), None
        _restore_constraints(model.system, self.qmmm.reference_system)
        return model.system, model

    def energies(self) -> dict[str, Any]:
        """Energy functions of both levels, QM ones starting from a fresh SCF guess: a window's energies do
        not depend on which windows its rank evaluated before (serial and MPI runs agree)."""
        if self._energies is None:
            self._energies, self._models = {}, []
            for level in LEVELS:
                model = self._qm_level(level)
                if model is None:
                    mm = openmm.XmlSerializer.clone(self.qmmm.reference_system)
                    self._energies[level] = system_energy(mm, self.context.platform)
                else:
                    self._energies[level] = _energy_of(model)
                    self._models.append(model)
        for model in self._models:
            model.engine.set_state({})
            model.kernel.clear_cache()
        return self._energies


def _energy_of(model):
    """The model's energy at a frame, without gradients (the SCF starts from the previous frame's density)."""
    def energy(positions: np.ndarray, box: np.ndarray | None = None) -> float:
        return model.energy(positions, box)

    return energy


def _metadynamics_bias(plan: WindowPlan, where: Path, identity: str, start: np.ndarray, coordinate, levels: _Levels,
                       settings: PMFSettings, poll) -> tuple[TabulatedBias, np.ndarray]:
    """The frozen metadynamics bias and the structure it ended at: built at the cheap level, or read from
    ``bias.npz`` when an earlier run built it with the same settings."""
    path = where / "bias.npz"
    meta = _window_meta(path)
    if meta is not None and meta["identity"] == identity:
        return _load_bias(path, coordinate.period)
    if (where / "checkpoint.npz").exists():  # samples whose bias is gone or from other settings
        raise InputError(f"{where} holds metadynamics samples of other settings (or lost bias.npz): use another "
                         "output folder or remove it")
    section: MetadynamicsSection = plan.section
    context = levels.context
    low, high = metadynamics_range(section, coordinate.period)
    system, model = levels.sampling_system("cheap")
    bias, positions = build_bias(
        system, levels.qmmm.topology, coordinate, start,
        MetadynamicsSettings(
            low=low, high=high, width=section.width, steps=section.build_steps,
            height=section.height_kjmol, bias_factor=section.bias_factor, frequency=section.frequency,
            timestep_fs=section.timestep_fs, temperature_k=settings.temperature_k,
            friction_per_ps=settings.friction_per_ps, seed=plan.seed,
        ),
        box=context.box, platform=context.platform, threads=context.threads,
        typed_errors=None if model is None else model.typed_errors, poll=poll,
    )
    where.mkdir(parents=True, exist_ok=True)
    save_arrays(path, {"values": np.array(bias.values), "range": np.array([bias.minimum, bias.maximum]),
                       "positions": positions, "meta": np.array(json.dumps({"identity": identity}))})
    return bias, positions


def metadynamics_range(section: MetadynamicsSection, period: float | None) -> tuple[float, float]:
    """The metadynamics grid's range; for a dihedral exactly one turn (given to a few digits)."""
    low, high = section.range
    if period is None:
        return low, high
    if abs(high - low - period) > 1e-3:
        raise InputError(f"metadynamics range {list(section.range)} of a dihedral must be one whole turn in radians "
                         "(e.g. [-3.14159265, 3.14159265])")
    return low, low + period


def _load_bias(path: Path, period: float | None) -> tuple[TabulatedBias, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        low, high = (float(v) for v in data["range"])
        return TabulatedBias(tuple(float(v) for v in data["values"]), low, high, period), np.array(data["positions"])


def _given_starts(context: RunContext, settings: PMFSettings, coordinate: ReactionCoordinate,
                  plans: dict[str, WindowPlan]) -> dict[str, np.ndarray]:
    """The ``starts`` model nearest each umbrella window's centre (none when no ``starts`` are given)."""
    if settings.starts is None:
        return {}
    frames = read_models(context.base / settings.starts, context.qmmm.topology)
    values = coordinate_values(coordinate, frames, context.box)
    umbrellas = {name: plan.bias for name, plan in plans.items() if plan.bias is not None}
    chosen = nearest_frames(values, list(umbrellas.values()))
    if context.progress and context.comm.rank == 0:
        print(f"window starts from {settings.starts}: s of its {len(frames)} models "
              + " ".join(f"{v:.3f}" for v in values), flush=True)
    return {name: frames[k] for name, k in zip(umbrellas, chosen, strict=True)}


def _restore_constraints(system: openmm.System, reference: openmm.System) -> None:
    """Add the reference's constraints that ``system`` lacks (those inside the QM region)."""
    have = {tuple(sorted(system.getConstraintParameters(k)[:2])) for k in range(system.getNumConstraints())}
    for k in range(reference.getNumConstraints()):
        i, j, length = reference.getConstraintParameters(k)
        if tuple(sorted((i, j))) not in have:
            system.addConstraint(i, j, length)


def _cost(plan: WindowPlan, qmmm, cheap_is_mm: bool) -> float:
    """Prior cost: QM on every step of a QM-level window, on the retained frames (~samples) otherwise."""
    n_qm = len(qmmm.qm_atoms) + len(qmmm.links)
    n_mm = qmmm.topology.getNumAtoms() - n_qm
    steps = plan.section.samples * plan.section.sample_interval + plan.section.equilibration_steps
    steps += getattr(plan.section, "build_steps", 0)
    qm_steps = steps if plan.level == "target" or not cheap_is_mm else plan.section.samples
    return estimated_cost(n_qm, 0, qm_steps) + estimated_cost(0, n_mm, steps)


def _window_identity(context: RunContext, s: PMFSettings, plan: WindowPlan, coordinate: ReactionCoordinate) -> str:
    """What a window's trajectory depends on: the system, the Hamiltonian it samples (an MM window not the
    QM block), its bias and sampling settings; not its length (a longer rerun extends it), nor the other
    windows, nor the target level (a changed target only re-evaluates energies)."""
    system, hamiltonian = context.inputs_at(None)
    if plan.level == "cheap":
        hamiltonian = "mm" if s.cheap == "mm" else context.inputs_at(s.cheap.level())[1]
    section = plan.section
    sampling = (section.sample_interval, section.equilibration_steps, section.timestep_fs)
    if plan.bias is None:  # metadynamics: its settings make the bias
        sampling += (dataclasses.replace(section, samples=1),)
    return fingerprint(system, hamiltonian, coordinate, s.temperature_k, s.friction_per_ps,
                       s.checkpoint_interval, plan.bias, plan.seed, *sampling)


def _window_meta(path: Path) -> dict[str, Any] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            return json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError):
        return None


def _load_window(path: Path, plan: WindowPlan, period: float | None) -> Window:
    bias = plan.bias or _load_bias(path.parent / "bias.npz", period)[0]
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        return Window(plan.name, plan.level, bias, data["s"], {level: data[level] for level in LEVELS},
                      frames=meta["samples"], statistical_inefficiency=meta["statistical_inefficiency"],
                      retained=data["retained"])


def _checked_range(value, edges: np.ndarray, name: str, period: float | None) -> tuple[float, float] | None:
    """A reactant/product range that holds a bin centre. For a dihedral both ends are taken into (−π, π]
    (so [2.8, 3.6] is 2.8 through ±π to −2.68; lo > hi wraps round ±π) and less than a turn is required."""
    if value is None:
        return None
    low, high = value
    if period is None:
        if low > high:
            raise InputError(f"{name} {list(value)}: low > high only wraps round a periodic coordinate")
    else:
        if low < high and high - low >= period:
            raise InputError(f"{name} {list(value)} spans a whole turn or more: dihedral ranges are in radians")
        low, high = (float(math.pi - np.mod(math.pi - v, period)) for v in (low, high))
    centers = 0.5 * (edges[1:] + edges[:-1])
    if not in_range(centers, (low, high)).any():
        raise InputError(f"{name} {list(value)} holds no bin centre of the profile (bins over "
                         f"[{edges[0]:.4g}, {edges[-1]:.4g}], width {edges[1] - edges[0]:.4g}): widen it or add bins")
    return low, high


def _write(out: Path, profile: Profile, windows: list[Window], coordinate: ReactionCoordinate,
           common: dict[str, Any], settings: PMFSettings) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    unit = coordinate.unit
    boot = profile.bootstrap_uncertainty
    with open(out / "pmf.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"s_{unit}", "free_energy_kjmol", "uncertainty_kjmol", "bootstrap_uncertainty_kjmol",
                         "samples", "target_level_share"])
        for b in range(len(profile.centers)):
            writer.writerow([f"{profile.centers[b]:.6g}", f"{profile.free_energy[b]:.6f}",
                             f"{profile.uncertainty[b]:.6f}", "" if boot is None else f"{boot[b]:.6f}",
                             int(profile.counts[b]), f"{profile.target_share[b]:.4f}"])
    with open(out / "windows.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["window", "level", f"center_{unit}", "force_constant", "samples", "statistical_inefficiency",
                         "retained", "kish_ess", "ess_fraction"])
        for w in windows:
            umbrella = w.bias.center is not None
            writer.writerow([w.name, w.level, f"{w.bias.center:.6g}" if umbrella else "",
                             f"{w.bias.force_constant:.6g}" if umbrella else "metadynamics", w.frames,
                             f"{w.statistical_inefficiency:.3f}", len(w.s), f"{profile.ess[w.name]:.2f}",
                             f"{profile.ess[w.name] / len(w.s):.4f}"])
    with open(out / "overlap.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["window", *profile.windows])
        for name, row in zip(profile.windows, profile.overlap, strict=True):
            writer.writerow([name, *(f"{v:.8g}" for v in row)])
    _plot_profile(out / "pmf.png", profile, windows, unit)
    _plot_overlap(out / "overlap.png", profile)
    ess_fraction = [profile.ess[w.name] / len(w.s) for w in windows if w.level == "cheap"]
    figures = {
        **common,
        "coordinate_unit": unit,
        "windows": {"cheap": sum(w.level == "cheap" and w.bias.center is not None for w in windows),
                    "metadynamics": sum(w.bias.center is None for w in windows),
                    "target": sum(w.level == "target" for w in windows)},
        "cheap_level": settings.cheap if settings.cheap == "mm" else settings.cheap.level().label,
        "samples_retained": int(sum(len(w.s) for w in windows)),
        "profile_reference": quantity(profile.reference, unit),
        "lowest_neighbour_overlap": min(profile.neighbour_overlap.values(), default=None),
        "lowest_cheap_ess_fraction": float(min(ess_fraction)) if ess_fraction else None,
        "warnings": profile.warnings,
    }
    if profile.barrier is not None:
        figures["free_energy_barrier"] = {"value": profile.barrier[0], "uncertainty": profile.barrier[1],
                                          "unit": "kJ/mol"}
        figures["reaction_free_energy"] = {"value": profile.reaction_free_energy[0],
                                           "uncertainty": profile.reaction_free_energy[1], "unit": "kJ/mol"}
        figures["barrier_position"] = quantity(profile.ts_position, unit)
    figures["files"] = sorted(["pmf.csv", "windows.csv", "overlap.csv", "pmf.png", "overlap.png", "result.json",
                               "summary.txt", "windows/"])
    return write_results(out, "pmf", figures)


def _plot_profile(path: Path, profile: Profile, windows: list[Window], unit: str) -> None:
    """The profile with its ±2σ band and the window centres; with target windows, each bin's target share."""
    multilevel = any(w.level == "target" for w in windows)
    fig, axes = new_figure(rows=2 if multilevel else 1)
    ax = axes[0]
    f, df = profile.free_energy, profile.uncertainty
    ax.fill_between(profile.centers, f - 2 * df, f + 2 * df, color="tab:blue", alpha=0.25, label="±2σ (MBAR)")
    ax.plot(profile.centers, f, "o-", color="tab:blue", ms=3, label="target free energy")
    for w in windows:
        if w.bias.center is not None:
            ax.axvline(w.bias.center, color="tab:red" if w.level == "target" else "0.8", lw=0.6, zorder=0)
    ax.set_ylabel("F (kJ/mol)")
    ax.legend(loc="best", fontsize=8)
    ax.set_title("free-energy profile (grey: cheap windows, red: target windows)", fontsize=9)
    if multilevel:
        axes[1].bar(profile.centers, profile.target_share, width=np.diff(profile.centers).min(initial=1.0) * 0.9,
                    color="tab:red")
        axes[1].set_ylim(0, 1)
        axes[1].set_ylabel("share from target windows")
    axes[-1].set_xlabel(f"s ({unit})")
    fig.savefig(path, dpi=120)


def _plot_overlap(path: Path, profile: Profile) -> None:
    fig, (ax,) = new_figure(rows=1, height=6.0)
    image = ax.imshow(profile.overlap, cmap="viridis", vmin=0, vmax=max(profile.overlap.max(), 1e-12))
    ticks = range(len(profile.windows))
    ax.set_xticks(list(ticks), profile.windows, rotation=90, fontsize=6)
    ax.set_yticks(list(ticks), profile.windows, fontsize=6)
    ax.set_title("MBAR overlap matrix")
    fig.colorbar(image, ax=ax)
    fig.savefig(path, dpi=120)


PROTOCOL = Protocol("pmf", "free-energy profile: umbrella windows / metadynamics at a cheap level, MBAR to QM/MM",
                    PMFSettings, run, parallel=True)
