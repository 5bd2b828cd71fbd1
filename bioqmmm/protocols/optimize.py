"""QM/MM geometry optimisation with microiterations.

Macro cycles alternate two phases. *Environment*: every atom that is neither inner nor beyond
``freeze_beyond_nm`` is relaxed by OpenMM's L-BFGS minimiser with the inner atoms fixed and the
QM region represented by its Mulliken charges from the last QM calculation
(:mod:`bioqmmm.simulation.environment`), at MM cost; one QM/MM evaluation follows. *Inner*: the inner
atoms (QM atoms, link-atom MM hosts and their bonded neighbours, optionally every atom within
``active_radius_nm`` of the QM region) move by L-BFGS on the true QM/MM energy with the
environment fixed, until their forces are below the criterion; an uphill step is rejected and
the step length halved. Acceptance never compares energies across an environment relaxation,
which minimises an approximate (fixed-charge) model.

Forces are the ones that can do work under the System's distance constraints (the components
the constraints cancel are projected out), and every trial step is made to satisfy them.
Converged when an inner phase ends with the largest force on an inner atom below
``fmax_kjmol_nm`` and a last step that changed the energy by less than ``energy_change_kjmol``,
and the environment relaxation before it changed the QM/MM energy by less than that too. The
largest true QM/MM force on the environment is reported too (the environment is converged on
the fixed-charge model).
State (positions, iteration, history) is checkpointed after every accepted step; a rerun
resumes from it (the L-BFGS memory restarts).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bioqmmm.errors import BioQMMMError, CalculationError, InputError
from bioqmmm.protocols.context import RunContext
from bioqmmm.protocols.registry import Protocol
from bioqmmm.protocols.settings import Declared, setting
from bioqmmm.results import new_figure, quantity, write_pdb_models, write_results
from bioqmmm.simulation.checkpoint import save_arrays
from bioqmmm.simulation.environment import (
    ConstraintProjector,
    frozen_atoms,
    inner_atoms,
    qm_charges_on_atoms,
    relax_environment,
)
from bioqmmm.simulation.identity import require_same_run
from bioqmmm.simulation.optimizers import LBFGS

#: ``phase`` column of the history: a QM/MM step after an environment relaxation, or an inner L-BFGS step.
ENVIRONMENT_PHASE, INNER_PHASE = 0, 1
#: An inner step may raise the energy by this much (kJ/mol) and still count as downhill: SCF
#: convergence noise at conv_tol 1e-9 Eh is ~3e-6 kJ/mol, and steps near the minimum gain less.
UPHILL_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ActiveRegionKeys(Declared):
    """Keys of every protocol that moves the QM region with a relaxing MM environment (optimize, neb)."""

    active_radius_nm: float = setting(0.0, doc="atoms this close to the QM region move with it",
                                      check="non_negative")
    freeze_beyond_nm: float | None = setting(None, doc="atoms farther from the QM region stay fixed",
                                             check="positive")
    mm_tolerance_kjmol_nm: float = setting(1.0, doc="RMS force at which an environment relaxation stops",
                                           check="positive")


@dataclass(frozen=True)
class OptimizeSettings(ActiveRegionKeys):
    """QM/MM geometry optimisation with microiterations (module docstring)."""

    fmax_kjmol_nm: float = setting(25.0, doc="converged when the largest inner-atom force is below this",
                                   check="positive")
    energy_change_kjmol: float = setting(0.5, doc="… and the last step changed the energy by less",
                                         check="positive")
    max_steps: int = setting(200, doc="accepted QM/MM steps at most (a rerun with more continues)",
                             check="positive_int")
    microiterations: bool = setting(True, doc="relax the MM environment between QM/MM phases")
    max_step_nm: float = setting(0.02, doc="longest step of any atom", check="positive")
    inner_steps_per_cycle: int = setting(20, doc="inner steps before the environment is relaxed again",
                                         check="positive_int")


@dataclass
class OptimizationOutcome:
    """Result of :func:`run_optimization` (energies kJ/mol, forces kJ/mol/nm, positions nm)."""

    converged: bool
    iterations: int
    qm_evaluations: int
    mm_relaxation_steps: int
    initial_energy: float
    final_energy: float
    max_force_inner: float
    max_force_environment: float
    positions: np.ndarray
    history: list[dict] = field(default_factory=list)
    microiterations: bool = True

    def figures(self) -> dict:
        """Key figures for ``result.json``."""
        return {
            "converged": self.converged,
            "microiterations": self.microiterations,
            "iterations": self.iterations,
            "qm_evaluations": self.qm_evaluations,
            "mm_relaxation_steps": self.mm_relaxation_steps,
            "initial_energy": quantity(self.initial_energy, "kJ/mol"),
            "final_energy": quantity(self.final_energy, "kJ/mol"),
            "energy_change": quantity(self.final_energy - self.initial_energy, "kJ/mol"),
            "max_force_inner_atoms": quantity(self.max_force_inner, "kJ/mol/nm"),
            "max_force_environment": quantity(self.max_force_environment, "kJ/mol/nm"),
        }


def _max_atom_force(forces: np.ndarray, atoms: np.ndarray) -> float:
    return float(np.linalg.norm(forces[atoms], axis=1).max()) if len(atoms) else 0.0


def run_optimization(
    qmmm,
    positions: np.ndarray,
    settings: OptimizeSettings,
    outdir: str | Path,
    *,
    box: np.ndarray | None = None,
    platform: str = "CPU",
    identity: str = "",
    progress: bool = True,
    poll: Callable[[], None] | None = None,
    atoms: tuple[np.ndarray, np.ndarray] | None = None,
) -> OptimizationOutcome:
    """Optimise ``positions`` (nm) of ``qmmm``; write the history, the final structure and plots to ``outdir``.

    ``identity`` names the model and settings; a checkpoint in ``outdir`` with another one is refused.
    ``poll`` is called after every recorded step and may raise to stop (the replica runner's abort).
    ``atoms`` = (inner, frozen) index arrays replace the ones ``settings`` would choose from ``positions``
    (so that two structures are optimised with the same atoms free).
    """
    from tqdm import tqdm

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "optimization_checkpoint.npz"
    x = np.array(positions, dtype=float)
    history: list[dict] = []
    if checkpoint.exists():
        try:
            with np.load(checkpoint, allow_pickle=False) as data:
                same_atoms = data["positions"].shape == x.shape
                require_same_run(str(data["identity"]) if same_atoms else None, identity, out,
                                 "optimisation checkpoint")
                x = np.array(data["positions"])
                history = [dict(zip(data["history_keys"].tolist(), row, strict=True)) for row in data["history"]]
        except InputError:
            raise
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"cannot read {checkpoint}: {exc}") from exc
    if atoms is None:
        inner = inner_atoms(qmmm, x, settings.active_radius_nm)
        frozen = frozen_atoms(qmmm, x, settings.freeze_beyond_nm)
    else:
        inner, frozen = (np.asarray(a, dtype=int) for a in atoms)
    environment = np.setdiff1d(np.arange(len(x)), np.concatenate([inner, frozen]))
    moving_env = len(environment) > 0 and settings.microiterations
    qm_calls = qmmm.kernel.evaluations
    mm_calls = int(history[-1]["mm_steps"]) if history else 0

    projector = ConstraintProjector(qmmm.system)

    def evaluate(coords):
        """Energy and the forces that can do work under the constraints."""
        try:
            energy, forces = qmmm.energy_and_forces(coords, box)
        except BioQMMMError as exc:
            raise CalculationError(f"optimisation step {len(history)}: {exc}") from exc
        return energy, projector(forces, coords)

    energy, forces = evaluate(x)
    if not history:
        history.append(_row(0, energy, forces, inner, environment, mm_calls, 0.0, ENVIRONMENT_PHASE))
    initial_energy = float(history[0]["energy"])
    converged = False
    start = time.perf_counter()
    fmax = settings.fmax_kjmol_nm

    def record(step_length: float, phase: int) -> None:
        history.append(_row(len(history), energy, forces, inner, environment, mm_calls, step_length, phase))
        _save_checkpoint(checkpoint, x, history, identity)
        bar.update(1)
        bar.set_postfix(E=f"{energy:.2f}", fmax=f"{history[-1]['fmax_inner']:.1f}")
        if poll is not None:
            poll()

    with tqdm(total=settings.max_steps, initial=len(history) - 1, unit="step", disable=not progress,
              desc="QM/MM optimisation") as bar:
        while len(history) - 1 < settings.max_steps:
            # environment phase: relax everything outer in the field of the frozen QM charges
            env_change = 0.0
            if moving_env:
                relaxed, calls = relax_environment(
                    qmmm, x, qm_charges=qm_charges_on_atoms(qmmm), frozen=np.concatenate([inner, frozen]),
                    tolerance=settings.mm_tolerance_kjmol_nm, box=box, platform=platform,
                )
                mm_calls += calls
                before = energy
                energy, forces = evaluate(relaxed)
                x, env_change = relaxed, energy - before
                record(0.0, ENVIRONMENT_PHASE)
            # inner phase: L-BFGS on the inner atoms, environment fixed, on the true QM/MM energy
            lbfgs, max_step = LBFGS(), settings.max_step_nm
            previous = energy if _max_atom_force(forces, inner) < fmax else np.inf  # already there: no step needed
            cycle_end = len(history) + settings.inner_steps_per_cycle if moving_env else np.inf
            while len(history) - 1 < settings.max_steps and len(history) < cycle_end:
                if _max_atom_force(forces, inner) < fmax and abs(previous - energy) < settings.energy_change_kjmol:
                    break
                step = lbfgs.direction(-forces[inner].ravel()).reshape(-1, 3)
                longest = np.linalg.norm(step, axis=1).max()
                step *= min(1.0, max_step / longest)
                trial = x.copy()
                trial[inner] += step
                trial = qmmm.constrained(trial, box)
                trial_energy, trial_forces = evaluate(trial)
                if trial_energy > energy + UPHILL_TOLERANCE:  # uphill: shorter steps, fresh curvature
                    max_step *= 0.5
                    lbfgs = LBFGS()
                    if max_step < 1e-6:
                        break
                    continue
                lbfgs.update((trial[inner] - x[inner]).ravel(), (forces[inner] - trial_forces[inner]).ravel())
                taken = float(min(longest, max_step))
                max_step = min(settings.max_step_nm, max_step * 1.5)
                previous = energy
                x, energy, forces = trial, trial_energy, trial_forces
                record(taken, INNER_PHASE)
            inner_done = _max_atom_force(forces, inner) < fmax and abs(previous - energy) < settings.energy_change_kjmol
            if not moving_env or (inner_done and abs(env_change) < settings.energy_change_kjmol):
                converged = inner_done
                break
    _save_checkpoint(checkpoint, x, history, identity)  # also when no step was needed
    outcome = OptimizationOutcome(
        converged=converged,
        iterations=len(history) - 1,
        qm_evaluations=qmmm.kernel.evaluations - qm_calls,
        mm_relaxation_steps=mm_calls,
        initial_energy=initial_energy,
        final_energy=float(energy),
        max_force_inner=_max_atom_force(forces, inner),
        max_force_environment=_max_atom_force(forces, environment),
        positions=x,
        history=history,
        microiterations=settings.microiterations,
    )
    _write_files(out, qmmm, outcome, box, time.perf_counter() - start)
    return outcome


def _row(iteration, energy, forces, inner, environment, mm_calls, step, phase) -> dict:
    return {
        "iteration": iteration,
        "phase": phase,
        "energy": float(energy),
        "fmax_inner": _max_atom_force(forces, inner),
        "fmax_environment": _max_atom_force(forces, environment),
        "mm_steps": mm_calls,
        "step_nm": step,
    }


def _save_checkpoint(path: Path, positions: np.ndarray, history: list[dict], identity: str) -> None:
    keys = list(history[0])
    save_arrays(path, {"positions": positions, "identity": np.array(identity), "history_keys": np.array(keys),
                       "history": np.array([[row.get(k, 0.0) for k in keys] for row in history], dtype=float)})


def _write_files(out: Path, qmmm, outcome: OptimizationOutcome, box, wall: float) -> None:
    with open(out / "optimization.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(outcome.history[0]), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(outcome.history)
    write_pdb_models(out / "optimized.pdb", qmmm.topology, [outcome.positions], box, centre_atoms=qmmm.qm_atoms)
    iterations = [row["iteration"] for row in outcome.history]
    fig, (energy, force) = new_figure(2, 2.6)
    energy.plot(iterations, [row["energy"] - outcome.initial_energy for row in outcome.history], marker="o")
    energy.set_ylabel("E − E$_0$ / kJ mol$^{-1}$")
    energy.set_title(f"QM/MM optimisation ({wall:.0f} s)", fontsize="medium")
    force.semilogy(iterations, [row["fmax_inner"] for row in outcome.history], marker="o", label="inner atoms")
    force.set_ylabel("max |F| / kJ mol$^{-1}$ nm$^{-1}$")
    force.set_xlabel("QM/MM step")
    force.legend(fontsize="small")
    fig.savefig(out / "optimization.png", dpi=120)


def run(context: RunContext, settings: OptimizeSettings) -> dict:
    """The ``optimize`` protocol: :func:`run_optimization` into the output folder, then the record."""
    outcome = run_optimization(context.qmmm, context.positions, settings, context.output, box=context.box,
                               platform=context.platform, progress=context.progress, identity=context.identity,
                               poll=context.poll)
    return write_results(context.output, "optimize", {**context.record, **outcome.figures()})


PROTOCOL = Protocol("optimize", "QM/MM geometry optimisation with microiterations of the MM environment",
                    OptimizeSettings, run, length_keys=("max_steps",))
