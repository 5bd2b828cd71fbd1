"""Computational alanine scanning: a residue truncated to alanine at Cβ.

The side chain beyond Cβ is deleted; Cβ keeps its position and carries three hydrogens (HB1–HB3) at
0.109 nm along its former bonds (to its hydrogens and to the deleted heavy atoms), so the backbone and
every other atom stay where they were (Massova & Kollman, J. Am. Chem. Soc. 121, 8133 (1999)).
Mutations are written ``CHAIN:WtNumAla`` (``H:D32A``), several joined by commas (``H:D32A,C:K97A``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from openmm import app

from bioqmmm.errors import InputError
from bioqmmm.interface.model import Structure, rebuild
from bioqmmm.interface.partners import WATER

#: One-letter codes of the residues a scan can truncate (Gly has no Cβ; Pro's ring holds its N).
ONE_LETTER = {"ARG": "R", "ASN": "N", "ASP": "D", "ASH": "D", "CYS": "C", "CYX": "C", "CYM": "C", "GLN": "Q",
              "GLU": "E", "GLH": "E", "HIS": "H", "HID": "H", "HIE": "H", "HIP": "H", "ILE": "I", "LEU": "L",
              "LYS": "K", "LYN": "K", "MET": "M", "PHE": "F", "SER": "S", "THR": "T", "TRP": "W", "TYR": "Y",
              "VAL": "V", "ALA": "A", "GLY": "G", "PRO": "P"}
CH_BOND_NM = 0.109
_MUTATION = re.compile(r"^(?P<chain>[^:]+):(?P<wt>[A-Z])(?P<id>-?\d+[A-Za-z]?)(?P<mut>[A-Z])$")


@dataclass(frozen=True)
class Mutation:
    """One point mutation: chain id, wild-type one-letter code, residue id (as in the file), new code."""

    chain: str
    wild_type: str
    resid: str
    new: str

    @classmethod
    def parse(cls, text: str) -> Mutation:
        match = _MUTATION.match(text.strip())
        if match is None:
            raise InputError(f"cannot read mutation {text!r}: write CHAIN:WtNumMut, e.g. H:D32A")
        return cls(match["chain"], match["wt"], match["id"], match["mut"])

    def __str__(self) -> str:
        return f"{self.chain}:{self.wild_type}{self.resid}{self.new}"


def parse_mutations(text: str) -> tuple[Mutation, ...]:
    """``"H:D32A,C:K97A"`` → its mutations, each to alanine."""
    mutations = tuple(Mutation.parse(part) for part in text.split(",") if part.strip())
    if not mutations:
        raise InputError(f"no mutation in {text!r}")
    for m in mutations:
        if m.new != "A":
            raise InputError(f"mutation {m}: only mutations to alanine are scanned")
    return mutations


def number(residue: app.topology.Residue) -> str:
    """Residue number with its insertion code (``100A``), as antibody numbering writes it."""
    return f"{residue.id}{residue.insertionCode.strip()}"


def label(residue: app.topology.Residue) -> str:
    """``H:TYR33`` style name of a residue (``H:TYR100A`` with an insertion code)."""
    return f"{residue.chain.id}:{residue.name}{number(residue)}"


def residue_key(residue: app.topology.Residue) -> tuple[str, bool, str]:
    """(chain id, water?, number with insertion code): the same residue in a mutant or a partner alone."""
    return residue.chain.id, residue.name in WATER, number(residue)


def scan_label(residue: app.topology.Residue) -> str:
    """The alanine mutation of ``residue`` as written in scans (``H:Y33A``)."""
    return f"{residue.chain.id}:{ONE_LETTER.get(residue.name, 'X')}{number(residue)}A"


def in_disulfide(residue: app.topology.Residue) -> bool:
    """Whether the residue's SG is bonded to another residue's S (a disulfide: no alanine scan)."""
    return any(a.element is not None and b.element is not None and a.element.symbol == b.element.symbol == "S"
               for a, b in residue.external_bonds())


def find_mutated(topology: app.Topology, mutation: Mutation) -> app.topology.Residue:
    """The residue a mutation names; its wild type must match."""
    found = [r for r in topology.residues() if r.chain.id == mutation.chain
             and number(r).upper() == mutation.resid.upper() and r.name not in WATER]
    if not found:
        raise InputError(f"mutation {mutation}: no residue {mutation.resid} in chain {mutation.chain}")
    residue = found[0]
    if ONE_LETTER.get(residue.name) != mutation.wild_type:
        raise InputError(f"mutation {mutation}: residue {mutation.chain}:{mutation.resid} is {residue.name}, "
                         f"not {mutation.wild_type}")
    if residue.name in ("GLY", "PRO", "ALA"):
        raise InputError(f"mutation {mutation}: {residue.name} cannot be truncated to alanine at Cβ")
    if in_disulfide(residue):
        raise InputError(f"mutation {mutation}: {label(residue)} is in a disulfide; truncating it would leave its "
                         "partner a thiolate")
    return residue


def truncate_to_alanine(structure: Structure, residues: list[app.topology.Residue]) -> Structure:
    """``structure`` with each residue of ``residues`` cut to alanine (module docstring)."""
    xyz = structure.positions
    drop: set[int] = set()
    added: dict[int, list] = {}
    for res in residues:
        atoms = {a.name: a for a in res.atoms()}
        if in_disulfide(res):
            raise InputError(f"{label(res)} is in a disulfide: it is not truncated to alanine")
        if "CB" not in atoms or "CA" not in atoms:
            raise InputError(f"{label(res)} has no CB or CA: it cannot be truncated to alanine")
        cb = atoms["CB"]
        bonded = [b if a is cb else a for a, b in res.internal_bonds() if cb in (a, b)]
        substituents = [a for a in bonded if a.name != "CA"]
        backbone = {"N", "H", "H1", "H2", "H3", "CA", "HA", "C", "O", "OXT", "CB"}
        drop |= {a.index for a in res.atoms() if a.name not in backbone}
        if len(substituents) != 3:
            raise InputError(f"{label(res)}: CB has {len(substituents)} substituents besides CA, expected 3")
        added[res.index] = []
        for k, atom in enumerate(substituents, start=1):
            direction = xyz[atom.index] - xyz[cb.index]
            position = xyz[cb.index] + CH_BOND_NM * direction / np.linalg.norm(direction)
            added[res.index].append((f"HB{k}", "H", position, cb.index))
    keep = [i for i in range(len(xyz)) if i not in drop]
    return rebuild(structure, keep, residue_names={r.index: "ALA" for r in residues}, added=added)
