"""Unit conversions between OpenMM (nm, kJ/mol, e) and atomic units (Bohr, Hartree).

Every conversion in bioqmmm goes through this module. The constants are PySCF's
(``pyscf.data.nist``) so that a QM engine fed through bioqmmm reproduces PySCF run
directly to machine precision; OpenMM's constants differ from them by ~1e-8 relative.
"""

from __future__ import annotations

import numpy as np
from openmm import unit
from pyscf.data import nist

from bioqmmm.errors import InputError

#: Bohr radius in nm.
BOHR_NM: float = nist.BOHR * 0.1
#: One Hartree in kJ/mol.
HARTREE_KJMOL: float = nist.HARTREE2J * nist.AVOGADRO / 1000.0
#: One Hartree/Bohr in kJ/mol/nm.
HARTREE_PER_BOHR_KJMOL_NM: float = HARTREE_KJMOL / BOHR_NM


def positions_nm(positions) -> np.ndarray:
    """Return positions as a float64 (N, 3) array in nm.

    Accepts an ``openmm.unit.Quantity`` (any length unit, list of ``Vec3`` or array)
    or anything array-like already in nm.
    """
    if unit.is_quantity(positions):
        positions = positions.value_in_unit(unit.nanometer)
    elif len(positions) and all(unit.is_quantity(p) for p in positions):  # e.g. box vectors: Vec3 Quantities
        positions = [p.value_in_unit(unit.nanometer) for p in positions]
    try:
        array = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"cannot read positions as an (N, 3) array in nm: {exc}") from exc
    if array.ndim != 2 or array.shape[1] != 3:
        raise InputError(f"positions must have shape (N, 3); got {array.shape}")
    return array


#: Coulomb constant 1/(4 pi eps0) in kJ/mol nm e^-2, consistent with the constants above
#: (1 Hartree Bohr / e^2), so that QM-side and Python-side electrostatics agree exactly.
COULOMB_KJMOL_NM: float = HARTREE_KJMOL * BOHR_NM


#: Molar gas constant in kJ/mol/K (OpenMM's value, so that k_BT matches its thermostats).
GAS_CONSTANT_KJMOL_K: float = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)


def kt_kjmol(temperature: float) -> float:
    """k_BT in kJ/mol at ``temperature`` K."""
    return GAS_CONSTANT_KJMOL_K * temperature


def minimum_image(d: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Minimum-image displacement(s) for an OpenMM reduced (lower-triangular) box, nm."""
    d = np.array(d, dtype=float, copy=True)
    for axis in (2, 1, 0):
        shift = np.rint(d[..., axis] / box[axis, axis])
        for component in range(axis + 1):  # box[axis] has no components beyond axis (reduced form)
            d[..., component] -= shift * box[axis, component]
    return d

#: Thermochemical calorie: kJ per kcal.
KCAL_KJ: float = 4.184
