"""The nudged elastic band: tangents, band forces and the optimisation loop.

Improved tangent (Henkelman & Jónsson, J. Chem. Phys. 113, 9978 (2000)): at image i the tangent
is τ⁺ = R_{i+1} − R_i where V_{i+1} > V_i > V_{i−1}, τ⁻ = R_i − R_{i−1} where V_{i+1} < V_i < V_{i−1},
and at an extremum τ⁺ ΔV_max + τ⁻ ΔV_min (or the other weighting when V_{i+1} < V_{i−1}),
normalised. The band force on the path atoms is

    F_i = F_i^true − (F_i^true·τ) τ + k (|R_{i+1} − R_i| − |R_i − R_{i−1}|) τ,

and on the climbing image (Henkelman, Uberuaga & Jónsson, J. Chem. Phys. 113, 9901 (2000)), the
highest interior image, F = F^true − 2 (F^true·τ) τ with no spring. Atoms that move without
springs (a restrained environment) feel their true force plus the model's extra forces.
Converged when the largest force on one atom of an interior image is below ``fmax``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bioqmmm.errors import InputError
from bioqmmm.paths.models import PathModel
from bioqmmm.simulation.checkpoint import save_arrays
from bioqmmm.simulation.identity import require_same_run
from bioqmmm.simulation.optimizers import FIRE


def tangents(path: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """Unit tangents (n − 2, D) at the interior images of ``path`` (n, D) with ``energies`` (n,)."""
    result = np.empty((len(path) - 2, path.shape[1]))
    for i in range(1, len(path) - 1):
        plus, minus = path[i + 1] - path[i], path[i] - path[i - 1]
        v_prev, v, v_next = energies[i - 1], energies[i], energies[i + 1]
        if v_next > v > v_prev:
            tau = plus
        elif v_next < v < v_prev:
            tau = minus
        else:
            big = max(abs(v_next - v), abs(v_prev - v))
            small = min(abs(v_next - v), abs(v_prev - v))
            tau = plus * big + minus * small if v_next > v_prev else plus * small + minus * big
        norm = np.linalg.norm(tau)
        result[i - 1] = tau / norm if norm > 0 else tau
    return result


def band_forces(path: np.ndarray, energies: np.ndarray, true_forces: np.ndarray, spring: float,
                climbing: int | None) -> np.ndarray:
    """Band forces (n − 2, D) on the interior images; ``true_forces`` (n − 2, D); ``climbing`` is the
    index (in 0..n−1) of the climbing image or None."""
    tau = tangents(path, energies)
    parallel = np.einsum("ij,ij->i", true_forces, tau)
    lengths = np.linalg.norm(np.diff(path, axis=0), axis=1)
    forces = true_forces - parallel[:, None] * tau + (spring * (lengths[1:] - lengths[:-1]))[:, None] * tau
    if climbing is not None:
        k = climbing - 1
        forces[k] = true_forces[k] - 2 * parallel[k] * tau[k]
    return forces


def path_length(path: np.ndarray) -> np.ndarray:
    """Cumulative length along ``path`` (n, D) from its first image."""
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])


@dataclass
class BandState:
    """Everything a run needs to continue: positions (n, N, 3), the restraint reference, iteration,
    optimiser state, the endpoint energies and the history of iterations."""

    positions: np.ndarray
    reference: np.ndarray
    iteration: int = 0
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)
    endpoint_energies: np.ndarray | None = None
    relaxed_at: int = -1
    history: list[dict[str, float]] = field(default_factory=list)

    def save(self, path: Path, identity: str) -> None:
        """Atomically write the state (``.npz``) with the run's identity."""
        keys = list(self.history[0]) if self.history else []
        arrays = {
            "identity": np.array(identity),
            "positions": self.positions,
            "reference": self.reference,
            "scalars": np.array([self.iteration, self.relaxed_at]),
            "endpoint_energies": np.array([] if self.endpoint_energies is None else self.endpoint_energies),
            "history_keys": np.array(keys),
            "history": np.array([[row[k] for k in keys] for row in self.history], dtype=float),
            **{f"optimizer_{k}": v for k, v in self.optimizer.items()},
        }
        save_arrays(path, arrays)

    @classmethod
    def load(cls, path: Path, identity: str, shape: tuple[int, ...]) -> BandState:
        """The state saved at ``path``; refused if it belongs to another run."""
        try:
            with np.load(path, allow_pickle=False) as data:
                same_images = data["positions"].shape == shape
                require_same_run(str(data["identity"]) if same_images else None, identity, path.parent,
                                 "band checkpoint")
                keys = data["history_keys"].tolist()
                iteration, relaxed_at = (int(v) for v in data["scalars"])
                energies = data["endpoint_energies"]
                return cls(
                    positions=np.array(data["positions"]),
                    reference=np.array(data["reference"]),
                    iteration=iteration,
                    optimizer={k[len("optimizer_"):]: np.array(data[k]) for k in data.files
                               if k.startswith("optimizer_")},
                    endpoint_energies=np.array(energies) if len(energies) else None,
                    relaxed_at=relaxed_at,
                    history=[dict(zip(keys, map(float, row), strict=True)) for row in data["history"]],
                )
        except InputError:
            raise
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"cannot read the band checkpoint {path}: {exc}") from exc


@dataclass
class BandOutcome:
    """Final band: positions (n, N, 3), energies (n,) and true forces (n, N, 3), band forces on the
    moving atoms of each interior image, the largest per image, and how the run went."""

    positions: np.ndarray
    energies: np.ndarray
    forces: np.ndarray
    max_forces: np.ndarray
    climbing: int | None
    converged: bool
    iterations: int
    resumed_from: int
    history: list[dict[str, float]]


def relax_band(
    model: PathModel,
    positions: np.ndarray,
    *,
    fmax: float,
    spring: float,
    climb: bool = True,
    max_iterations: int = 500,
    max_step: float = 0.01,
    relax_every: int = 10,
    checkpoint: str | Path | None = None,
    identity: str = "",
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> BandOutcome:
    """Optimise the interior images of the band ``positions`` (n, N, 3) on ``model``.

    ``fmax``: force criterion (energy/length units of the model); ``spring``: spring constant
    (energy/length²); ``max_step``: largest displacement of one atom per iteration (length).
    The optimiser is FIRE (:class:`~bioqmmm.simulation.optimizers.FIRE`; docs/neb.md says why not L-BFGS).
    ``relax_every``: a model with an environment to relax (``model.relaxes``) relaxes it every
    this many iterations and before declaring convergence. ``checkpoint``: a ``.npz`` file
    written after every iteration; when it exists (same ``identity``), the run continues from it.
    ``callback(iteration, row)`` is called after every iteration and may raise to stop.
    Under MPI every rank runs this loop on the same numbers (``model.agree`` makes the positions
    identical after each step); only ``model.writes_files`` ranks write the checkpoint.
    """
    positions = np.array(positions, dtype=float)
    n_images = len(positions)
    if n_images < 3:
        raise InputError(f"a band needs at least 3 images (2 endpoints and one to move), got {n_images}")
    interior = list(range(1, n_images - 1))
    path_file = None if checkpoint is None else Path(checkpoint)
    if path_file is not None and path_file.exists():
        state = BandState.load(path_file, identity, positions.shape)
        if state.history and state.history[-1]["iteration"] == state.iteration:
            state.history.pop()  # a finished run's last row: it is evaluated again below
    else:
        for i in interior:  # a straight line between rigid molecules bends them: start on the constraints
            positions[i] = model.constrain(positions[i])
        positions = model.agree(positions)
        state = BandState(positions=positions, reference=positions.copy())
    save = path_file is not None and model.writes_files
    resumed_from = state.iteration
    moving, n_path = model.moving_atoms, len(model.path_atoms)
    stepper = FIRE(first_step=max_step)
    stepper.set_state(state.optimizer)

    if state.endpoint_energies is None:
        state.endpoint_energies, _ = model.evaluate(state.positions, [0, n_images - 1])
    if model.relaxes and state.iteration == 0 and state.relaxed_at < 0:
        state.positions = model.relax(state.positions, interior)
        state.relaxed_at = 0
    converged = False
    while True:
        energies_inner, forces_inner = model.evaluate(state.positions, interior)
        energies = np.concatenate([[state.endpoint_energies[0]], energies_inner, [state.endpoint_energies[1]]])
        climbing = int(np.argmax(energies_inner)) + 1 if climb else None
        flat = _band_force_vectors(model, state, energies, forces_inner, spring, climbing, n_path, moving)
        per_image = np.linalg.norm(flat.reshape(len(interior), -1, 3), axis=2).max(axis=1)
        row = {"iteration": float(state.iteration), "max_force": float(per_image.max()),
               "max_energy": float(energies.max() - energies[0]), "climbing": float(climbing or -1)}
        if callback is not None:
            callback(state.iteration, row)
        done = per_image.max() < fmax
        if done and (not model.relaxes or state.relaxed_at == state.iteration):
            converged = True
            break
        if state.iteration >= max_iterations:
            break
        relax_now = model.relaxes and (done or (state.iteration - state.relaxed_at) >= relax_every)
        state.history.append(row)
        state.iteration += 1
        if relax_now:  # environment relaxed; the band stays where it is, the optimiser forgets its momentum
            state.positions = model.relax(state.positions, interior)
            state.relaxed_at = state.iteration
            stepper.reset_velocity()
        else:
            step = stepper.step(flat, float(per_image.max()))
            longest = np.linalg.norm(step.reshape(-1, 3), axis=1).max()
            step *= min(1.0, max_step / longest) if longest > 0 else 1.0
            state.positions[1:-1, moving] += step.reshape(len(interior), len(moving), 3)
            for i in interior:
                state.positions[i] = model.constrain(state.positions[i])
            state.positions = model.agree(state.positions)
        state.optimizer = stepper.get_state()
        if save:
            state.save(path_file, identity)
    state.history.append(row)
    if save:
        state.save(path_file, identity)
    forces = np.zeros_like(state.positions)
    forces[1:-1] = forces_inner
    return BandOutcome(
        positions=state.positions,
        energies=energies,
        forces=forces,
        max_forces=np.concatenate([[0.0], per_image, [0.0]]),
        climbing=climbing,
        converged=converged,
        iterations=state.iteration,
        resumed_from=resumed_from,
        history=state.history,
    )


def _band_force_vectors(model, state, energies, forces_inner, spring, climbing, n_path, moving) -> np.ndarray:
    """Flat band forces on the moving atoms of all interior images."""
    path_atoms = moving[:n_path]
    path = state.positions[:, path_atoms].reshape(len(state.positions), -1)
    true_path = forces_inner[:, path_atoms].reshape(len(forces_inner), -1)
    on_path = band_forces(path, energies, true_path, spring, climbing).reshape(len(forces_inner), n_path, 3)
    if len(moving) == n_path:
        return on_path.reshape(-1)
    others = moving[n_path:]
    extra = np.array([model.extra_forces(state.positions[i], state.reference[i]) for i in range(1, len(energies) - 1)])
    return np.concatenate([on_path, forces_inner[:, others] + extra], axis=1).reshape(-1)
