"""Adaptive QM/MM molecular dynamics (protocol ``adaptive_md``): the QM region follows the chemistry.

The ``qm`` block's region is the core, always QM. The residues matched by ``groups`` (whole molecules:
waters, ions, a substrate) move between levels by their distance from the active centre (default: the
core's centre of mass): QM inside ``r_inner_nm``, MM beyond ``r_outer_nm``, smoothly weighted in between
(:mod:`bioqmmm.adaptive`). ``scheme: pap`` conserves energy (2ⁿ QM/MM evaluations for n groups in the
buffer, n ≤ ``max_buffer_groups``); ``scheme: interpolation`` costs two evaluations but is not
Hamiltonian: run it with the Langevin thermostat.

Files: ``topology.pdb``, ``trajectory.dcd``/``.xtc``, ``adaptive.csv`` (energies, QM and buffer group
counts, evaluations per row), ``exchanges.csv`` (every group changing state: step, residue, from, to,
distance), ``checkpoint.npz`` (a rerun resumes bit for bit), ``region.png``, ``energy.png``,
``result.json``, ``summary.txt``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import openmm
from openmm import app, unit

from bioqmmm.adaptive.hamiltonian import AdaptiveHamiltonian
from bioqmmm.adaptive.models import group_offsets, qmmm_builder
from bioqmmm.adaptive.partition import BufferedPartition
from bioqmmm.adaptive.reporter import AdaptiveReporter, TriggerLog, plot_trigger, read_exchanges, read_trigger
from bioqmmm.adaptive.schemes import SCHEMES
from bioqmmm.adaptive.trigger import RegionTrigger, TriggerRule
from bioqmmm.errors import InputError
from bioqmmm.protocols.context import RunContext
from bioqmmm.protocols.md import PollReporter, single_step_integrator, trajectory_reporter
from bioqmmm.protocols.registry import Protocol
from bioqmmm.protocols.settings import Declared, FieldError, setting
from bioqmmm.region.region import QMRegion
from bioqmmm.region.selection import describe_atom, resolve_qm_atoms
from bioqmmm.results import new_figure, quantity, write_pdb_models, write_results
from bioqmmm.simulation.checkpoint import read_checkpoint, read_meta, write_checkpoint
from bioqmmm.simulation.composite import particle_masses
from bioqmmm.simulation.environment import reproducible_properties
from bioqmmm.simulation.identity import require_same_run
from bioqmmm.simulation.reporters import degrees_of_freedom, energy_drift, read_rows
from bioqmmm.simulation.stepping import closing_reporters, progress_bar, step_with_checkpoints


@dataclass(frozen=True)
class TriggerSection(Declared):
    """Grow the QM region where the chemistry goes (:mod:`bioqmmm.adaptive.trigger`): every ``interval``
    steps each candidate C scores S = stress_weight · σ + fukui_weight · f (bond stress at the R–C interface
    in thermal units, condensed Fukui index of the interface atoms from N ± 1 single points); C joins at
    S > threshold and leaves after ``patience`` checks below threshold − hysteresis."""

    candidates: tuple[str, ...] = setting(doc="mdtraj selections of the groups that may join the QM region")
    interval: int = setting(10, doc="steps between checks (each costs two QM single points)", check="positive_int")
    stress_weight: float = setting(1.0, doc="a, weight of the bond stress (thermal units)", check="non_negative")
    fukui_weight: float = setting(5.0, doc="b, weight of the condensed Fukui index (e)", check="non_negative")
    threshold: float = setting(8.0, doc="S above which a candidate joins", check="positive")
    hysteresis: float = setting(2.0, doc="a candidate leaves below threshold − hysteresis", check="non_negative")
    patience: int = setting(3, doc="checks in a row below that before it leaves", check="positive_int")


@dataclass(frozen=True)
class AdaptiveMDSettings(Declared):
    """Adaptive QM/MM MD: groups (residues of ``groups``) QM within ``r_inner_nm`` of the active centre, MM
    beyond ``r_outer_nm``, weighted in between by a C² smoothstep and combined by ``scheme``; and/or a
    QM region grown and shrunk by ``trigger``."""

    steps: int = setting(doc="MD steps (a rerun with more steps continues the run)", check="positive_int")
    groups: str | None = setting(None, doc="mdtraj selection of the residues that may move between QM and MM")
    r_inner_nm: float | None = setting(None, doc="groups closer to the centre are QM", check="positive")
    r_outer_nm: float | None = setting(None, doc="groups farther are MM; in between, the buffer", check="positive")
    centre: str | tuple[int, ...] | None = setting(None, doc="atoms whose centre of mass is the active centre "
                                                            "(default: the QM region)")
    scheme: Literal["pap", "interpolation"] = setting("pap", doc="pap: energy-conserving, 2^n evaluations; "
                                                              "interpolation: 2 evaluations, needs a thermostat")
    max_buffer_groups: int = setting(4, doc="most groups weighted at once (beyond: the outermost count as MM)",
                                     check="positive_int")
    trigger: TriggerSection | None = setting(None, doc="grow the QM region by bond stress and Fukui indices")
    timestep_fs: float = setting(0.5, doc="time step", check="positive")
    integrator: Literal["langevin", "verlet"] = setting("langevin", doc="LangevinMiddle (NVT) or Verlet (NVE)")
    temperature_k: float = setting(300.0, doc="thermostat, initial velocities, stress scale", check="positive")
    friction_per_ps: float = setting(1.0, doc="Langevin friction", check="non_negative")
    seed: int | None = setting(None, doc="velocities and Langevin noise (none: random)")
    report_interval: int = setting(1, doc="steps between rows of adaptive.csv", check="positive_int")
    trajectory_interval: int = setting(10, doc="steps between trajectory frames", check="positive_int")
    trajectory_format: Literal["dcd", "xtc"] = setting("dcd", doc="trajectory file format")
    checkpoint_interval: int = setting(50, doc="steps between checkpoints", check="positive_int")
    new_keys = ("trigger",)  # runs without a trigger keep their identity

    def check(self) -> None:
        if self.groups is None and self.trigger is None:
            raise FieldError("groups", "give adaptive 'groups' (with r_inner_nm, r_outer_nm), a 'trigger', or both")
        if self.groups is not None:
            if self.r_inner_nm is None or self.r_outer_nm is None:
                raise FieldError("r_inner_nm" if self.r_inner_nm is None else "r_outer_nm",
                                 "adaptive groups need both r_inner_nm and r_outer_nm")
            if self.r_outer_nm <= self.r_inner_nm:
                raise FieldError("r_outer_nm", f"must exceed r_inner_nm ({self.r_inner_nm} nm)")
        if self.seed is not None and self.seed < 1:
            raise FieldError("seed", "must be a positive integer (omit it for a random seed)")
        if self.report_interval > self.steps:
            raise FieldError("report_interval", f"must not exceed steps ({self.steps})")
        if self.scheme not in SCHEMES:
            raise FieldError("scheme", f"choose one of {', '.join(SCHEMES)}")


class AdaptiveSetup:
    """Everything of a run that does not change with its QM region: the groups and their offsets, the
    partition, the trigger; :meth:`hamiltonian` makes the adaptive Hamiltonian of a region."""

    def __init__(self, context: RunContext, settings: AdaptiveMDSettings) -> None:
        self.context, self.settings = context, settings
        model = context.qmmm
        topology, reference = model.topology, model.reference_system
        self.groups, self.labels = _groups(model, settings.groups)
        self.trigger = None
        if settings.trigger is not None:
            trigger = settings.trigger
            candidates = RegionTrigger.candidates(topology, reference, model.region, trigger.candidates)
            grouped = {i for g in self.groups for i in g}
            for candidate in candidates:
                if grouped & set(candidate.atoms):
                    raise InputError(f"trigger candidate {candidate.name!r} overlaps the adaptive groups")
            rule = TriggerRule(trigger.stress_weight, trigger.fukui_weight, trigger.threshold, trigger.hysteresis,
                               trigger.patience)
            self.trigger = RegionTrigger(topology, reference, model.region, candidates, rule, settings.temperature_k,
                                         context.model_at(None, model.region).engine,
                                         allow_polar_cut=bool(context.inputs_at(None)[1].allow_polar_cut))
        centre = model.qm_atoms if settings.centre is None else resolve_qm_atoms(topology, settings.centre)
        self.partition = BufferedPartition(centre, self.groups, particle_masses(reference),
                                           settings.r_inner_nm or 1.0, settings.r_outer_nm or 2.0,
                                           settings.max_buffer_groups)
        empty = np.zeros((0, 3)), np.zeros(0)

        def gas_energy(symbols: list[str], positions: np.ndarray, charge: int) -> float:
            return model.engine.compute(symbols, positions, charge, 1, *empty).energy

        self.offsets = group_offsets(topology, reference, self.groups, context.positions, gas_energy)

    def region(self, added: frozenset[str]) -> QMRegion:
        """The core region with the trigger candidates in ``added``."""
        return self.context.qmmm.region if self.trigger is None else self.trigger.region(added)

    def hamiltonian(self, region: QMRegion) -> AdaptiveHamiltonian:
        """The adaptive Hamiltonian whose core is ``region``."""
        context, model = self.context, self.context.qmmm
        build = qmmm_builder(model.topology, model.reference_system, region, self.groups,
                             lambda r: context.model_at(None, r))
        return AdaptiveHamiltonian(self.partition, build, model.reference_system, core=region.atoms,
                                   scheme=self.settings.scheme, platform=context.platform, threads=context.threads,
                                   offsets=self.offsets)


def _groups(model, selection: str | None) -> tuple[list[list[int]], list[str]]:
    """Atoms and labels of the residues of ``selection`` (none without one); none may touch the QM region."""
    if selection is None:
        return [], []
    topology, core = model.topology, set(model.qm_atoms)
    residues = list(topology.residues())
    owner = {atom.index: residue.index for residue in residues for atom in residue.atoms()}
    chosen = sorted({owner[i] for i in resolve_qm_atoms(topology, selection)})
    overlapping = [r for r in chosen if core & {a.index for a in residues[r].atoms()}]
    if overlapping:
        atom = next(a for a in residues[overlapping[0]].atoms() if a.index in core)
        raise InputError(f"adaptive groups: residue of {describe_atom(atom)} is in the QM region already; "
                         "leave the QM region out of 'groups'")
    return ([[a.index for a in residues[r].atoms()] for r in chosen],
            [f"{residues[r].name}{residues[r].id}" for r in chosen])


class _Run:
    """The state of a run between segments: the region's trigger candidates, the Hamiltonian, the Simulation."""

    def __init__(self, setup: AdaptiveSetup, files: dict[str, Path]) -> None:
        self.setup, self.files = setup, files
        self.added: frozenset[str] = frozenset()
        self.hamiltonian: AdaptiveHamiltonian | None = None
        self.simulation: app.Simulation | None = None
        self.evaluations = self.capped_steps = self.models_built = 0
        self.region_changes = 0

    def meta(self) -> dict:
        trigger = self.setup.trigger
        return {"identity": self.setup.context.identity, "trigger_added": sorted(self.added),
                "trigger_below": dict(trigger.below) if trigger is not None else {}}

    def build(self, added: frozenset[str]) -> None:
        """The Hamiltonian and Simulation of the region with ``added``; the state of the old one carried over."""
        context, settings = self.setup.context, self.setup.settings
        old = self.simulation
        if self.hamiltonian is not None:
            self.evaluations += self.hamiltonian.evaluations
            self.capped_steps += self.hamiltonian.capped_steps
            self.models_built += self.hamiltonian.models.built
        self.added = added
        self.hamiltonian = self.setup.hamiltonian(self.setup.region(added))
        self.simulation = app.Simulation(context.qmmm.topology, self.hamiltonian.system,
                                         single_step_integrator(settings),
                                         openmm.Platform.getPlatformByName(context.platform),
                                         reproducible_properties(context.platform, context.threads))
        if old is not None:
            state = old.context.getState(getPositions=True, getVelocities=True)
            new = self.simulation.context
            new.setPeriodicBoxVectors(*state.getPeriodicBoxVectors())
            new.setPositions(state.getPositions())
            new.setVelocities(state.getVelocities())
            new.setTime(state.getTime())
            new.setStepCount(old.currentStep)
            new.applyConstraints(1e-8)  # constraints freed or restored with the region
            new.applyVelocityConstraints(1e-8)
            self.simulation.currentStep = old.currentStep
            self.simulation.reporters.extend(old.reporters)

    def totals(self) -> tuple[int, int, int]:
        """QM/MM evaluations, steps over the buffer cap and partition models built, over every region."""
        h = self.hamiltonian
        return (self.evaluations + h.evaluations, self.capped_steps + h.capped_steps,
                self.models_built + h.models.built)


def run(context: RunContext, settings: AdaptiveMDSettings) -> dict:
    """The ``adaptive_md`` protocol: MD (or resume) on the adaptive Hamiltonian, the QM region grown and shrunk
    by the trigger between segments, then plots and the record."""
    setup = AdaptiveSetup(context, settings)
    out = context.output
    files = {"topology": out / "topology.pdb", "trajectory": out / f"trajectory.{settings.trajectory_format}",
             "adaptive": out / "adaptive.csv", "exchanges": out / "exchanges.csv", "checkpoint": out / "checkpoint.npz",
             **({"trigger": out / "trigger.csv"} if setup.trigger is not None else {})}
    state = _Run(setup, files)
    resume = files["checkpoint"].exists()
    start_step = 0
    if resume:
        meta = read_meta(files["checkpoint"])
        require_same_run(meta.get("identity"), context.identity, out)
        if setup.trigger is not None:
            setup.trigger.below.update(meta.get("trigger_below", {}))
        state.build(frozenset(meta.get("trigger_added", [])))
        start_step = int(read_checkpoint(files["checkpoint"], state.simulation.context, state.hamiltonian)["step"])
        state.simulation.currentStep = start_step
    else:
        state.build(frozenset())
        _start(state.simulation.context, state.hamiltonian, context, settings, files)
    reporter = AdaptiveReporter(files["adaptive"], files["exchanges"], settings.report_interval, state.hamiltonian,
                                setup.labels, append=resume, resume_step=start_step)
    log = TriggerLog(files["trigger"], append=resume, resume_step=start_step) if setup.trigger is not None else None
    state.simulation.reporters += [
        trajectory_reporter(files["trajectory"], settings, resume, start_step, context.qmmm.topology,
                            context.qmmm.qm_atoms), reporter,
        *([PollReporter(context.poll)] if context.poll is not None else [])]
    wall = time.perf_counter()
    interval = settings.trigger.interval if setup.trigger is not None else settings.steps
    step = start_step
    with closing_reporters([*state.simulation.reporters, *([log] if log else [])]), \
            progress_bar(settings.steps, start_step, "adaptive QM/MM MD", context.progress) as bar:
        while step < settings.steps:
            stop = min(settings.steps, (step // interval + 1) * interval)
            step = step_with_checkpoints(state.simulation, state.hamiltonian, steps=stop,
                                         checkpoint_interval=settings.checkpoint_interval,
                                         checkpoint=files["checkpoint"], meta=state.meta(), bar=bar,
                                         label="adaptive QM/MM MD")
            if setup.trigger is not None and step % interval == 0:  # the last step too: a longer rerun goes on
                _check(state, log, step)
    wall = time.perf_counter() - wall
    return _write(context, settings, state, step, start_step, wall)


def _check(state: _Run, log: TriggerLog, step: int) -> None:
    """Score the candidates at ``step``; grow or shrink the region (a new Hamiltonian and Simulation, the
    dynamics carried over); log the scores; checkpoint the decision."""
    setup, simulation = state.setup, state.simulation
    positions = simulation.context.getState(getPositions=True)
    x = positions.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    box = (positions.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
           if state.hamiltonian.system.usesPeriodicBoundaryConditions() else None)
    core = state.hamiltonian.models.get(frozenset()).qmmm
    scores = setup.trigger.scores(core, np.asarray(x), None if box is None else np.asarray(box))
    added = setup.trigger.decide(state.added, scores)
    log.write(step, scores, state.added, added)
    if added != state.added:
        state.region_changes += 1
        state.build(added)
        for reporter in state.simulation.reporters:
            if isinstance(reporter, AdaptiveReporter):
                reporter.follow(state.hamiltonian)
    write_checkpoint(state.files["checkpoint"], state.simulation.context, state.hamiltonian,
                     {**state.meta(), "step": step})


def _start(context: openmm.Context, hamiltonian: AdaptiveHamiltonian, run_context: RunContext,
           settings: AdaptiveMDSettings, files: dict[str, Path]) -> None:
    """Positions, box and velocities of a fresh run; the start structure and the step-0 checkpoint."""
    if run_context.box is not None:
        context.setPeriodicBoxVectors(*run_context.box)
    context.setPositions(run_context.positions)
    with hamiltonian.typed_errors():
        context.setVelocitiesToTemperature(settings.temperature_k * unit.kelvin, settings.seed or 0)
    state = context.getState(getPositions=True)
    write_pdb_models(files["topology"], run_context.qmmm.topology,
                     [state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)], run_context.box,
                     centre_atoms=run_context.qmmm.qm_atoms)
    write_checkpoint(files["checkpoint"], context, hamiltonian, {"identity": run_context.identity, "step": 0,
                                                                 "trigger_added": [], "trigger_below": {}})


def _write(context: RunContext, settings: AdaptiveMDSettings, state: _Run, step: int, start_step: int,
           wall: float) -> dict:
    files, hamiltonian = state.files, state.hamiltonian
    rows = read_rows(files["adaptive"])
    exchanges = read_exchanges(files["exchanges"])
    time_ps = np.array([r["time_ps"] for r in rows])
    total = np.array([r["total_kjmol"] for r in rows])
    dof = degrees_of_freedom(hamiltonian.system)
    drift, fluctuation = energy_drift(time_ps, total, dof) if len(rows) > 2 else (float("nan"), float("nan"))
    _plot(rows, exchanges, context.output, settings)
    entered = sum(1 for e in exchanges if e["after"] == "qm")
    evaluations, capped, built = state.totals()
    trigger = {}
    if state.setup.trigger is not None:
        checks = read_trigger(files["trigger"])
        plot_trigger(checks, context.output / "trigger.png", settings.trigger.threshold,
                     settings.trigger.threshold - settings.trigger.hysteresis)
        trigger = {"trigger_checks": len({c["step"] for c in checks}),
                   "region_changes": sum(1 for c in checks if c["action"]),
                   "candidates_in_region": sorted(state.added),
                   "qm_atoms_at_end": len(state.setup.region(state.added).atoms),
                   "highest_score": max((c["score"] for c in checks), default=float("nan"))}
    figures = {
        **context.record,
        "scheme": settings.scheme,
        "hamiltonian": hamiltonian.hamiltonian,
        "groups": len(hamiltonian.partition.groups),
        **({"r_inner": quantity(settings.r_inner_nm, "nm"), "r_outer": quantity(settings.r_outer_nm, "nm")}
           if settings.groups is not None else {}),
        "steps": step,
        "resumed_from_step": start_step,
        "simulated_time": quantity(step * settings.timestep_fs * 1e-3, "ps"),
        "mean_qm_groups": float(np.mean([r["qm_groups"] for r in rows])),
        "mean_buffer_groups": float(np.mean([r["buffer_groups"] for r in rows])),
        "max_buffer_groups_seen": int(max(r["buffer_groups"] + r["dropped_groups"] for r in rows)),
        "steps_over_buffer_cap": capped,
        "exchanges": len(exchanges),
        "groups_entering_qm": entered,
        "evaluations_per_step": quantity(evaluations / max(step - start_step, 1), "QM/MM evaluations"),
        "partition_models_built": built,
        **trigger,
        "energy_drift": quantity(drift, "kJ/mol/ns/dof"),
        "energy_fluctuation": quantity(fluctuation, "kJ/mol"),
        "degrees_of_freedom": dof,
        "wall_time_per_step": quantity(wall / max(step - start_step, 1), "s"),
        "note": ("energy-conserving scheme (permuted adaptive partitioning)" if hamiltonian.hamiltonian else
                 "force interpolation is not Hamiltonian: the drift is the scheme's, keep a thermostat on"),
        "files": sorted([p.name for p in files.values()] + ["region.png", "energy.png", "result.json", "summary.txt"]
                        + (["trigger.png"] if trigger else [])),
    }
    return write_results(context.output, "adaptive_md", figures)


def _plot(rows: list[dict[str, float]], exchanges: list[dict], out: Path,
          settings: AdaptiveMDSettings) -> None:
    t = np.array([r["time_ps"] for r in rows])
    fig, (size, distance) = new_figure(2, 2.6)
    size.plot(t, [r["qm_groups"] for r in rows], drawstyle="steps-post", label="QM groups")
    size.plot(t, [r["buffer_groups"] for r in rows], drawstyle="steps-post", label="buffer groups")
    size.set_ylabel("groups")
    size.legend(fontsize="small")
    size.set_title(f"adaptive QM/MM ({settings.scheme}), buffer {settings.r_inner_nm}–{settings.r_outer_nm} nm"
                   if settings.groups is not None else "adaptive QM/MM: no adaptive groups", fontsize="medium")
    for kind, marker in (("qm", "^"), ("buffer", "o"), ("mm", "v")):
        chosen = [e for e in exchanges if e["after"] == kind]
        distance.scatter([e["step"] * settings.timestep_fs * 1e-3 for e in chosen], [e["r_nm"] for e in chosen],
                         marker=marker, s=12, label=f"→ {kind}")
    for radius in (settings.r_inner_nm, settings.r_outer_nm) if settings.groups is not None else ():
        distance.axhline(radius, color="grey", lw=0.8, ls="--")
    distance.set_ylabel("r at exchange / nm")
    distance.set_xlabel("time / ps")
    distance.legend(fontsize="small", ncol=3)
    fig.savefig(out / "region.png", dpi=120)
    fig, (axis,) = new_figure(1, 2.6)
    total = np.array([r["total_kjmol"] for r in rows])
    potential = np.array([r["potential_kjmol"] for r in rows])
    axis.plot(t, potential - potential[0], label="potential")
    axis.plot(t, total - total[0], color="k", label="total")
    axis.set_xlabel("time / ps")
    axis.set_ylabel("ΔE / kJ mol$^{-1}$")
    axis.legend(fontsize="small")
    fig.savefig(out / "energy.png", dpi=120)


PROTOCOL = Protocol("adaptive_md", "adaptive QM/MM MD: groups move between QM and MM through a smooth buffer",
                    AdaptiveMDSettings, run, length_keys=("steps",))
