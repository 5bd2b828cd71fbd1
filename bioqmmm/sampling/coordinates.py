"""Reaction coordinates and the umbrella biases that act on them, as OpenMM ``CustomCVForce``s.

A reaction coordinate is a linear combination s = Σ_i c_i t_i of terms t_i, each a distance (nm),
an angle or a dihedral (rad) between atoms; a difference of two distances is the combination
(+1, −1). A single dihedral is periodic (period 2π, values in (−π, π]); dihedrals do not enter
combinations, whose value would jump where one of them wraps.

An umbrella bias is w(s) = ½ k (s − s₀)², with s − s₀ taken to the nearest period for a periodic
coordinate (Torrie & Valleau, J. Comput. Phys. 23, 187 (1977)). OpenMM applies it during sampling
(:meth:`ReactionCoordinate.bias_force`); :meth:`Umbrella.energy` gives the same numbers for MBAR.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import openmm

from bioqmmm.units import kt_kjmol

_TERM_ATOMS = {"distance": 2, "angle": 3, "dihedral": 4}


class Bias(Protocol):
    """A bias on s: its energy in NumPy (kJ/mol) and the same function as an OpenMM expression of s.
    ``center`` is None for a bias that is not a window (metadynamics)."""

    center: float | None
    period: float | None

    def energy(self, s: np.ndarray) -> np.ndarray: ...

    def expression(self) -> str: ...

    def configure(self, force: openmm.CustomCVForce) -> None: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Term:
    """One geometric term: ``kind`` ('distance', 'angle' or 'dihedral') of ``atoms`` (indices)."""

    kind: str
    atoms: tuple[int, ...]
    coefficient: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in _TERM_ATOMS:
            raise ValueError(f"unknown reaction-coordinate term {self.kind!r}; known: {', '.join(_TERM_ATOMS)}")
        if len(self.atoms) != _TERM_ATOMS[self.kind] or len(set(self.atoms)) != len(self.atoms):
            raise ValueError(f"a {self.kind} needs {_TERM_ATOMS[self.kind]} different atoms, got {list(self.atoms)}")

    def force(self, periodic_box: bool) -> openmm.Force:
        """The OpenMM force whose energy is this term's value (nm or rad)."""
        if self.kind == "distance":
            force = openmm.CustomBondForce("r")
            force.addBond(*self.atoms, [])
        elif self.kind == "angle":
            force = openmm.CustomAngleForce("theta")
            force.addAngle(*self.atoms, [])
        else:
            force = openmm.CustomTorsionForce("theta")
            force.addTorsion(*self.atoms, [])
        force.setUsesPeriodicBoundaryConditions(periodic_box)
        return force


@dataclass(frozen=True)
class ReactionCoordinate:
    """s = Σ c_i t_i over ``terms``; ``period`` is 2π for a single dihedral, else None."""

    terms: tuple[Term, ...]

    def __post_init__(self) -> None:
        if not self.terms:
            raise ValueError("a reaction coordinate needs at least one term")
        if len(self.terms) > 1 and any(t.kind == "dihedral" for t in self.terms):
            raise ValueError("a dihedral cannot enter a combination (its value wraps at ±π): use it alone")

    @property
    def period(self) -> float | None:
        single = self.terms[0]
        return 2 * math.pi if len(self.terms) == 1 and single.kind == "dihedral" and single.coefficient == 1 else None

    @property
    def unit(self) -> str:
        units = {"nm" if t.kind == "distance" else "rad" for t in self.terms}
        return units.pop() if len(units) == 1 else "nm|rad"

    def value(self, term_values: Sequence[float]) -> float:
        """s from the term values (as ``CustomCVForce.getCollectiveVariableValues`` returns them)."""
        return float(sum(t.coefficient * v for t, v in zip(self.terms, term_values, strict=True)))

    def _terms_expression(self) -> str:
        return " + ".join(f"({t.coefficient!r})*t{i}" for i, t in enumerate(self.terms))

    def _with_terms(self, expression: str, periodic_box: bool) -> openmm.CustomCVForce:
        force = openmm.CustomCVForce(expression)
        for i, term in enumerate(self.terms):
            force.addCollectiveVariable(f"t{i}", term.force(periodic_box))
        return force

    def cv_force(self, periodic_box: bool) -> openmm.CustomCVForce:
        """A force whose energy is s (what OpenMM's ``BiasVariable`` takes)."""
        return self._with_terms(self._terms_expression(), periodic_box)

    def bias_force(self, bias: Bias, periodic_box: bool) -> openmm.CustomCVForce:
        """``bias`` as a CustomCVForce (kJ/mol) whose collective variables are the terms."""
        force = self._with_terms(f"{bias.expression()}; s = {self._terms_expression()}", periodic_box)
        bias.configure(force)
        return force


def distance(i: int, j: int) -> ReactionCoordinate:
    return ReactionCoordinate((Term("distance", (i, j)),))


def distance_difference(i: int, j: int, k: int, m: int) -> ReactionCoordinate:
    """d(i, j) − d(k, m), nm: e.g. breaking minus forming bond of a transfer."""
    return ReactionCoordinate((Term("distance", (i, j)), Term("distance", (k, m), -1.0)))


def angle(i: int, j: int, k: int) -> ReactionCoordinate:
    return ReactionCoordinate((Term("angle", (i, j, k)),))


def dihedral(i: int, j: int, k: int, m: int) -> ReactionCoordinate:
    return ReactionCoordinate((Term("dihedral", (i, j, k, m)),))


@dataclass(frozen=True)
class Umbrella:
    """w(s) = ½ k (s − s₀)², k in kJ/mol per unit of s squared; s − s₀ wrapped when ``period`` is set."""

    center: float
    force_constant: float
    period: float | None = None

    def energy(self, s: np.ndarray) -> np.ndarray:
        """Bias energies (kJ/mol) at coordinate values ``s``."""
        d = self.displacement(s)
        return 0.5 * self.force_constant * d * d

    def displacement(self, s: np.ndarray) -> np.ndarray:
        """s − s₀, to the nearest period for a periodic coordinate."""
        d = np.asarray(s, dtype=float) - self.center
        return d if self.period is None else d - self.period * np.floor(d / self.period + 0.5)

    def expression(self) -> str:
        """The same function in OpenMM's expression language, of s."""
        if self.period is None:
            return "0.5*k_bias*d^2; d = s - s0_bias"
        return f"0.5*k_bias*d^2; d = dd - {self.period!r}*floor(dd/{self.period!r} + 0.5); dd = s - s0_bias"

    def configure(self, force: openmm.CustomCVForce) -> None:
        force.addGlobalParameter("k_bias", self.force_constant)
        force.addGlobalParameter("s0_bias", self.center)

    def describe(self) -> str:
        return f"s = {self.center:.4g}"


def umbrella_windows(low: float, high: float, count: int, temperature: float,
                     force_constant: float | None = None, period: float | None = None) -> list[Umbrella]:
    """``count`` umbrellas with centres evenly over [``low``, ``high``] (over [low, high) when the range is
    a whole period of a periodic coordinate, so that no centre is repeated).

    Without ``force_constant``, k = 4 k_BT/Δ² for centre spacing Δ: an unbiased window then spreads
    σ = Δ/2, and neighbours overlap where the free energy is flat.
    """
    if count < 2 or not high > low:
        raise ValueError(f"need at least two windows over a range high > low, got {count} over [{low}, {high}]")
    whole_circle = period is not None and math.isclose(high - low, period, rel_tol=1e-6)
    centres = low + (high - low) * np.arange(count) / (count if whole_circle else count - 1)
    spacing = (high - low) / (count if whole_circle else count - 1)
    k = force_constant if force_constant is not None else 4 * kt_kjmol(temperature) / spacing**2
    return [Umbrella(round(float(c), 9), float(k), period) for c in centres]  # one value for one centre
