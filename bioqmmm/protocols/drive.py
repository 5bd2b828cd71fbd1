"""A structure driven along distances: restrained optimisations, e.g. to make a product from the reactant.

Harmonic restraints ½ k (r_ij − r_target)² on atom pairs are added to the QM/MM energy, and the
targets are approached in stages of at most :data:`STAGE_NM` change per pair, each stage a
restrained microiterative optimisation (:func:`bioqmmm.protocols.optimize.run_optimization`) into its
own folder (so a rerun resumes). The result is a guess: optimise it without restraints afterwards.
Distances in nm (minimum image in a box), k in kJ/mol/nm².
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bioqmmm.errors import InputError
from bioqmmm.protocols.optimize import OptimizeSettings, run_optimization
from bioqmmm.units import minimum_image

#: Largest change of a restrained distance per stage, nm.
STAGE_NM = 0.05


class Restrained:
    """``qmmm`` with harmonic distance restraints added to :meth:`energy_and_forces`; every other
    attribute is the wrapped model's."""

    def __init__(self, qmmm, pairs: Sequence[tuple[int, int]], targets: Sequence[float], k: float) -> None:
        self._qmmm = qmmm
        self.pairs = np.asarray(pairs, dtype=int).reshape(-1, 2)
        self.targets = np.asarray(targets, dtype=float)
        self.k = k

    def __getattr__(self, name: str):
        return getattr(self._qmmm, name)

    def energy_and_forces(self, positions, box_vectors=None) -> tuple[float, np.ndarray]:
        energy, forces = self._qmmm.energy_and_forces(positions, box_vectors)
        x = np.asarray(positions)
        for (i, j), target in zip(self.pairs, self.targets, strict=True):
            delta = _minimum_image(x[i] - x[j], box_vectors)
            r = np.linalg.norm(delta)
            energy += 0.5 * self.k * (r - target) ** 2
            push = self.k * (r - target) * delta / r
            forces[i] -= push
            forces[j] += push
        return energy, forces


def _minimum_image(delta: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    return delta if box is None else minimum_image(delta, np.asarray(box))


def distances(positions: np.ndarray, pairs: np.ndarray, box: np.ndarray | None = None) -> np.ndarray:
    """Distances (nm) of atom ``pairs`` (minimum image in ``box``)."""
    return np.array([np.linalg.norm(_minimum_image(positions[i] - positions[j], box)) for i, j in pairs])


def check_restrained_atoms(qmmm, pairs) -> None:
    """Driven distances must join QM atoms (the MM force field has no bonds to make or break)."""
    qm = set(qmmm.qm_atoms)
    outside = sorted({int(a) for a in np.ravel(pairs) if int(a) not in qm})
    if outside:
        raise InputError(f"restrained atoms must be QM atoms; atom(s) {outside} are not")


def drive(qmmm, positions: np.ndarray, pairs: Sequence[tuple[int, int]], targets: Sequence[float], k: float,
          settings: OptimizeSettings, folder: str | Path, *, box: np.ndarray | None = None, platform: str = "CPU",
          identity: str = "", poll=None, atoms: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``positions`` (nm) driven until each pair's distance is near its target; restrained-optimised stages
    (``atoms``: explicit (inner, frozen) atoms, as for :func:`~bioqmmm.protocols.optimize.run_optimization`)."""
    pairs = np.asarray(pairs, dtype=int).reshape(-1, 2)
    check_restrained_atoms(qmmm, pairs)
    start = distances(positions, pairs, box)
    targets = np.asarray(targets, dtype=float)
    n_stages = max(1, int(np.ceil(np.abs(targets - start).max() / STAGE_NM)))
    x = np.array(positions, dtype=float)
    for stage in range(1, n_stages + 1):
        goal = start + (targets - start) * stage / n_stages
        outcome = run_optimization(
            Restrained(qmmm, pairs, goal, k), x, settings, Path(folder) / f"stage_{stage:02d}", box=box,
            platform=platform, identity=f"{identity}-{stage}", progress=False, poll=poll, atoms=atoms,
        )
        x = outcome.positions
    return x
