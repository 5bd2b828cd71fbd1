"""Finite-size extrapolation of the energy of a charged system in periodic cells of growing size.

E(L) = E∞ + A/L + B/L³ (Makov & Payne, Phys. Rev. B 51, 4014 (1995)), fitted by linear least squares
over cells of the same shape (L = V^⅓). The leading term is known in advance:

    A = k_e L [q² ε_self(h, ε) − q_QM² ε_self(h)]  = k_e (ξ/2) (q²/ε_r − q_QM²)   (cubic, isotropic ε_r)

with k_e = 1/(4πε₀) = 138.935 kJ/mol nm e⁻², ε_self the Madelung self-energy of a unit charge
(:mod:`bioqmmm.periodic.madelung`; ξ = −2.837297 for cubes), q the net charge of the cell relative to its
host (the defect's charge) and ε the host's dielectric tensor (1 for a frozen, non-polarisable host).
The first term is Makov–Payne's: in Gaussian units E = E∞ − q²α_M/(2εL) with α_M = −ξ, i.e. A = q²ξ/(2ε)
(the energy of a periodic charge with its neutralising background is *lower* than the isolated one,
so A < 0). The second term is bioqmmm's own: the periodic embedding leaves out the QM region's
interaction with its own images (docs/theory.md §3.2), whose leading part is the bare Madelung energy
k_e q_QM² ξ/(2L) of the QM region's charge; everything the MM charges see (images of the QM region
included) is periodic. For a point charge in a pure MM model q_QM = 0 and A = k_e q² ξ/(2ε).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bioqmmm.periodic.madelung import self_energy
from bioqmmm.units import COULOMB_KJMOL_NM

#: Cells a fit needs: three parameters and at least one degree of freedom for its uncertainty.
MIN_CELLS = 4


@dataclass(frozen=True)
class FiniteSizeFit:
    """E(L) = E∞ + A/L + B/L³: values (kJ/mol, kJ/mol·nm, kJ/mol·nm³), standard errors and diagnostics.

    ``e_inf_fixed_a``/``e_inf_fixed_a_error``: E∞ with A fixed at the analytic value (fit of E∞ and B).
    ``residual_rms``: RMS of the fit's residuals, kJ/mol. ``warnings``: why the fit should not be trusted.
    """

    lengths: tuple[float, ...]
    energies: tuple[float, ...]
    e_inf: float
    a: float
    b: float
    e_inf_error: float
    a_error: float
    b_error: float
    residual_rms: float
    a_analytic: float | None = None
    e_inf_fixed_a: float | None = None
    e_inf_fixed_a_error: float | None = None
    warnings: tuple[str, ...] = field(default=())

    def predict(self, lengths: Sequence[float]) -> np.ndarray:
        """The fitted E at ``lengths`` (nm), kJ/mol."""
        x = 1.0 / np.asarray(lengths, dtype=float)
        return self.e_inf + self.a * x + self.b * x**3

    @property
    def a_deviation(self) -> float | None:
        """(A_fit − A_analytic) / |A_analytic|, or None without an analytic A (or when it is zero)."""
        if self.a_analytic is None or self.a_analytic == 0.0:
            return None
        return (self.a - self.a_analytic) / abs(self.a_analytic)


def analytic_a(box: np.ndarray, charge: float, qm_charge: float = 0.0,
               dielectric: np.ndarray | float | None = None) -> float:
    """The leading coefficient A (kJ/mol·nm) for the cell shape ``box`` (rows, nm; any size: A scales out).

    ``charge``: the cell's net charge relative to its host, e; ``qm_charge``: the QM region's charge, whose
    self-images the embedding leaves out (0 for an MM model); ``dielectric``: the host's ε (scalar or
    3 × 3; None: 1).
    """
    box = np.asarray(box, dtype=float)
    length = abs(np.linalg.det(box)) ** (1.0 / 3.0)
    return COULOMB_KJMOL_NM * length * (charge**2 * self_energy(box, dielectric) - qm_charge**2 * self_energy(box))


def fit(lengths: Sequence[float], energies: Sequence[float], a_analytic: float | None = None,
        a_tolerance: float = 0.05) -> FiniteSizeFit:
    """Least-squares E(L) = E∞ + A/L + B/L³ over cells of edge ``lengths`` (nm) with ``energies`` (kJ/mol).

    Standard errors come from the residuals (σ² = RSS / (n − 3)) and the fit's covariance. Warnings: fewer
    than :data:`MIN_CELLS` cells; a residual RMS above 1 % of the spread of the energies; A_fit and
    ``a_analytic`` differing by more than ``a_tolerance`` (relative) and three standard errors.
    """
    lengths = np.asarray(lengths, dtype=float)
    energies = np.asarray(energies, dtype=float)
    order = np.argsort(lengths)
    lengths, energies = lengths[order], energies[order]
    if len(lengths) < 3 or len(set(np.round(lengths, 9))) < len(lengths):
        raise ValueError(f"a fit of E∞, A and B needs three or more different cell sizes, got {lengths.tolist()}")
    x = 1.0 / lengths
    design = np.column_stack([np.ones_like(x), x, x**3])
    values, errors, rms = _least_squares(design, energies)
    warnings: list[str] = []
    if len(lengths) < MIN_CELLS:
        warnings.append(f"only {len(lengths)} cells: the fit has no degree of freedom left and no uncertainty")
    spread = float(np.ptp(energies))
    if spread > 0.0 and rms > 0.01 * spread:
        warnings.append(f"poor fit: residual RMS {rms:.3g} kJ/mol is {100 * rms / spread:.1f} % of the energies' "
                        "spread (cells too small for the 1/L + 1/L³ form, or noisy energies)")
    fixed_value = fixed_error = None
    if a_analytic is not None:
        deviation = abs(values[1] - a_analytic)
        if deviation > a_tolerance * abs(a_analytic) and deviation > 3.0 * errors[1]:
            warnings.append(f"fitted A = {values[1]:.4g} and analytic A = {a_analytic:.4g} kJ/mol·nm disagree "
                            f"by {100 * deviation / max(abs(a_analytic), 1e-300):.1f} % (tolerance "
                            f"{100 * a_tolerance:g} %): check the dielectric constant and the charges")
        fixed, fixed_errors, _ = _least_squares(design[:, [0, 2]], energies - a_analytic * x)
        fixed_value, fixed_error = float(fixed[0]), float(fixed_errors[0])
    return FiniteSizeFit(tuple(lengths.tolist()), tuple(energies.tolist()), float(values[0]), float(values[1]),
                         float(values[2]), float(errors[0]), float(errors[1]), float(errors[2]), rms, a_analytic,
                         fixed_value, fixed_error, tuple(warnings))


def _least_squares(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Coefficients, their standard errors (NaN without a degree of freedom) and the residual RMS."""
    values, *_ = np.linalg.lstsq(design, y, rcond=None)
    residuals = y - design @ values
    dof = len(y) - design.shape[1]
    rms = float(math.sqrt(np.mean(residuals**2)))
    if dof <= 0:
        return values, np.full(len(values), math.nan), rms
    covariance = float(residuals @ residuals) / dof * np.linalg.inv(design.T @ design)
    return values, np.sqrt(np.diag(covariance)), rms
