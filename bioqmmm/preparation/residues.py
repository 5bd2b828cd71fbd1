"""Residue tables for preparation: what is polymer, water, ion or additive, and protonation-variant names."""

from __future__ import annotations

import os

from openmm import app
from openmm.app import Modeller
from pdbfixer.pdbfixer import substitutions

#: Non-standard residue -> standard parent, e.g. MSE -> MET (PDBFixer's table).
NONSTANDARD_PARENTS: dict[str, str] = substitutions

AMINO_ACIDS = frozenset(
    "ALA ARG ASN ASP CYS GLN GLU GLY HIS ILE LEU LYS MET PHE PRO SER THR TRP TYR VAL".split()
)
CAPS = frozenset({"ACE", "NME"})
NUCLEIC = frozenset("A C G U DA DC DG DT".split())
WATER_NAMES = frozenset({"HOH", "WAT", "H2O", "TIP3", "TIP", "SOL", "DOD"})

POLYMER_NAMES = AMINO_ACIDS | CAPS | NUCLEIC

#: Amber/CHARMM names of protonation variants -> (standard name, Modeller variant).
#: CYM (thiolate) and CYX (disulfide) both have no HG: Modeller's variant for either is CYX.
VARIANT_NAMES: dict[str, tuple[str, str]] = {
    "HID": ("HIS", "HID"),
    "HIE": ("HIS", "HIE"),
    "HIP": ("HIS", "HIP"),
    "HSD": ("HIS", "HID"),
    "HSE": ("HIS", "HIE"),
    "HSP": ("HIS", "HIP"),
    "CYX": ("CYS", "CYX"),
    "CYM": ("CYS", "CYX"),
    "ASH": ("ASP", "ASH"),
    "GLH": ("GLU", "GLH"),
    "LYN": ("LYS", "LYN"),
}

#: Crystallisation additives and buffer components removed by default (keep them with keep_additives=True).
#: Ions of physiological relevance (Na, K, Ca, Mg, Zn, Cl ...) are not in this list.
ADDITIVES = frozenset(
    "FMT GOL EDO PEG PGE PG4 1PE SO4 PO4 ACT ACY MPD DMS TRS EPE MES BME IMD NH4 NO3 SCN IPA EOH MOH CIT "
    "TAR MLI BTB P6G 2PE".split()
)

#: Elements treated as monatomic ions when they form a residue of their own.
ION_ELEMENTS = frozenset(
    "Li Na K Rb Cs Mg Ca Sr Ba Mn Fe Co Ni Cu Zn Cd Hg Al F Cl Br I".split()
)


def category(name: str, atoms: int, element: str) -> str:
    """'polymer', 'water', 'ion' or 'ligand' for a residue of ``name`` with ``atoms`` heavy atoms."""
    if name in WATER_NAMES:
        return "water"
    if name in AMINO_ACIDS or name in CAPS or name in NUCLEIC or name in VARIANT_NAMES or name in NONSTANDARD_PARENTS:
        return "polymer"
    if atoms == 1 and element in ION_ELEMENTS:
        return "ion"
    return "ligand"


def _hydrogen_definitions() -> dict:
    if not Modeller._hasLoadedStandardHydrogens:
        Modeller.loadHydrogenDefinitions(os.path.join(os.path.dirname(app.__file__), "data", "hydrogens.xml"))
        Modeller._hasLoadedStandardHydrogens = True
    return Modeller._residueHydrogens


def expected_hydrogens(name: str, n_terminal: bool, c_terminal: bool) -> dict[str | None, frozenset[str]]:
    """Hydrogen names OpenMM's Modeller gives residue ``name``, per protonation variant (None if no variants).

    Uses Modeller's own hydrogen definitions, so that a residue whose hydrogens already match one of
    these sets is left untouched and its variant is read from them.
    """
    data = _hydrogen_definitions().get(name)
    if data is None:
        return {}
    variants = list(data.variants) or [None]

    def wanted(h, variant) -> bool:
        if h.terminal == "N" and not n_terminal or h.terminal == "C" and not c_terminal:
            return False
        return h.variants is None or variant in h.variants

    return {v: frozenset(h.name for h in data.hydrogens if wanted(h, v)) for v in variants}
