"""Static (relaxed-ion, 0 K) dielectric tensor of a fixed-charge MM crystal from its force constants.

A uniform field E moves every copy of cell atom a by the same u_a (the response is cell-periodic), so
only the Γ-point force constants K_Γ (3n × 3n for the n atoms of one cell) enter: K_Γ u = Z E with the
Born charges Z_a = q_a I of point charges. The polarisation P = Σ_a q_a u_a / V_cell gives

    ε = I + 4π k_e Zᵀ K_Γ⁺ Z / V_cell           (k_e = 1/(4πε₀) in kJ/mol nm e⁻²)

(Born & Huang, Dynamical Theory of Crystal Lattices (1954), §2; Gonze & Lee, Phys. Rev. B 55, 10355
(1997), eq. 55, with ε∞ = 1 for non-polarisable charges). K_Γ⁺ inverts K_Γ outside its three
translation modes; OpenMM's Ewald/PME force constants (conducting boundary) are those at zero
macroscopic field, which is what the formula needs. K_Γ is computed by central differences of the
forces, displacing every copy of an atom at once in a supercell of ``copies`` cells.
"""

from __future__ import annotations

import math

import numpy as np

from bioqmmm.errors import CalculationError, InputError
from bioqmmm.periodic.model import CellModel
from bioqmmm.units import COULOMB_KJMOL_NM

#: Finite-difference displacement for the force constants, nm.
DISPLACEMENT_NM = 1e-4


def gamma_force_constants(model: CellModel, positions: np.ndarray, box: np.ndarray, cell_atoms: int,
                          displacement: float = DISPLACEMENT_NM) -> np.ndarray:
    """K_Γ (3n × 3n, kJ/mol/nm², atom-major) of the first ``cell_atoms`` atoms, whose copies follow them
    in order, by central differences of the forces."""
    n_total = len(positions)
    if n_total % cell_atoms:
        raise InputError(f"{n_total} atoms are not whole copies of a {cell_atoms}-atom cell")
    copies = n_total // cell_atoms
    k_gamma = np.empty((3 * cell_atoms, 3 * cell_atoms))
    for a in range(cell_atoms):
        for alpha in range(3):
            columns = []
            for sign in (1.0, -1.0):
                moved = np.array(positions, dtype=float)
                moved[a::cell_atoms, alpha] += sign * displacement
                forces = model.energy_and_forces(moved, box)[1]
                columns.append(forces.reshape(copies, cell_atoms, 3).mean(axis=0).ravel())
            k_gamma[:, 3 * a + alpha] = -(columns[0] - columns[1]) / (2.0 * displacement)
    return 0.5 * (k_gamma + k_gamma.T)


def static_dielectric(k_gamma: np.ndarray, charges: np.ndarray, cell_volume: float) -> np.ndarray:
    """ε (3 × 3) from K_Γ (kJ/mol/nm²), the cell's point charges (e) and its volume (nm³)."""
    charges = np.asarray(charges, dtype=float)
    n = len(charges)
    if abs(charges.sum()) > 1e-6:
        raise InputError(f"the host cell has a net charge of {charges.sum():.6f} e: a dielectric constant needs "
                         "a neutral cell")
    translations = np.kron(np.ones((n, 1)), np.eye(3)) / math.sqrt(n)  # (3n, 3) orthonormal
    projector = translations @ translations.T
    values = np.linalg.eigvalsh(k_gamma + projector * np.abs(k_gamma).max())
    if values.min() <= 0.0:
        raise CalculationError("the host's force constants have a negative or zero mode besides the translations: "
                               "the structure is not at a minimum (relax it first)")
    inverse = np.linalg.inv(k_gamma + projector) - projector
    born = np.kron(charges[:, None], np.eye(3))  # (3n, 3): Z_a = q_a I
    return np.eye(3) + 4.0 * math.pi * COULOMB_KJMOL_NM * born.T @ inverse @ born / cell_volume
