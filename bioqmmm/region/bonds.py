"""What kind of covalent bond a QM/MM cut would break: order, ring membership, polarity.

Bonds always come from the OpenMM Topology, never from distances. Their kind is taken, in
order, from the Topology's own bond type/order (set e.g. by PDBx/mmCIF ``chem_comp_bond`` or
by the caller), from the residue templates below for the standard amino acids and caps (the
bond orders of the Amber/PDB residue definitions; OpenMM's ``residues.xml`` carries none), and
otherwise from valence: a bond to a saturated atom (4-coordinated C or N, 2-coordinated O or
S) is single. A bond whose kind cannot be established is reported as unknown, never guessed.
"""

from __future__ import annotations

from collections import deque

from openmm import app

SINGLE, DOUBLE, TRIPLE, AROMATIC, AMIDE, UNKNOWN = "single", "double", "triple", "aromatic", "amide", "unknown"

#: Pauling electronegativities of the elements that occur at QM/MM boundaries.
PAULING = {"H": 2.20, "B": 2.04, "C": 2.55, "N": 3.04, "O": 3.44, "F": 3.98, "Si": 1.90, "P": 2.19,
           "S": 2.58, "Cl": 3.16, "Se": 2.55, "Br": 2.96, "I": 2.66}

#: A bond is polar when the electronegativities differ by more than this (C-N: 0.49, C-S: 0.03).
POLAR_THRESHOLD = 0.4

_RING_SIZE = 8  # rings up to this many atoms are detected (aromatics, Pro, sugars)

_AROMATIC_RINGS = {
    "PHE": "CG CD1 CE1 CZ CE2 CD2",
    "TYR": "CG CD1 CE1 CZ CE2 CD2",
    "HIS": "CG ND1 CE1 NE2 CD2",
    "TRP": "CG CD1 NE1 CE2 CD2 | CE2 CZ2 CH2 CZ3 CE3 CD2",
}
for _name in ("HID", "HIE", "HIP", "HSD", "HSE", "HSP"):
    _AROMATIC_RINGS[_name] = _AROMATIC_RINGS["HIS"]

#: Double (or resonance-delocalised) bonds of the side chains, by residue name.
_DOUBLE = {
    "ASP": ["CG OD1", "CG OD2"],
    "GLU": ["CD OE1", "CD OE2"],
    "ASN": ["CG OD1"],
    "GLN": ["CD OE1"],
    "ARG": ["NE CZ", "CZ NH1", "CZ NH2"],
    "ACE": ["C O"],
}
_DOUBLE["ASH"], _DOUBLE["GLH"] = ["CG OD1"], ["CD OE1"]
_SIDE_CHAIN_AMIDES = {"ASN": ["CG ND2"], "GLN": ["CD NE2"]}
_BACKBONE_DOUBLE = ["C O", "C OXT"]

_SATURATED_DEGREE = {"C": 4, "N": 4, "O": 2, "S": 2}

#: Residue names the templates describe: amino acids with their protonation variants, and caps.
STANDARD_RESIDUES = frozenset(
    "ALA ARG ASN ASP CYS GLN GLU GLY HIS ILE LEU LYS MET PHE PRO SER THR TRP TYR VAL "
    "HID HIE HIP HSD HSE HSP ASH GLH LYN CYX CYM ACE NME NMA".split()
)


def _pairs(spec: list[str]) -> set[frozenset[str]]:
    return {frozenset(p.split()) for p in spec}


def _ring_pairs(rings: str) -> set[frozenset[str]]:
    pairs = set()
    for ring in rings.split("|"):
        names = ring.split()
        pairs |= {frozenset((names[i], names[(i + 1) % len(names)])) for i in range(len(names))}
    return pairs


def _is_amino_acid(residue: app.topology.Residue) -> bool:
    return residue.name in STANDARD_RESIDUES and residue.name not in ("ACE", "NME", "NMA")


def _is_amino_acid_or_cap(residue: app.topology.Residue) -> bool:
    return residue.name in STANDARD_RESIDUES


def template_kind(bond: app.topology.Bond) -> str | None:
    """Kind of ``bond`` from the standard residue templates, or None if they do not cover it."""
    a, b = bond[0], bond[1]
    if a.residue is not b.residue:
        names = {a.name, b.name}
        if names == {"C", "N"} and _is_amino_acid_or_cap(a.residue) and _is_amino_acid_or_cap(b.residue):
            return AMIDE
        return None
    residue = a.residue
    name, pair = residue.name, frozenset((a.name, b.name))
    if not _is_amino_acid_or_cap(residue):
        return None
    if name in _AROMATIC_RINGS and pair in _ring_pairs(_AROMATIC_RINGS[name]):
        return AROMATIC
    if pair in _pairs(_SIDE_CHAIN_AMIDES.get(name, [])):
        return AMIDE
    if pair in _pairs(_DOUBLE.get(name, []) + (_BACKBONE_DOUBLE if _is_amino_acid(residue) else [])):
        return DOUBLE
    return SINGLE


def _topology_kind(bond: app.topology.Bond) -> str | None:
    if bond.type is not None:
        return {app.Single: SINGLE, app.Double: DOUBLE, app.Triple: TRIPLE, app.Aromatic: AROMATIC,
                app.Amide: AMIDE}.get(bond.type, UNKNOWN)
    if bond.order is not None:
        return SINGLE if bond.order == 1 else DOUBLE
    return None


def bond_kind(bond: app.topology.Bond, neighbours: dict[int, set[int]], atoms: list[app.topology.Atom]) -> str:
    """single / double / triple / aromatic / amide / unknown, from templates, the Topology or valence.

    A peptide bond is an amide whatever bond order the Topology gives it (Kekulé writers mark it
    single). Metal neighbours do not count towards saturation (a metal-bound carbonyl O stays sp2).
    """
    template = template_kind(bond)
    if template == AMIDE:
        return AMIDE
    kind = _topology_kind(bond) or template
    if kind is not None:
        return kind
    for atom in (bond[0], bond[1]):
        symbol = _symbol(atom)
        covalent = [j for j in neighbours[atom.index] if _symbol(atoms[j]) in PAULING]
        if symbol in _SATURATED_DEGREE and len(covalent) == _SATURATED_DEGREE[symbol]:
            return SINGLE
    return UNKNOWN


def _symbol(atom: app.topology.Atom) -> str | None:
    return atom.element.symbol if atom.element is not None else None


def is_polar(symbol_a: str, symbol_b: str) -> bool:
    """True for bonds between elements differing by > 0.4 in electronegativity, or to metals."""
    if symbol_a not in PAULING or symbol_b not in PAULING:
        return True
    return abs(PAULING[symbol_a] - PAULING[symbol_b]) > POLAR_THRESHOLD


def neighbour_map(topology: app.Topology) -> dict[int, set[int]]:
    """Covalent neighbours of every atom (Topology indices)."""
    neighbours: dict[int, set[int]] = {atom.index: set() for atom in topology.atoms()}
    for bond in topology.bonds():
        neighbours[bond[0].index].add(bond[1].index)
        neighbours[bond[1].index].add(bond[0].index)
    return neighbours


def ring_through(neighbours: dict[int, set[int]], i: int, j: int, max_size: int = _RING_SIZE) -> list[int] | None:
    """Atoms of the smallest ring (up to ``max_size`` atoms) containing bond i-j, else None."""
    parent = {i: -1}
    queue = deque([(i, 1)])
    while queue:
        atom, size = queue.popleft()
        if size >= max_size:
            continue
        for nxt in neighbours[atom]:
            if (atom == i and nxt == j) or nxt in parent:
                continue
            parent[nxt] = atom
            if nxt == j:
                path = [j]
                while path[-1] != i:
                    path.append(parent[path[-1]])
                return path
            queue.append((nxt, size + 1))
    return None
