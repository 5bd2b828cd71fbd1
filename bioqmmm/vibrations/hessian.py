"""Hessian blocks by central differences of analytic forces, and Hessian–vector products.

For displacements ±h of coordinate j of an active atom, column j of the block of rows R is

    H_Rj = −[F_R(x + h e_j) − F_R(x − h e_j)] / 2h,

with O(h²) error; the rows may be the active atoms (H_AA) and any others (H_EA) at no extra cost, and
an observable o(x) evaluated after each force call (the QM dipole) gives its derivative column
(o₊ − o₋)/2h. A product with the environment block, H_EE v, is the same difference along v. Columns
are shared out over the ranks of a communicator. Units: nm, kJ/mol, kJ/mol/nm².
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bioqmmm.errors import BioQMMMError, CalculationError
from bioqmmm.parallel.comm import SerialComm

#: Central-difference displacement for Hessians, nm (0.005 Å).
HESSIAN_STEP = 5e-4

Evaluate = Callable[[np.ndarray], tuple[float, np.ndarray]]


@dataclass
class DisplacementColumns:
    """``block`` (3·len(rows), 3·len(atoms)): −∂F_rows/∂x_atoms, kJ/mol/nm² (not symmetrised);
    ``observed`` (k, 3·len(atoms)): ∂o/∂x_atoms of the observable, or None."""

    block: np.ndarray
    observed: np.ndarray | None


def displacement_columns(evaluate: Evaluate, positions: np.ndarray, atoms, rows=None, *,
                         step: float = HESSIAN_STEP, comm=None,
                         observe: Callable[[], np.ndarray] | None = None) -> DisplacementColumns:
    """Central differences of the forces on ``rows`` (default ``atoms``) over displacements of ``atoms``.

    ``observe()`` is called after each ``evaluate`` and returns an array (e.g. the QM dipole, e nm).
    With a communicator the 3·len(atoms) columns are shared out among its ranks; every rank returns the
    whole block, and a failure on any rank is raised on all of them."""
    comm = comm or SerialComm()
    atoms = np.asarray(atoms, dtype=int)
    rows = atoms if rows is None else np.asarray(rows, dtype=int)
    local: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    error = None
    for column in range(comm.rank, 3 * len(atoms), comm.size):
        atom, axis = atoms[column // 3], column % 3
        forces, seen = [], []
        try:
            for sign in (1, -1):
                x = np.array(positions, dtype=float)
                x[atom, axis] += sign * step
                forces.append(evaluate(x)[1][rows].ravel())
                if observe is not None:
                    seen.append(np.asarray(observe(), dtype=float).ravel())
        except Exception as exc:  # every rank must learn of it, or the others wait forever
            error = exc
            break
        local[column] = (-(forces[0] - forces[1]) / (2 * step),
                         (seen[0] - seen[1]) / (2 * step) if seen else None)
    block = np.empty((3 * len(rows), 3 * len(atoms)))
    observed = None
    for part, part_error in comm.allgather((local, None if error is None else _describe(error))):
        if part_error is not None:
            raise error if error is not None else CalculationError(f"Hessian by finite differences: {part_error}")
        for column, (values, derivative) in part.items():
            block[:, column] = values
            if derivative is not None:
                if observed is None:
                    observed = np.empty((len(derivative), 3 * len(atoms)))
                observed[:, column] = derivative
    return DisplacementColumns(block, observed)


def _describe(error: Exception) -> str:
    return str(error) if isinstance(error, BioQMMMError) else repr(error)


def symmetrised(matrix: np.ndarray) -> np.ndarray:
    """(M + Mᵀ)/2."""
    return 0.5 * (matrix + matrix.T)


def finite_difference_hessian(evaluate: Evaluate, positions: np.ndarray, atoms, step: float = HESSIAN_STEP,
                              comm=None) -> np.ndarray:
    """Hessian (3n, 3n) of the ``atoms`` by central differences of the forces, symmetrised (kJ/mol/nm²)."""
    return symmetrised(displacement_columns(evaluate, positions, atoms, step=step, comm=comm).block)


def hessian_vector_product(forces_on: Callable[[np.ndarray], np.ndarray], positions: np.ndarray, atoms,
                           step: float = HESSIAN_STEP, order: int = 2, rows=None) -> Callable[[np.ndarray], np.ndarray]:
    """v ↦ H v for the block of ``atoms`` (v of length 3n; the rows of ``rows`` atoms, default ``atoms``):
    difference of ``forces_on(x)`` (forces (N, 3) kJ/mol/nm) along v/|v| with a largest atom displacement of
    ``step`` nm; ``order`` 2: central, −[F(h) − F(−h)]/2h (2 force calls), 4: five-point,
    −[8F(h) − 8F(−h) − F(2h) + F(−2h)]/12h (4 calls)."""
    atoms = np.asarray(atoms, dtype=int)
    rows = atoms if rows is None else np.asarray(rows, dtype=int)
    stencil = {2: ((1, 0.5),), 4: ((1, 2 / 3), (2, -1 / 12))}[order]

    def product(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=float).ravel()
        size = np.linalg.norm(v.reshape(-1, 3), axis=1).max()
        if size == 0:
            return np.zeros(3 * len(rows))
        direction = (v / size).reshape(-1, 3)
        result = np.zeros(3 * len(rows))
        for multiple, weight in stencil:
            plus, minus = np.array(positions, dtype=float), np.array(positions, dtype=float)
            plus[atoms] += multiple * step * direction
            minus[atoms] -= multiple * step * direction
            result -= weight * (forces_on(plus)[rows] - forces_on(minus)[rows]).ravel()
        return result / step * size

    return product


def rigid_body_modes(positions: np.ndarray) -> np.ndarray:
    """Orthonormal translation and rotation vectors (k, 3N) of ``positions`` (N, 3); k = 6, or 5 if linear."""
    centred = positions - positions.mean(axis=0)
    modes = [np.tile(np.eye(3)[a], len(positions)) for a in range(3)]
    modes += [np.cross(np.eye(3)[a], centred).ravel() for a in range(3)]
    q, r = np.linalg.qr(np.array(modes).T)
    return q[:, np.abs(np.diag(r)) > 1e-8 * np.abs(r).max()].T


def without_rigid_body_modes(hessian: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """P H P with P = 1 − R Rᵀ, R the rigid-body modes of ``positions`` (Cartesian, unweighted)."""
    modes = rigid_body_modes(positions)
    projector = np.eye(len(hessian)) - modes.T @ modes
    return projector @ hessian @ projector
