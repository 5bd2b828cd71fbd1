"""Transition-state refinement by eigenvector following (partitioned rational-function optimisation).

The atoms of the saddle (the QM region, or the band's path atoms) move; everything else stays.
Steps follow Baker (J. Comput. Chem. 7, 385 (1986)): in the eigenbasis (b_i, v_i) of the Hessian,
with force components F_i = v_i·F, the followed mode k is maximised and the rest minimised,

    Δx = Σ_i F_i / (b_i − λ_i) v_i,   λ_k = ½ b_k + ½ √(b_k² + 4 F_k²),
    λ_i (i ≠ k) = lowest eigenvalue of the augmented Hessian [[diag(b), F], [Fᵀ, 0]] of the others,

scaled to a trust radius (largest move of one atom), halved when the quadratic model mispredicts the
energy change by more than a factor of 4 and grown when it predicts it well. The followed mode is the one closest to the
previous one (at the start, to ``direction``, e.g. the band's tangent at its climbing image). The
Hessian starts from central differences of the forces and is updated with Bofill's mix of SR1 and
PSB (Int. J. Quantum Chem. 52, 1327 (1994)); at the end it is recomputed for the frequencies. In an
environment the steps are microiterative: after each step of the saddle atoms the environment is relaxed
(:mod:`bioqmmm.paths.solvated_ts`), and the Hessian is the environment-condensed one.
When the moving atoms are the whole system, translations and rotations are projected out.
Units: nm, kJ/mol, kJ/mol/nm; frequencies in cm⁻¹, imaginary ones negative.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bioqmmm.errors import BioQMMMError, CalculationError
from bioqmmm.parallel.comm import SerialComm
from bioqmmm.vibrations.analysis import normal_modes
from bioqmmm.vibrations.hessian import finite_difference_hessian, rigid_body_modes

#: Bounds of the trust radius (largest move of one atom per step), nm.
TRUST_MIN, TRUST_MAX = 1e-4, 0.02
#: Stiffness given to projected-out translations and rotations so that no step follows them.
_RIGID_BODY_CURVATURE = 1e8

Evaluate = Callable[[np.ndarray], tuple[float, np.ndarray]]


@dataclass
class TSResult:
    """Refined saddle: ``positions`` (N, 3) nm, ``energy`` kJ/mol, the largest force on a moving atom
    (kJ/mol/nm), harmonic ``frequencies`` (cm⁻¹, ascending, imaginary as negative) of the moving atoms;
    ``gradient_calls``: energy-and-force evaluations up to convergence (the initial Hessian's included
    when it was differenced here); ``hessian``: the final one (kJ/mol/nm²)."""

    positions: np.ndarray
    energy: float
    converged: bool
    iterations: int
    max_force: float
    frequencies: np.ndarray
    gradient_calls: int = 0
    hessian: np.ndarray | None = None

    @property
    def imaginary_frequencies(self) -> np.ndarray:
        """Imaginary frequencies as negative numbers, cm⁻¹ (one for a first-order saddle)."""
        return self.frequencies[self.frequencies < 0]


def _describe(error: Exception) -> str:
    return str(error) if isinstance(error, BioQMMMError) else repr(error)


def _on_root(comm, evaluate: Evaluate, x: np.ndarray) -> tuple[float, np.ndarray]:
    """``evaluate(x)`` on rank 0, its result (or its error) on every rank."""
    result, error = None, None
    if comm.rank == 0:
        try:
            result = evaluate(x)
        except Exception as exc:
            error = exc
    result, message = comm.bcast((result, None if error is None else _describe(error)))
    if message is not None:
        raise error if error is not None else CalculationError(f"transition-state search: {message}")
    return result


def _bofill(hessian: np.ndarray, s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bofill update with step ``s`` and gradient change ``y``."""
    e = y - hessian @ s
    ss, es = s @ s, e @ s
    if ss < 1e-20:
        return hessian
    psb = (np.outer(e, s) + np.outer(s, e)) / ss - es * np.outer(s, s) / ss**2
    ee = e @ e
    if ee < 1e-20:
        return hessian
    phi = es**2 / (ee * ss)
    sr1 = np.outer(e, e) / es if abs(es) > 1e-12 else 0.0
    return hessian + phi * sr1 + (1 - phi) * psb


def _prfo_step(gradient: np.ndarray, follow: int, values: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    f = vectors.T @ (-gradient)
    step = np.zeros_like(gradient)
    b_k, f_k = values[follow], f[follow]
    lam_p = 0.5 * b_k + 0.5 * np.sqrt(b_k**2 + 4 * f_k**2)
    if abs(b_k - lam_p) > 1e-12:
        step += f_k / (b_k - lam_p) * vectors[:, follow]
    others = [i for i in range(len(values)) if i != follow]
    b, fo = values[others], f[others]
    augmented = np.zeros((len(others) + 1, len(others) + 1))
    augmented[:-1, :-1] = np.diag(b)
    augmented[:-1, -1] = augmented[-1, :-1] = fo
    lam_n = np.linalg.eigvalsh(augmented)[0]
    step += (vectors[:, others] * (fo / (b - lam_n))).sum(axis=1)
    return step


def refine_transition_state(
    evaluate: Evaluate,
    positions: np.ndarray,
    atoms: np.ndarray,
    masses: np.ndarray,
    *,
    direction: np.ndarray | None = None,
    whole_system: bool = False,
    fmax: float = 5.0,
    max_steps: int = 50,
    trust: float = 0.003,
    comm=None,
    hessian: Callable[[np.ndarray], np.ndarray] | None = None,
    relax: Callable[[np.ndarray], np.ndarray] | None = None,
    report: Callable[[int, float, float], None] | None = None,
) -> TSResult:
    """Saddle point of ``evaluate`` (positions → energy, forces) near ``positions``, moving ``atoms``.

    ``direction`` (n, 3): the reaction mode to maximise along (default: the lowest mode).
    ``whole_system``: ``atoms`` are every atom of a free molecule (rigid-body motion projected out).
    ``masses`` (amu) of ``atoms`` for the frequencies. With a communicator ``comm`` the difference
    Hessians are shared out among its ranks, rank 0 takes the steps, and every rank returns the same result.

    Microiterations: ``relax(x)`` returns ``x`` with the environment (atoms other than ``atoms``) relaxed
    for the QM positions of ``x``; it is applied to the start and to every trial step, so the steps follow
    the saddle of E(x_A, x_E*(x_A)), whose Hessian is the condensed one. ``hessian(x)``: the Hessian
    (3n, 3n) of ``atoms`` at the start and for the final frequencies (default: central differences of
    ``evaluate`` with the environment fixed; with ``relax``, pass the condensed Hessian).
    ``report(iteration, energy, largest force)`` is called on rank 0 before each step.
    """
    comm = comm or SerialComm()
    calls = 0

    def counted(x: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal calls
        calls += 1
        return evaluate(x)

    def curvature(x: np.ndarray) -> np.ndarray:
        return finite_difference_hessian(counted, x, atoms, comm=comm) if hessian is None else hessian(x)

    def relaxed(x: np.ndarray) -> np.ndarray:
        return x if relax is None else comm.bcast(relax(x) if comm.rank == 0 else None)

    x = relaxed(np.array(positions, dtype=float))
    rigid = rigid_body_modes(x[atoms]) if whole_system else None
    energy, forces = _on_root(comm, counted, x)
    hessian_now = curvature(x)
    followed = None if direction is None else np.asarray(direction, dtype=float).ravel()
    converged, iteration = False, 0
    for iteration in range(max_steps + 1):
        gradient = -forces[atoms].ravel()
        largest = float(np.linalg.norm(forces[atoms], axis=1).max())
        if report is not None and comm.rank == 0:
            report(iteration, float(energy), largest)
        if largest < fmax:
            converged = True
            break
        if iteration == max_steps:
            break
        working = hessian_now if rigid is None else hessian_now + _RIGID_BODY_CURVATURE * rigid.T @ rigid
        values, vectors = np.linalg.eigh(working)
        follow = 0 if followed is None else int(np.argmax(np.abs(vectors.T @ followed)))
        followed = vectors[:, follow] / np.linalg.norm(vectors[:, follow])
        projected = gradient if rigid is None else gradient - rigid.T @ (rigid @ gradient)
        step = _prfo_step(projected, follow, values, vectors)
        longest = np.linalg.norm(step.reshape(-1, 3), axis=1).max()
        step *= min(1.0, trust / longest)
        trial = x.copy()
        trial[atoms] += step.reshape(-1, 3)
        trial = relaxed(trial)
        new_energy, new_forces = _on_root(comm, counted, trial)
        # trust radius from how well the quadratic model predicted the energy change
        predicted = projected @ step + 0.5 * step @ working @ step
        ratio = (new_energy - energy) / predicted if abs(predicted) > 1e-12 else 1.0
        if not 0.25 < ratio < 4.0:
            trust = max(TRUST_MIN, 0.5 * trust)
        elif 0.75 < ratio < 1.33 and longest >= trust:
            trust = min(TRUST_MAX, 1.5 * trust)
        hessian_now = _bofill(hessian_now, step, -new_forces[atoms].ravel() - gradient)
        x, energy, forces = trial, new_energy, new_forces
    steps_calls = calls
    final = curvature(x)
    return TSResult(
        positions=x,
        energy=float(energy),
        converged=converged,
        iterations=iteration,
        max_force=float(np.linalg.norm(forces[atoms], axis=1).max()),
        frequencies=normal_modes(final, masses, rigid_positions=x[atoms] if whole_system else None).frequencies,
        gradient_calls=steps_calls,
        hessian=final,
    )
