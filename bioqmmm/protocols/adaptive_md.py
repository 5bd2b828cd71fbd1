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
from bioqmmm.adaptive.reporter import AdaptiveReporter, read_exchanges
from bioqmmm.adaptive.schemes import SCHEMES
from bioqmmm.errors import InputError
from bioqmmm.protocols.context import RunContext
from bioqmmm.protocols.md import PollReporter, single_step_integrator, trajectory_reporter
from bioqmmm.protocols.registry import Protocol
from bioqmmm.protocols.settings import Declared, FieldError, setting
from bioqmmm.region.selection import describe_atom, resolve_qm_atoms
from bioqmmm.results import new_figure, quantity, write_results
from bioqmmm.simulation.checkpoint import read_checkpoint, read_meta, write_checkpoint
from bioqmmm.simulation.composite import particle_masses
from bioqmmm.simulation.environment import reproducible_properties
from bioqmmm.simulation.identity import require_same_run
from bioqmmm.simulation.reporters import degrees_of_freedom, energy_drift, read_rows
from bioqmmm.simulation.stepping import step_with_checkpoints


@dataclass(frozen=True)
class AdaptiveMDSettings(Declared):
    """Adaptive QM/MM MD: groups (residues of ``groups``) QM within ``r_inner_nm`` of the active centre, MM
    beyond ``r_outer_nm``, weighted in between by a C² smoothstep; ``scheme`` combines the partitions."""

    groups: str = setting(doc="mdtraj selection of the residues that may move between QM and MM")
    r_inner_nm: float = setting(doc="groups closer to the centre are QM", check="positive")
    r_outer_nm: float = setting(doc="groups farther are MM; in between, the buffer", check="positive")
    steps: int = setting(doc="MD steps (a rerun with more steps continues the run)", check="positive_int")
    centre: str | tuple[int, ...] | None = setting(None, doc="atoms whose centre of mass is the active centre "
                                                            "(default: the QM region)")
    scheme: Literal["pap", "interpolation"] = setting("pap", doc="pap: energy-conserving, 2^n evaluations; "
                                                              "interpolation: 2 evaluations, needs a thermostat")
    max_buffer_groups: int = setting(4, doc="most groups weighted at once (beyond: the outermost count as MM)",
                                     check="positive_int")
    timestep_fs: float = setting(0.5, doc="time step", check="positive")
    integrator: Literal["langevin", "verlet"] = setting("langevin", doc="LangevinMiddle (NVT) or Verlet (NVE)")
    temperature_k: float = setting(300.0, doc="thermostat and initial velocities", check="positive")
    friction_per_ps: float = setting(1.0, doc="Langevin friction", check="non_negative")
    seed: int | None = setting(None, doc="velocities and Langevin noise (none: random)")
    report_interval: int = setting(1, doc="steps between rows of adaptive.csv", check="positive_int")
    trajectory_interval: int = setting(10, doc="steps between trajectory frames", check="positive_int")
    trajectory_format: Literal["dcd", "xtc"] = setting("dcd", doc="trajectory file format")
    checkpoint_interval: int = setting(50, doc="steps between checkpoints", check="positive_int")

    def check(self) -> None:
        if self.r_outer_nm <= self.r_inner_nm:
            raise FieldError("r_outer_nm", f"must exceed r_inner_nm ({self.r_inner_nm} nm)")
        if self.seed is not None and self.seed < 1:
            raise FieldError("seed", "must be a positive integer (omit it for a random seed)")
        if self.report_interval > self.steps:
            raise FieldError("report_interval", f"must not exceed steps ({self.steps})")
        if self.scheme not in SCHEMES:
            raise FieldError("scheme", f"choose one of {', '.join(SCHEMES)}")


def adaptive_model(context: RunContext, settings: AdaptiveMDSettings) -> tuple[AdaptiveHamiltonian, list[str]]:
    """The adaptive Hamiltonian of a run (core: the ``qm`` block's region) and a label for each group."""
    model = context.qmmm
    topology, reference = model.topology, model.reference_system
    core = set(model.qm_atoms)
    residues = list(topology.residues())
    owner = {atom.index: residue.index for residue in residues for atom in residue.atoms()}
    chosen = sorted({owner[i] for i in resolve_qm_atoms(topology, settings.groups)})
    overlapping = [r for r in chosen if core & {a.index for a in residues[r].atoms()}]
    if overlapping:
        atom = next(a for a in residues[overlapping[0]].atoms() if a.index in core)
        raise InputError(f"adaptive groups: residue of {describe_atom(atom)} is in the QM region already; "
                         "leave the QM region out of 'groups'")
    groups = [[a.index for a in residues[r].atoms()] for r in chosen]
    labels = [f"{residues[r].name}{residues[r].id}" for r in chosen]
    centre = model.qm_atoms if settings.centre is None else resolve_qm_atoms(topology, settings.centre)
    partition = BufferedPartition(centre, groups, particle_masses(reference), settings.r_inner_nm,
                                  settings.r_outer_nm, settings.max_buffer_groups)
    build = qmmm_builder(topology, reference, model.region, groups, lambda region: context.model_at(None, region))
    empty = np.zeros((0, 3)), np.zeros(0)

    def gas_energy(symbols: list[str], positions: np.ndarray, charge: int) -> float:
        return model.engine.compute(symbols, positions, charge, 1, *empty).energy

    offsets = group_offsets(topology, reference, groups, context.positions, gas_energy)
    hamiltonian = AdaptiveHamiltonian(partition, build, reference, core=model.qm_atoms, scheme=settings.scheme,
                                      platform=context.platform, threads=context.threads, offsets=offsets)
    return hamiltonian, labels


def run(context: RunContext, settings: AdaptiveMDSettings) -> dict:
    """The ``adaptive_md`` protocol: MD (or resume) on the adaptive Hamiltonian, then plots and the record."""
    hamiltonian, labels = adaptive_model(context, settings)
    out = context.output
    files = {"topology": out / "topology.pdb", "trajectory": out / f"trajectory.{settings.trajectory_format}",
             "adaptive": out / "adaptive.csv", "exchanges": out / "exchanges.csv", "checkpoint": out / "checkpoint.npz"}
    topology = context.qmmm.topology
    resume = files["checkpoint"].exists()
    if resume:
        require_same_run(read_meta(files["checkpoint"]).get("identity"), context.identity, out)
    simulation = app.Simulation(topology, hamiltonian.system, single_step_integrator(settings),
                                openmm.Platform.getPlatformByName(context.platform),
                                reproducible_properties(context.platform, context.threads))
    start_step = 0
    if resume:
        start_step = int(read_checkpoint(files["checkpoint"], simulation.context, hamiltonian)["step"])
        simulation.currentStep = start_step
    else:
        _start(simulation.context, hamiltonian, context, settings, files)
    simulation.reporters += [
        trajectory_reporter(files["trajectory"], settings, resume, start_step, topology),
        AdaptiveReporter(files["adaptive"], files["exchanges"], settings.report_interval, hamiltonian, labels,
                         append=resume, resume_step=start_step),
        *([PollReporter(context.poll)] if context.poll is not None else []),
    ]
    wall = time.perf_counter()
    evaluations = hamiltonian.evaluations
    step = step_with_checkpoints(simulation, hamiltonian, steps=settings.steps,
                                 checkpoint_interval=settings.checkpoint_interval, checkpoint=files["checkpoint"],
                                 meta={"identity": context.identity}, progress=context.progress,
                                 label="adaptive QM/MM MD")
    wall = time.perf_counter() - wall
    return _write(context, settings, hamiltonian, files, step, start_step, wall, hamiltonian.evaluations - evaluations)


def _start(context: openmm.Context, hamiltonian: AdaptiveHamiltonian, run_context: RunContext,
           settings: AdaptiveMDSettings, files: dict[str, Path]) -> None:
    """Positions, box and velocities of a fresh run; the start structure and the step-0 checkpoint."""
    if run_context.box is not None:
        context.setPeriodicBoxVectors(*run_context.box)
    context.setPositions(run_context.positions)
    with hamiltonian.typed_errors():
        context.setVelocitiesToTemperature(settings.temperature_k * unit.kelvin, settings.seed or 0)
    state = context.getState(getPositions=True, enforcePeriodicBox=True)
    with open(files["topology"], "w") as handle:
        app.PDBFile.writeFile(run_context.qmmm.topology, state.getPositions(), handle)
    write_checkpoint(files["checkpoint"], context, hamiltonian, {"identity": run_context.identity, "step": 0})


def _write(context: RunContext, settings: AdaptiveMDSettings, hamiltonian: AdaptiveHamiltonian,
           files: dict[str, Path], step: int, start_step: int, wall: float, evaluations: int) -> dict:
    rows = read_rows(files["adaptive"])
    exchanges = read_exchanges(files["exchanges"])
    time_ps = np.array([r["time_ps"] for r in rows])
    total = np.array([r["total_kjmol"] for r in rows])
    dof = degrees_of_freedom(hamiltonian.system)
    drift, fluctuation = energy_drift(time_ps, total, dof) if len(rows) > 2 else (float("nan"), float("nan"))
    _plot(rows, exchanges, context.output, settings)
    entered = sum(1 for e in exchanges if e["after"] == "qm")
    figures = {
        **context.record,
        "scheme": settings.scheme,
        "hamiltonian": hamiltonian.hamiltonian,
        "groups": len(hamiltonian.partition.groups),
        "r_inner": quantity(settings.r_inner_nm, "nm"),
        "r_outer": quantity(settings.r_outer_nm, "nm"),
        "steps": step,
        "resumed_from_step": start_step,
        "simulated_time": quantity(step * settings.timestep_fs * 1e-3, "ps"),
        "mean_qm_groups": float(np.mean([r["qm_groups"] for r in rows])),
        "mean_buffer_groups": float(np.mean([r["buffer_groups"] for r in rows])),
        "max_buffer_groups_seen": int(max(r["buffer_groups"] + r["dropped_groups"] for r in rows)),
        "steps_over_buffer_cap": hamiltonian.capped_steps,
        "exchanges": len(exchanges),
        "groups_entering_qm": entered,
        "evaluations_per_step": quantity(evaluations / max(step - start_step, 1), "QM/MM evaluations"),
        "partition_models_built": hamiltonian.models.built,
        "energy_drift": quantity(drift, "kJ/mol/ns/dof"),
        "energy_fluctuation": quantity(fluctuation, "kJ/mol"),
        "degrees_of_freedom": dof,
        "wall_time_per_step": quantity(wall / max(step - start_step, 1), "s"),
        "note": ("energy-conserving scheme (permuted adaptive partitioning)" if hamiltonian.hamiltonian else
                 "force interpolation is not Hamiltonian: the drift is the scheme's, keep a thermostat on"),
        "files": sorted([p.name for p in files.values()] + ["region.png", "energy.png", "result.json",
                                                             "summary.txt"]),
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
    size.set_title(f"adaptive QM/MM ({settings.scheme}), buffer {settings.r_inner_nm}–{settings.r_outer_nm} nm",
                   fontsize="medium")
    for kind, marker in (("qm", "^"), ("buffer", "o"), ("mm", "v")):
        chosen = [e for e in exchanges if e["after"] == kind]
        distance.scatter([e["step"] * settings.timestep_fs * 1e-3 for e in chosen], [e["r_nm"] for e in chosen],
                         marker=marker, s=12, label=f"→ {kind}")
    for radius in (settings.r_inner_nm, settings.r_outer_nm):
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
