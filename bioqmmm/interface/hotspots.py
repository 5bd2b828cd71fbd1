"""The QM region of an interface: its hot-spot residues, within an atom budget.

Residues are taken in the order given (ranked by the caller), each as its side chain (Cα–Cβ cut) or,
where its backbone N–H or C=O makes a cross-interface hydrogen bond, as the whole residue with the
peptide groups that keep every cut at a Cα–C bond (:func:`bioqmmm.region.protein.residues`). A residue
that would take the region past the budget (QM atoms plus link atoms) is passed over. Waters that bridge
a chosen residue to the other partner follow while they fit. The region's charge is the sum of the MM
charges of its atoms rounded to an integer (a side chain cut at Cα–Cβ or a residue cut at Cα–C carries
its formal charge to within 0.15 e in Amber force fields), piece by covalently connected piece; a piece
whose sum is farther from an integer is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from openmm import app

from bioqmmm.errors import InputError, SelectionError
from bioqmmm.interface.contacts import Contact
from bioqmmm.interface.model import WATER_CONTACT_NM, Structure
from bioqmmm.interface.mutation import label
from bioqmmm.interface.partners import WATER
from bioqmmm.region.boundary import find_links
from bioqmmm.region.protein import BACKBONE, residues, sidechain
from bioqmmm.region.region import QMRegion

#: Largest distance (e) of a region's MM charge sum from an integer.
CHARGE_TOLERANCE = 0.25
#: Atom keys that survive truncation to alanine: (chain id, water?, residue id, insertion code, atom name).
AtomKey = tuple[str, bool, str, str, str]


@dataclass(frozen=True)
class Pick:
    """A residue of the QM region: its label, how much of it, why, and its atoms."""

    residue: str
    piece: str
    reason: str
    atoms: tuple[int, ...]


def atom_keys(topology: app.Topology) -> list[AtomKey]:
    """A name for each atom that is the same in a partner alone and in an alanine mutant."""
    return [(a.residue.chain.id, a.residue.name in WATER, a.residue.id, a.residue.insertionCode, a.name)
            for a in topology.atoms()]


def map_region(keys: frozenset[AtomKey], topology: app.Topology) -> list[int]:
    """Indices in ``topology`` of the atoms named by ``keys``; a truncated residue whose Cβ is QM brings
    its new hydrogens HB1–HB3."""
    found = []
    for index, key in enumerate(atom_keys(topology)):
        cb = key[:4] + ("CB",)
        if key in keys or (key[4] in ("HB1", "HB2", "HB3") and cb in keys):
            found.append(index)
    return found


def region_charge(atoms: list[int], charges: np.ndarray, where: str, topology: app.Topology) -> int:
    """The integer charge of a QM region: each covalently connected piece's MM charge sum rounded (module
    docstring), summed; a piece farther than 0.25 e from an integer is an error."""
    inside = set(int(i) for i in atoms)
    neighbours: dict[int, set[int]] = {i: set() for i in inside}
    for a, b in topology.bonds():
        if a.index in inside and b.index in inside:
            neighbours[a.index].add(b.index)
            neighbours[b.index].add(a.index)
    total, seen = 0, set()
    for start in sorted(inside):
        if start in seen:
            continue
        piece, stack = [], [start]
        seen.add(start)
        while stack:
            atom = stack.pop()
            piece.append(atom)
            stack += [n for n in neighbours[atom] if n not in seen]
            seen.update(neighbours[atom])
        value = float(charges[piece].sum())
        if abs(value - round(value)) > CHARGE_TOLERANCE:
            raise InputError(f"the MM charges of a piece of {where} ({len(piece)} atoms) sum to {value:+.3f} e, not "
                             "near an integer: the cut leaves a fractional charge")
        total += round(value)
    return int(total)


def _cut_count(topology: app.Topology, atoms: set[int]) -> int:
    return sum((a.index in atoms) != (b.index in atoms) for a, b in topology.bonds())


def _piece(structure: Structure, residue: app.topology.Residue, backbone_bonds: set[str]) -> tuple[list[int], str]:
    top = structure.topology
    if residue.name in WATER:
        return [a.index for a in residue.atoms()], "water"
    if backbone_bonds & {"O"}:
        after = next((b.residue for a, b in residue.external_bonds() if a.name == "C" and b.name == "N"), None)
        return residues(top, [residue] + ([after] if after is not None else [])), "residue (backbone C=O H-bond)"
    if backbone_bonds or residue.name in ("GLY", "PRO"):
        return residues(top, [residue]), "residue" + (" (backbone N-H H-bond)" if backbone_bonds else "")
    return sidechain(top, residue), "side chain"


def pick_region(structure: Structure, ranked: list[tuple[int, str]], contacts: list[Contact], budget: int,
                charges: np.ndarray) -> tuple[list[Pick], list[int], int, list[str]]:
    """(picks, QM atoms, charge, passed-over residues with the reason) for the ``ranked`` residues (residue
    index, reason) within ``budget``; a residue whose piece would cut a bond the boundary rules refuse (a
    disulfide, a ring) or leave a fractional charge is passed over."""
    atoms_list = list(structure.topology.atoms())
    residue_list = list(structure.topology.residues())
    backbone: dict[int, set[str]] = {}
    for contact in contacts:
        if contact.kind == "hbond":
            for i in contact.atoms() + ((contact.hydrogen,) if contact.hydrogen is not None else ()):
                atom = atoms_list[i]
                if atom.name in BACKBONE and atom.residue.name not in WATER:
                    backbone.setdefault(atom.residue.index, set()).add(atom.name)
    chosen: set[int] = set()
    skipped: list[str] = []
    picks: list[Pick] = []
    smallest: tuple[int, str] | None = None
    for index, reason in ranked:
        residue = residue_list[index]
        if residue.name == "GLY" and index not in backbone:
            continue
        try:
            atoms, piece = _piece(structure, residue, backbone.get(index, set()))
        except SelectionError as exc:
            skipped.append(f"{label(residue)}: {exc}")
            continue
        trial = chosen | set(atoms)
        size = len(trial) + _cut_count(structure.topology, trial)
        alone = len(atoms) + _cut_count(structure.topology, set(atoms))
        if smallest is None or alone < smallest[0]:
            smallest = (alone, f"{label(residue)} {piece}")
        if size > budget:
            continue
        problem = _unusable(structure, sorted(trial), charges)
        if problem:
            skipped.append(f"{label(residue)} {piece}: {problem}")
            continue
        chosen = trial
        picks.append(Pick(label(residue), piece, reason, tuple(sorted(atoms))))
    if not picks:
        need = f": the smallest candidate, {smallest[1]}, needs {smallest[0]}" if smallest else ""
        raise InputError(f"a QM budget of {budget} atoms (link atoms included) is too small for one interface "
                         f"residue{need}")
    picks += _bridging_waters(structure, chosen, budget)
    qm = sorted(set().union(*[set(p.atoms) for p in picks]))
    charge = region_charge(qm, charges, "the QM region", structure.topology)
    QMRegion.select(structure.topology, qm, charge=charge, multiplicity=1)  # cuts and electron count, once
    return picks, qm, charge, skipped


def _unusable(structure: Structure, atoms: list[int], charges: np.ndarray) -> str | None:
    """Why a region of ``atoms`` cannot be QM (a refused cut, a fractional charge), or None."""
    try:
        find_links(structure.topology, atoms)
        region_charge(atoms, charges, "the region with it", structure.topology)
    except InputError as exc:
        return str(exc)
    return None


def _bridging_waters(structure: Structure, chosen: set[int], budget: int) -> list[Pick]:
    polar = [a.index for a in structure.topology.atoms()
             if a.index in chosen and a.element is not None and a.element.symbol in ("N", "O")]
    picks, size = [], len(chosen) + _cut_count(structure.topology, chosen)
    for residue in structure.topology.residues():
        if residue.name not in WATER:
            continue
        atoms = [a.index for a in residue.atoms()]
        oxygen = next((a.index for a in residue.atoms() if a.element is not None and a.element.symbol == "O"), None)
        if oxygen is None:
            continue
        if polar and np.linalg.norm(structure.positions[polar] - structure.positions[oxygen], axis=1).min() \
                < WATER_CONTACT_NM and size + len(atoms) <= budget:
            size += len(atoms)
            picks.append(Pick(label(residue), "water", "bridges a chosen residue to the other partner",
                              tuple(atoms)))
    return picks
