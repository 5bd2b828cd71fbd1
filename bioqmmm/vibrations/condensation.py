"""Static condensation of an environment E onto an active block A.

At fixed active coordinates the environment relaxes to its minimum, and the curvature left on A is the
Schur complement (Guyan reduction; for QM/MM, e.g. Ghysels et al., J. Chem. Phys. 126, 224102 (2007))

    H_eff = H_AA − H_AE H_EE⁻¹ H_EA,

equal to [(H⁻¹)_AA]⁻¹ when H is invertible. H_EE is never formed or inverted: each column X_j of
X = H_EE⁻¹ H_EA is a linear solve by MINRES (Paige & Saunders 1975; symmetric, indefinite allowed)
that needs only products H_EE v, here differences of environment forces, so memory stays O(3n_E) beyond
the small blocks of the preconditioner: H_EE is stiff inside molecules and soft between them (condition
numbers ~10⁴–10⁵ for water), which inexact products cannot survive, so MINRES is preconditioned by the
inverse of its block diagonal, one block per molecule (residue), found together by displacing the same
atom of every residue of one colour at once (Curtis–Powell–Reid probing), residues of one colour being
at least ``PROBE_SEPARATION`` apart: 6·(atoms of the largest residue)·(colours) force differences. The
weak cross terms left in a block only weaken the preconditioner; bonded neighbours never share a colour.
The partial Hessian (PHVA; Li & Jensen, Theor. Chem. Acc. 107, 211 (2002)) is H_AA alone (an
infinitely heavy environment). Units: kJ/mol/nm².
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import LinearOperator, minres

from bioqmmm.errors import CalculationError
from bioqmmm.vibrations.hessian import HESSIAN_STEP, symmetrised

#: Relative residual |H_EE x − b| / |b| at which a column's solve stops, and the largest accepted: products
#: from force differences are linear only to ~1e-5 (O(h²) terms, SCF noise), which the soft intermolecular
#: curvatures amplify into a floor of ~1e-3 under the residual of a solve (measured on a QM water in MM water).
SOLVE_TOLERANCE, ACCEPTED_RESIDUAL = 1e-8, 1e-2


@dataclass
class Condensation:
    """``hessian`` (3n_A, 3n_A) H_eff; ``products``: H_EE v evaluations used; ``largest_residual``:
    the worst relative residual of the column solves."""

    hessian: np.ndarray
    products: int
    largest_residual: float


#: Eigenvalues of a preconditioner block are floored at this fraction of the largest magnitude.
BLOCK_FLOOR = 1e-4
#: Residues closer than this (nm, nearest atoms) are probed separately.
PROBE_SEPARATION = 0.6


def probe_colours(positions: np.ndarray, groups: list[np.ndarray], separation: float = PROBE_SEPARATION) -> list[int]:
    """Greedy colouring of ``groups`` (atom index arrays into ``positions``) so that groups of one colour are
    at least ``separation`` nm apart (nearest atoms)."""
    colours: list[int] = []
    for i, group in enumerate(groups):
        taken = {colours[j] for j in range(i)
                 if np.min(np.linalg.norm(positions[group][:, None] - positions[groups[j]][None], axis=2)) < separation}
        colours.append(next(c for c in range(len(groups)) if c not in taken))
    return colours


def block_preconditioner(forces_on: Callable[[np.ndarray], np.ndarray], positions: np.ndarray, atoms,
                         groups: list[np.ndarray], step: float = HESSIAN_STEP) -> tuple[Callable, int]:
    """(v ↦ B⁻¹ v, force calls): B is the block diagonal, over ``groups`` (arrays of positions within
    ``atoms``, together covering them), of the Hessian of ``atoms`` (v ordered like ``atoms``), found by
    probing with ``forces_on(x)`` (N, 3); each block made positive definite (|λ|, floored at
    ``BLOCK_FLOOR`` of its largest) so that B⁻¹ is a valid MINRES preconditioner."""
    x0, atoms = np.array(positions, dtype=float), np.asarray(atoms, dtype=int)
    blocks = [np.zeros((3 * len(g), 3 * len(g))) for g in groups]
    colours = probe_colours(x0, [atoms[g] for g in groups])
    calls = 0
    for colour, k in itertools.product(sorted(set(colours)), range(max(len(g) for g in groups))):
        members = [(i, atoms[g]) for i, g in enumerate(groups) if len(g) > k and colours[i] == colour]
        if not members:
            continue
        for axis in range(3):
            shifted = []
            for sign in (1, -1):
                x = x0.copy()
                for _, group_atoms in members:
                    x[group_atoms[k], axis] += sign * step
                shifted.append(forces_on(x))
                calls += 1
            for i, group_atoms in members:
                blocks[i][:, 3 * k + axis] = -(shifted[0][group_atoms] - shifted[1][group_atoms]).ravel() / (2 * step)
    pieces = []
    for g, block in zip(groups, blocks, strict=True):
        values, vectors = np.linalg.eigh(symmetrised(block))
        values = np.maximum(np.abs(values), BLOCK_FLOOR * np.abs(values).max())
        pieces.append(((3 * np.asarray(g)[:, None] + np.arange(3)).ravel(), (vectors / values) @ vectors.T))

    def apply(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=float).ravel()
        result = np.zeros_like(v)
        for index, inverse in pieces:
            result[index] = inverse @ v[index]
        return result

    return apply, calls


def condense(h_aa: np.ndarray, h_ea: np.ndarray, environment_product: Callable[[np.ndarray], np.ndarray], *,
             preconditioner: Callable[[np.ndarray], np.ndarray] | None = None,
             tolerance: float = SOLVE_TOLERANCE, max_products: int | None = None) -> Condensation:
    """H_eff = H_AA − H_EAᵀ H_EE⁻¹ H_EA (symmetrised) with ``environment_product(v) = H_EE v``.

    ``h_ea`` (3n_E, 3n_A); ``preconditioner``: v ↦ M⁻¹ v, symmetric positive definite (e.g.
    :func:`block_preconditioner`); each column of ``h_ea`` is one MINRES solve of at most ``max_products`` products
    (default 3·3n_E + 20, at most 620). Raises :class:`CalculationError` when a solve ends above ``ACCEPTED_RESIDUAL``
    (a singular or badly conditioned environment)."""
    size = h_ea.shape[0]
    if size == 0:
        return Condensation(symmetrised(np.array(h_aa, dtype=float)), 0, 0.0)
    calls = 0

    def product(v: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        return environment_product(np.asarray(v, dtype=float).ravel())

    operator = LinearOperator((size, size), matvec=product, dtype=float)
    inverse = None if preconditioner is None else LinearOperator((size, size), matvec=preconditioner, dtype=float)
    limit = max_products or min(3 * size, 600) + 20
    solution = np.empty_like(h_ea, dtype=float)
    worst = 0.0
    for column in range(h_ea.shape[1]):
        b = h_ea[:, column]
        norm = np.linalg.norm(b)
        if norm == 0:
            solution[:, column] = 0.0
            continue
        x, _ = minres(operator, b, M=inverse, rtol=tolerance, maxiter=limit)
        residual = np.linalg.norm(product(x) - b) / norm
        if residual > ACCEPTED_RESIDUAL:
            raise CalculationError(
                f"static condensation: the environment solve for active coordinate {column} stopped at relative "
                f"residual {residual:.1e} after {limit} products (is the environment at a minimum, with every "
                "moving atom bound? a singular H_EE cannot be condensed)")
        worst = max(worst, residual)
        solution[:, column] = x
    return Condensation(symmetrised(h_aa - h_ea.T @ solution), calls, worst)
