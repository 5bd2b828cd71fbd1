"""What holds an interface together: contact residues, buried area, hydrogen bonds, salt bridges.

Buried area per residue is its solvent-accessible surface (Shrake–Rupley, probe 0.14 nm, mdtraj) in
the partner alone minus in the complex. Hydrogen bonds follow Baker & Hubbard (J. Mol. Biol. 179, 1
(1984); mdtraj: H···A < 0.25 nm, D–H···A > 120°) between atoms of different partners, a bridging water
counting for its own partner. Salt bridges: a cationic N (Lys NZ, Arg NE/NH1/NH2, His+ ND1/NE2, N-terminal
N) and an anionic O (Asp OD1/OD2, Glu OE1/OE2, C-terminal O/OXT) of different partners within 0.4 nm
(Barlow & Thornton, J. Mol. Biol. 168, 867 (1983)).
"""

from __future__ import annotations

from dataclasses import dataclass

import mdtraj
import numpy as np

from bioqmmm.interface.model import Structure, within
from bioqmmm.interface.mutation import label
from bioqmmm.interface.partners import WATER

SALT_BRIDGE_NM = 0.40
#: Charged groups by residue type, charged when their hydrogens say so (preparation writes standard names:
#: a HIS with HD1 and HE2 is His+, a LYS without HZ3 is neutral, an ASP with HD2 is neutral).
CATIONIC = {"LYS": ("NZ",), "ARG": ("NE", "NH1", "NH2"), "HIS": ("ND1", "NE2")}
ANIONIC = {"ASP": ("OD1", "OD2"), "GLU": ("OE1", "OE2")}
_ALIASES = {"LYN": "LYS", "HID": "HIS", "HIE": "HIS", "HIP": "HIS", "ASH": "ASP", "GLH": "GLU"}


@dataclass(frozen=True)
class Contact:
    """A cross-interface hydrogen bond or salt bridge: atom indices, their labels and distance (nm)."""

    kind: str
    first: int
    second: int
    names: tuple[str, str]
    distance: float
    hydrogen: int | None = None

    def atoms(self) -> tuple[int, int]:
        return self.first, self.second


def _traj(structure: Structure) -> mdtraj.Trajectory:
    return mdtraj.Trajectory(structure.positions[None], mdtraj.Topology.from_openmm(structure.topology))


def atom_label(atom) -> str:
    return f"{label(atom.residue)}:{atom.name}"


def interface_residues(structure: Structure, cutoff: float) -> list[int]:
    """Residue indices (non-water) with a heavy atom within ``cutoff`` nm of a heavy atom of the other partner."""
    atoms = list(structure.topology.atoms())
    heavy = np.array([a.element is not None and a.element.symbol != "H" and a.residue.name not in WATER
                      for a in atoms])
    sides = [np.flatnonzero(heavy & (structure.side == k)) for k in (0, 1)]
    found = {atoms[i].residue.index for k in (0, 1)
             for i in sides[k][within(structure.positions, sides[k], sides[1 - k], cutoff)]}
    return sorted(found)


def buried_area(structure: Structure) -> np.ndarray:
    """Buried solvent-accessible area (nm²) of every residue: alone minus in the complex (waters left out)."""
    protein = np.array([a.residue.name not in WATER for a in structure.topology.atoms()])
    buried = np.zeros(structure.topology.getNumResidues())
    complex_ = structure.subset(np.flatnonzero(protein))
    buried[_residue_indices(structure, complex_)] -= mdtraj.shrake_rupley(_traj(complex_), mode="residue")[0]
    for k in (0, 1):
        alone = structure.subset(np.flatnonzero(protein & (structure.side == k)))
        buried[_residue_indices(structure, alone)] += mdtraj.shrake_rupley(_traj(alone), mode="residue")[0]
    return buried


def _residue_indices(structure: Structure, sub: Structure) -> list[int]:
    """The index in ``structure`` of each residue of ``sub``, in order."""
    full = {(r.chain.id, r.id, r.insertionCode, r.name): r.index for r in structure.topology.residues()}
    return [full[(r.chain.id, r.id, r.insertionCode, r.name)] for r in sub.topology.residues()]


def hydrogen_bonds(structure: Structure) -> list[Contact]:
    """Hydrogen bonds between the two partners (module docstring)."""
    atoms = list(structure.topology.atoms())
    found = []
    for donor, hydrogen, acceptor in mdtraj.baker_hubbard(_traj(structure), freq=0.0, exclude_water=False):
        if structure.side[donor] != structure.side[acceptor]:
            d = float(np.linalg.norm(structure.positions[donor] - structure.positions[acceptor]))
            found.append(Contact("hbond", int(donor), int(acceptor),
                                 (atom_label(atoms[donor]), atom_label(atoms[acceptor])), d, int(hydrogen)))
    return found


def _charged(residue, atom, table) -> bool:
    kind = _ALIASES.get(residue.name, residue.name)
    if atom.name not in table.get(kind, ()):
        return False
    hydrogens = {a.name for a in residue.atoms()}
    if kind == "LYS":
        return "HZ3" in hydrogens
    if kind == "HIS":
        return {"HD1", "HE2"} <= hydrogens
    if kind in ("ASP", "GLU"):
        return not hydrogens & {"HD1", "HD2", "HE1", "HE2"}
    return True


def salt_bridges(structure: Structure, cutoff: float = SALT_BRIDGE_NM) -> list[Contact]:
    """Cation–anion pairs of different partners within ``cutoff`` nm, the closest atom pair per residue pair."""
    atoms = list(structure.topology.atoms())
    terminal_n = {a.index for a in atoms if a.name == "N" and any(b.name == "H3" for b in a.residue.atoms())}
    terminal_o = {a.index for a in atoms if a.name in ("O", "OXT") and any(b.name == "OXT" for b in a.residue.atoms())}
    cations = [a.index for a in atoms if _charged(a.residue, a, CATIONIC) or a.index in terminal_n]
    anions = [a.index for a in atoms if _charged(a.residue, a, ANIONIC) or a.index in terminal_o]
    best: dict[tuple[int, int], Contact] = {}
    for i in cations:
        for j in anions:
            if structure.side[i] == structure.side[j]:
                continue
            d = float(np.linalg.norm(structure.positions[i] - structure.positions[j]))
            key = (atoms[i].residue.index, atoms[j].residue.index)
            if d < cutoff and (key not in best or d < best[key].distance):
                best[key] = Contact("salt_bridge", i, j, (atom_label(atoms[i]), atom_label(atoms[j])), d)
    return list(best.values())


def remeasure(contacts: list[Contact], positions: np.ndarray) -> list[float]:
    """The distances (nm) of ``contacts`` at other positions of the same structure."""
    return [float(np.linalg.norm(positions[c.first] - positions[c.second])) for c in contacts]
