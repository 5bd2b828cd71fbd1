"""The energy of a point charge with its periodic images and a neutralising background (the Madelung term).

For a unit charge in the lattice spanned by the rows of ``box`` (volume V), with the Ewald split α,

    ε_self = ½ Σ_{n≠0} erfc(α|n|)/|n| + (2π/V) Σ_{k≠0} exp(−k²/4α²)/k² − α/√π − π/(2α²V)

(energy per e², in units of e²/(4πε₀ nm); independent of α). For a cubic lattice of edge L,
ε_self = ξ/(2L) with the Wigner/Madelung constant ξ = −2.837297 (Nijboer & De Wette, Physica 23, 309
(1957); Makov & Payne, Phys. Rev. B 51, 4014 (1995), whose α_M = −ξ).

In a homogeneous anisotropic dielectric ε (3 × 3) the image potential is
1/(√det ε · √(rᵀ ε⁻¹ r)); substituting r = ε^½ s turns it into the bare potential in the lattice
spanned by ε^{-½} n, divided by √det ε, so ε_self(box, ε) = ε_self(box ε^{-½}) / √det ε (for ε = ε_r I,
ε_self / ε_r; Rurali & Cartoixà, Nano Lett. 9, 975 (2009); Murphy & Hine, Phys. Rev. B 87, 094111 (2013)).
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np
from scipy.special import erfc

#: The cubic lattice's constant ξ (ε_self = ξ / 2L), for reference and tests.
CUBIC_XI = -2.837297479

#: Terms beyond exp(-EWALD_EXPONENT) are dropped in both Ewald sums (relative accuracy ~1e-15).
EWALD_EXPONENT = 36.0


def self_energy(box: np.ndarray, dielectric: np.ndarray | float | None = None) -> float:
    """ε_self of a unit charge in the lattice ``box`` (rows, nm) screened by ``dielectric`` (scalar or
    3 × 3 tensor; None: vacuum), in e²/(4πε₀ nm): multiply by q² and the Coulomb constant for kJ/mol."""
    box = np.asarray(box, dtype=float)
    if dielectric is None:
        return _bare(box)
    eps = np.eye(3) * float(dielectric) if np.ndim(dielectric) == 0 else np.asarray(dielectric, dtype=float)
    values, vectors = np.linalg.eigh(0.5 * (eps + eps.T))
    if values.min() <= 0.0:
        raise ValueError(f"the dielectric tensor must be positive definite, got eigenvalues {values}")
    inverse_root = (vectors / np.sqrt(values)) @ vectors.T
    return _bare(box @ inverse_root) / math.sqrt(float(np.prod(values)))


def cubic_constant(box: np.ndarray, dielectric: np.ndarray | float | None = None) -> float:
    """ξ_eff = 2 L ε_self with L = V^⅓: the cubic lattice's ξ for any cell shape (−2.837297 for a cube)."""
    volume = abs(np.linalg.det(np.asarray(box, dtype=float)))
    return 2.0 * volume ** (1.0 / 3.0) * self_energy(box, dielectric)


def _bare(box: np.ndarray) -> float:
    volume = abs(np.linalg.det(box))
    alpha = math.sqrt(math.pi) / volume ** (1.0 / 3.0)  # balances the two sums
    real_reach = math.sqrt(EWALD_EXPONENT) / alpha
    recip = 2.0 * math.pi * np.linalg.inv(box).T  # rows: reciprocal vectors
    recip_reach = 2.0 * alpha * math.sqrt(EWALD_EXPONENT)
    real = _lattice(box, real_reach)
    r = np.linalg.norm(real, axis=1)
    k = _lattice(recip, recip_reach)
    k2 = np.einsum("ij,ij->i", k, k)
    return float(0.5 * np.sum(erfc(alpha * r) / r)
                 + 2.0 * math.pi / volume * np.sum(np.exp(-k2 / (4.0 * alpha**2)) / k2)
                 - alpha / math.sqrt(math.pi) - math.pi / (2.0 * alpha**2 * volume))


def _lattice(vectors: np.ndarray, reach: float) -> np.ndarray:
    """Non-zero lattice vectors n · rows(vectors) shorter than ``reach``."""
    heights = 1.0 / np.linalg.norm(np.linalg.inv(vectors), axis=0)  # plane spacings
    n_max = [int(math.ceil(reach / h)) for h in heights]
    n = np.array(list(product(*(range(-m, m + 1) for m in n_max))), dtype=float)
    points = n @ vectors
    length = np.linalg.norm(points, axis=1)
    return points[(length > 0.0) & (length < reach)]
