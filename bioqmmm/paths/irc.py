"""Intrinsic reaction coordinate: mass-weighted steepest descent from a saddle, in both directions.

In mass-weighted coordinates q = M^½ x of the moving atoms the IRC is the path of steepest descent
(Fukui, Acc. Chem. Res. 14, 363 (1981)). From the saddle, each branch starts with a step of length s along
± the transition mode (mass-weighted, normalised) and continues with steps Δq = s · ĝ_q, ĝ_q the unit
mass-weighted force M^-½ F / |M^-½ F| (Euler steepest descent; s in amu^½ nm). A step that raises the energy
is retried at half the length, and the length is halved when the direction turns by more than 90° (the
path has crossed the floor of a stiff valley, where fixed-length steps zig-zag); a branch ends at a minimum
(largest force below ``fmax``), when s falls under a hundredth of its start, or after ``max_steps``. With
``relax`` (microiterations) the environment is relaxed after each step, so the path is that of the
environment-adiabatic surface.
Units: nm, kJ/mol, amu.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Evaluate = Callable[[np.ndarray], tuple[float, np.ndarray]]


@dataclass
class IRCBranch:
    """One direction: ``positions`` (k, N, 3) nm, ``energies`` (k,) kJ/mol and ``arc`` (k,) amu^½ nm from the
    saddle (the saddle itself not included); ``reached_minimum``: ended below the force criterion."""

    positions: np.ndarray
    energies: np.ndarray
    arc: np.ndarray
    reached_minimum: bool
    max_force: float


@dataclass
class IRCResult:
    """The two branches (``forward`` along +mode, ``backward`` along −mode) and the saddle's energy."""

    forward: IRCBranch
    backward: IRCBranch
    ts_energy: float
    gradient_calls: int

    def path(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(arc, energies, positions) from the backward end through the saddle to the forward end; the
        backward arc is negative. The saddle's positions are not stored: its row repeats the first forward."""
        arc = np.concatenate([-self.backward.arc[::-1], [0.0], self.forward.arc])
        energies = np.concatenate([self.backward.energies[::-1], [self.ts_energy], self.forward.energies])
        positions = np.concatenate([self.backward.positions[::-1], self.forward.positions[:1],
                                    self.forward.positions])
        return arc, energies, positions


def intrinsic_reaction_coordinate(evaluate: Evaluate, ts_positions: np.ndarray, atoms, masses, mode: np.ndarray, *,
                                  step: float = 0.01, max_steps: int = 60, fmax: float = 20.0,
                                  relax: Callable[[np.ndarray], np.ndarray] | None = None,
                                  report: Callable[[str, int, float, float], None] | None = None) -> IRCResult:
    """Both IRC branches from ``ts_positions`` (N, 3) nm; ``atoms`` move (``masses`` amu), ``mode`` (n, 3):
    the transition mode (Cartesian; its sign picks which branch is ``forward``). ``report(branch, point,
    energy, largest force)`` after each accepted point."""
    atoms = np.asarray(atoms, dtype=int)
    root_m = np.repeat(np.sqrt(np.asarray(masses, dtype=float)), 3)
    calls = 0

    def counted(x: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal calls
        calls += 1
        return evaluate(x)

    ts_energy, _ = counted(np.asarray(ts_positions, dtype=float))
    weighted_mode = np.asarray(mode, dtype=float).ravel() * root_m
    weighted_mode /= np.linalg.norm(weighted_mode)
    branches = [_branch(counted, ts_positions, atoms, root_m, sign * weighted_mode, step, max_steps, fmax, relax,
                        (lambda *row, name=name: report(name, *row)) if report is not None else None)
                for sign, name in ((1, "forward"), (-1, "backward"))]
    return IRCResult(*branches, ts_energy=float(ts_energy), gradient_calls=calls)


def _moved(x: np.ndarray, atoms: np.ndarray, dq: np.ndarray, root_m: np.ndarray) -> np.ndarray:
    moved = x.copy()
    moved[atoms] += (dq / root_m).reshape(-1, 3)
    return moved


def _branch(evaluate, ts_positions, atoms, root_m, first, step, max_steps, fmax, relax, report) -> IRCBranch:
    relaxed = (lambda y: y) if relax is None else relax
    x = relaxed(_moved(np.asarray(ts_positions, dtype=float), atoms, step * first, root_m))
    energy, forces = evaluate(x)
    positions, energies, arc = [x], [energy], [step]
    length, previous = step, None
    for _ in range(max_steps):
        largest = float(np.linalg.norm(forces[atoms], axis=1).max())
        if largest < fmax or length < 0.01 * step:
            break
        direction = forces[atoms].ravel() / root_m
        direction /= np.linalg.norm(direction)
        if previous is not None and direction @ previous < 0:  # across the valley floor: zig-zag, not descent
            length *= 0.5
        trial = relaxed(_moved(x, atoms, length * direction, root_m))
        trial_energy, trial_forces = evaluate(trial)
        if trial_energy > energy:
            length *= 0.5
            continue
        previous = direction
        x, energy, forces = trial, trial_energy, trial_forces
        positions.append(x)
        energies.append(energy)
        arc.append(arc[-1] + length)
        if report is not None:
            report(len(energies), float(energy), float(np.linalg.norm(forces[atoms], axis=1).max()))
    largest = float(np.linalg.norm(forces[atoms], axis=1).max())
    return IRCBranch(np.array(positions), np.array(energies), np.array(arc), largest < fmax, largest)
