"""QM-region helpers for proteins: a side chain, residues, a metal with its ligands.

Each helper returns sorted Topology atom indices for ``QMMMSystem(qm_atoms=...)`` and places
the QM/MM boundary at C–C single bonds, the cuts :mod:`bioqmmm.region.boundary` accepts by default:
Cα–Cβ for a side chain, Cα–C for a backbone segment.

A residue is named by a ``Residue`` object or a string ``"[CHAIN:][RESNAME]RESID"`` such as
``"ASP66"``, ``"A:66"`` or ``"A:ASP66"`` (residue ids as in the PDB file).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
from openmm import app

from bioqmmm.errors import SelectionError
from bioqmmm.units import positions_nm

_SPEC = re.compile(r"^(?:(?P<chain>[^:]+):)?(?P<name>[A-Za-z][A-Za-z0-9]*?)?(?P<id>-?\d+[A-Za-z]?)$")

#: Terminal caps, taken whole by :func:`residues`.
CAPS = frozenset({"ACE", "NME", "NMA"})

#: Backbone atom names (a metal ligand among them brings its peptide group, not the side chain).
BACKBONE = frozenset({"N", "H", "CA", "HA", "C", "O", "OXT", "H1", "H2", "H3"})

#: Elements that coordinate metals in proteins.
LIGATING_ELEMENTS = frozenset({"N", "O", "S", "Se"})

ResidueSpec = str | app.topology.Residue


def find_residue(topology: app.Topology, spec: ResidueSpec) -> app.topology.Residue:
    """The one residue named by ``spec``; an error lists the candidates when it is ambiguous."""
    if isinstance(spec, app.topology.Residue):
        return spec
    match = _SPEC.match(str(spec).strip())
    if match is None:
        raise SelectionError(f"cannot read residue {spec!r}: use e.g. 'ASP66', '66' or 'A:ASP66'")
    chain, name, resid = match.group("chain"), match.group("name"), match.group("id")
    found = [
        r
        for r in topology.residues()
        if r.id == resid and (chain is None or r.chain.id == chain) and (name is None or r.name == name.upper())
    ]
    if not found:
        raise SelectionError(f"no residue {spec!r} in the topology")
    if len(found) > 1:
        where = ", ".join(f"{r.chain.id}:{r.name}{r.id}" for r in found)
        raise SelectionError(f"residue {spec!r} is ambiguous ({where}): add the chain, e.g. 'A:{found[0].name}{resid}'")
    return found[0]


def _atom(residue: app.topology.Residue, name: str) -> app.topology.Atom:
    for atom in residue.atoms():
        if atom.name == name:
            return atom
    raise SelectionError(f"residue {residue.name}{residue.id} has no atom {name}")


def _inner_neighbours(residue: app.topology.Residue) -> dict[int, set[int]]:
    inner = {a.index: set() for a in residue.atoms()}
    for a, b in residue.internal_bonds():
        inner[a.index].add(b.index)
        inner[b.index].add(a.index)
    return inner


def sidechain(topology: app.Topology, residue: ResidueSpec) -> list[int]:
    """The side chain from Cβ outward (with its hydrogens): the QM/MM cut is Cα–Cβ."""
    res = find_residue(topology, residue)
    ca, cb = _atom(res, "CA"), _atom(res, "CB")
    inner = _inner_neighbours(res)
    seen, stack = {cb.index}, [cb.index]
    while stack:
        for nxt in inner[stack.pop()] - {ca.index}:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    if _atom(res, "N").index in seen:
        raise SelectionError(
            f"the side chain of {res.name}{res.id} is bonded to its backbone N (a ring): select the whole residue"
        )
    return sorted(seen)


def _peptide_partner(residue: app.topology.Residue, own: str, other: str) -> app.topology.Residue | None:
    """The residue bonded to this one through atoms ``own`` (here) and ``other`` (there), if any."""
    for a, b in residue.external_bonds():
        mine, theirs = (a, b) if a.residue is residue else (b, a)
        if mine.name == own and theirs.name == other:
            return theirs.residue
    return None


def residues(topology: app.Topology, specs: Iterable[ResidueSpec]) -> list[int]:
    """Whole residues, with each backbone boundary moved to a Cα–C bond.

    Peptide bonds are never cut: where the residue before a selected one is not selected, its
    C=O joins the QM region; where the residue after is not selected, this residue's C=O stays
    MM. Consecutive selected residues are whole; an ACE/NME cap next to a selected residue is
    taken whole (it has no Cα to cut at); ligands, waters and ions are taken whole.
    """
    chosen = [find_residue(topology, s) for s in specs]
    selected = {r.index for r in chosen}
    atoms: set[int] = set()
    for res in chosen:
        atoms |= {a.index for a in res.atoms()}
        before = _peptide_partner(res, "N", "C")
        if before is not None and before.index not in selected:
            if before.name in CAPS:
                atoms |= {a.index for a in before.atoms()}
            else:
                atoms |= {_atom(before, "C").index, _atom(before, "O").index}
        after = _peptide_partner(res, "C", "N")
        if after is not None and after.index not in selected:
            if after.name in CAPS:
                atoms |= {a.index for a in after.atoms()}
            else:
                atoms -= {_atom(res, "C").index, _atom(res, "O").index}
    return sorted(atoms)


def metal_site(topology: app.Topology, positions, metal: ResidueSpec, cutoff: float = 0.28) -> list[int]:
    """A metal ion with the side chains (or whole small molecules) that coordinate it.

    Ligand atoms are N, O, S, Se within ``cutoff`` (nm) of the metal in ``positions`` (plain
    distances: give positions with the site whole); the choice of residues may use distances,
    the cut bonds never do. A side-chain ligand contributes its side chain (Cα–Cβ cut); a
    backbone carbonyl O its residue and the next (so the C=O is QM, :func:`residues`), a
    backbone N its residue.
    """
    res = find_residue(topology, metal)
    metal_atoms = list(res.atoms())
    if len(metal_atoms) != 1:
        raise SelectionError(
            f"{res.name}{res.id} has {len(metal_atoms)} atoms; a metal site needs a single-ion residue"
        )
    xyz = positions_nm(positions)
    distance = np.linalg.norm(xyz - xyz[metal_atoms[0].index], axis=1)
    ligands = [
        atom
        for atom in topology.atoms()
        if atom.residue is not res
        and atom.element is not None
        and atom.element.symbol in LIGATING_ELEMENTS
        and distance[atom.index] < cutoff
    ]
    if not ligands:
        raise SelectionError(f"no N, O, S or Se atom within {cutoff} nm of {res.name}{res.id}")
    selected = {metal_atoms[0].index}
    for atom in ligands:
        owner = atom.residue
        if not {"N", "CA", "C"} <= {a.name for a in owner.atoms()}:
            selected |= {a.index for a in owner.atoms()}
        elif atom.name not in BACKBONE:
            selected |= set(sidechain(topology, owner))
        else:
            after = _peptide_partner(owner, "C", "N") if atom.name in ("O", "OXT") else None
            selected |= set(residues(topology, [owner] + ([after] if after is not None else [])))
    return sorted(selected)
