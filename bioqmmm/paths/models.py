"""What a band of images is evaluated on: a :class:`PathModel`.

A model knows the whole system (N atoms), which of them the path runs through (``path_atoms``:
springs and tangents act on these), which more move with the band (``moving_atoms``), and returns
energies and forces of any set of images. :class:`FunctionModel` wraps a plain function of the
positions (analytic surfaces); :class:`bioqmmm.paths.qmmm_images.QMMMImages` evaluates a QM/MM
model, over MPI ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Potential = Callable[[np.ndarray], tuple[float, np.ndarray]]


class PathModel:
    """Base class: every atom is a path atom, nothing is constrained, there is no environment to relax."""

    n_atoms: int
    path_atoms: np.ndarray
    #: Whether :meth:`relax` moves anything (the band then converges only right after a relaxation).
    relaxes: bool = False
    #: Whether this process writes the band's files (one rank of several does).
    writes_files: bool = True

    @property
    def moving_atoms(self) -> np.ndarray:
        """Atoms the optimiser moves: the path atoms first, then any that move without springs."""
        return self.path_atoms

    def evaluate(self, positions: np.ndarray, images: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Energies (len(images),) and forces (len(images), N, 3) of ``positions[images]``."""
        raise NotImplementedError

    def extra_forces(self, positions: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Forces that act besides the band's on the moving atoms without springs (default none)."""
        return np.zeros((len(self.moving_atoms) - len(self.path_atoms), 3))

    def constrain(self, positions: np.ndarray) -> np.ndarray:
        """One image's positions made to satisfy the model's constraints (default: unchanged)."""
        return positions

    def relax(self, positions: np.ndarray, images: Sequence[int]) -> np.ndarray:
        """The band with the environment of ``images`` relaxed (default: unchanged)."""
        return positions

    def agree(self, positions: np.ndarray) -> np.ndarray:
        """The band as every process holds it (one process: as it is)."""
        return positions


class FunctionModel(PathModel):
    """A band on ``potential(x) -> (energy, forces)`` with x of shape (N, 3), the same for every image;
    or ``potential(x, image)`` when ``per_image`` (e.g. IDPP, whose target differs per image)."""

    def __init__(self, potential: Callable, n_atoms: int, path_atoms: Sequence[int] | None = None,
                 per_image: bool = False) -> None:
        self.potential = potential
        self.n_atoms = n_atoms
        self.path_atoms = np.arange(n_atoms) if path_atoms is None else np.asarray(path_atoms, dtype=int)
        self.per_image = per_image

    def evaluate(self, positions: np.ndarray, images: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        results = [self.potential(positions[i], i) if self.per_image else self.potential(positions[i]) for i in images]
        return np.array([e for e, _ in results], dtype=float), np.array([f for _, f in results], dtype=float)
