"""Initial paths between two structures: linear interpolation and IDPP.

IDPP (image-dependent pair potential; Smidstrup, Pedersen, Stokbro & Jónsson, J. Chem. Phys. 140,
214106 (2014)): image k of n targets the interatomic distances d_ij(k) = d_ij^R + k/(n−1)
(d_ij^P − d_ij^R) through S_k = Σ_{i<j} w(d_ij) (d_ij(k) − d_ij)², w(d) = d⁻⁴, and the band is
relaxed on S_k (no climbing) from the linear path. Only the path atoms take part; the other atoms
keep their linear interpolation.
"""

from __future__ import annotations

import numpy as np

from bioqmmm.paths.band import relax_band
from bioqmmm.paths.models import FunctionModel

#: IDPP band settings in nm: force criterion (nm⁻³), spring (nm⁻⁴), largest step (nm), iterations.
IDPP_FMAX, IDPP_SPRING, IDPP_MAX_STEP, IDPP_MAX_ITERATIONS = 100.0, 1000.0, 0.01, 2000


def linear_path(reactant: np.ndarray, product: np.ndarray, n_images: int) -> np.ndarray:
    """``n_images`` structures (n, N, 3) evenly spaced from ``reactant`` to ``product`` (both ends included)."""
    t = np.linspace(0.0, 1.0, n_images)[:, None, None]
    return (1 - t) * reactant[None] + t * product[None]


def _pair_distances(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2)


def idpp_path(reactant: np.ndarray, product: np.ndarray, n_images: int, atoms: np.ndarray) -> np.ndarray:
    """The linear path with the images' ``atoms`` relaxed on their IDPP surfaces (nm)."""
    path = linear_path(reactant, product, n_images)
    start, end = _pair_distances(reactant[atoms]), _pair_distances(product[atoms])
    targets = [start + k / (n_images - 1) * (end - start) for k in range(n_images)]
    upper = np.triu(np.ones_like(start, dtype=bool), k=1)

    def objective(x: np.ndarray, image: int) -> tuple[float, np.ndarray]:
        diff = x[:, None, :] - x[None, :, :]
        d = np.linalg.norm(diff, axis=2)
        np.fill_diagonal(d, 1.0)
        gap = targets[image] - d
        weight = d**-4
        energy = float(np.sum((weight * gap**2)[upper]))
        d_energy_d_d = -2 * weight * gap - 4 * weight * gap**2 / d  # dS/dd for each pair
        np.fill_diagonal(d_energy_d_d, 0.0)
        gradient = np.sum((d_energy_d_d / d)[:, :, None] * diff, axis=1)
        return energy, -gradient

    model = FunctionModel(objective, len(atoms), per_image=True)
    band = relax_band(model, path[:, atoms], fmax=IDPP_FMAX, spring=IDPP_SPRING, climb=False,
                      max_iterations=IDPP_MAX_ITERATIONS, max_step=IDPP_MAX_STEP)
    path[:, atoms] = band.positions
    return path
