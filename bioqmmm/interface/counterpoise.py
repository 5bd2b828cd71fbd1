"""Boys–Bernardi counterpoise correction of the QM part of an interaction (Mol. Phys. 19, 553 (1970)).

The QM region of the complex splits into the part of partner A and the part of partner B (each link atom
with its QM host). The basis-set superposition error of the QM–QM interaction is estimated on the bare
QM parts (link atoms included, no MM field), at the complex geometry:
E_CP = Σ_k [E_k(own basis) − E_k(basis of both)] ≥ 0, added to the interaction energy. The other
part's atoms carry their basis functions as PySCF ghost atoms.
"""

from __future__ import annotations

import numpy as np

from bioqmmm.errors import CalculationError, InputError
from bioqmmm.qm.factory import Level
from bioqmmm.units import BOHR_NM, HARTREE_KJMOL


def check_counterpoise(level: Level) -> None:
    """Counterpoise needs a basis set (PySCF levels) and a closed-shell HF or DFT method."""
    if level.engine != "pyscf":
        raise InputError(f"counterpoise needs a basis set: the {level.engine} engine has none (use a PySCF level)")
    if level.method.lower() in ("hf", "rhf"):
        return
    from pyscf.dft import libxc

    try:
        libxc.parse_xc(level.method)
    except (KeyError, ValueError) as exc:
        raise InputError(f"counterpoise runs restricted HF or DFT: {level.method!r} is neither") from exc


def _energy(symbols: list[str], coords_nm: np.ndarray, charge: int, level: Level) -> float:
    from pyscf import dft, gto, scf

    mol = gto.M(atom=[(s, tuple(x / BOHR_NM)) for s, x in zip(symbols, coords_nm, strict=True)], unit="Bohr",
                basis=level.basis, charge=charge, spin=0, verbose=0)
    if level.method.lower() in ("hf", "rhf"):
        mf = scf.RHF(mol)
    else:
        mf = dft.RKS(mol)
        mf.xc = level.method
    mf.conv_tol = 1e-9
    energy = mf.kernel()
    if not mf.converged:
        raise CalculationError(f"counterpoise SCF of a QM part ({len(symbols)} centres) did not converge")
    return float(energy) * HARTREE_KJMOL


def counterpoise(symbols: list[str], coords_nm: np.ndarray, side: np.ndarray, charges: tuple[int, int],
                 level: Level) -> float:
    """E_CP (kJ/mol) of the QM points ``symbols``/``coords_nm`` whose partner is ``side`` (0/1), the parts
    carrying ``charges``; 0 when one partner has no QM atom."""
    if side.min() == side.max():
        return 0.0
    total = 0.0
    for k in (0, 1):
        own = side == k
        alone = _energy([s for s, o in zip(symbols, own, strict=True) if o], coords_nm[own], charges[k], level)
        ghosts = [s if o else f"ghost-{s}" for s, o in zip(symbols, own, strict=True)]
        total += alone - _energy(ghosts, coords_nm, charges[k], level)
    return total
