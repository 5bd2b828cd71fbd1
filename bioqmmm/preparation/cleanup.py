"""From a parsed file to clean chains: one model, one conformer, named variants, gaps and breaks resolved.

Everything here works on the file as deposited, before any atom is built:

* alternate locations: per residue, the conformer with the highest mean occupancy is kept
  (the same label for every atom of the residue, ligands included);
* residue names: Amber/CHARMM protonation names (HID, CYX, ASH ...) become the standard name and
  fix that residue's variant; water names become HOH;
* crystallisation additives (:data:`ADDITIVES`) and, if asked, crystal waters are removed;
* chains are cut into bonded fragments: a TER record between bonded residues is ignored, a
  geometric break becomes either residues to build (when the sequence says what is missing and the
  gap is at most ``max_gap`` long), ACE/NME caps, or plain termini;
* deposited hydrogens of standard residues are stripped unless they are exactly the set OpenMM would
  add (so that a prepared file passes through unchanged); hydrogens of ligands are kept.
"""

from __future__ import annotations

import itertools
import string
from dataclasses import dataclass, field

import gemmi
import numpy as np
from openmm import unit
from openmm.app.internal.unitcell import computePeriodicBoxVectors

from bioqmmm.errors import PreparationError
from bioqmmm.preparation.reading import ResidueKey, Source
from bioqmmm.preparation.report import Report
from bioqmmm.preparation.residues import (
    ADDITIVES,
    AMINO_ACIDS,
    NONSTANDARD_PARENTS,
    VARIANT_NAMES,
    WATER_NAMES,
    category,
    expected_hydrogens,
)

#: Bonded-neighbour tests between consecutive polymer residues, nm.
PEPTIDE_BOND_MAX = 0.2  # C(i)-N(i+1); a peptide bond is 0.133 nm
CA_CA_BONDED_MAX = 0.42  # fallback when C or N is missing; trans/cis peptides give 0.38 / 0.29 nm
NUCLEIC_BOND_MAX = 0.2  # O3'(i)-P(i+1)


@dataclass
class DraftAtom:
    name: str
    element: str
    xyz: np.ndarray  # nm


@dataclass
class DraftResidue:
    key: ResidueKey
    name: str
    atoms: list[DraftAtom]
    category: str
    variant: str | None = None
    origin: ResidueKey | None = None  # key as in the file (before chain renaming), for file:line messages

    @property
    def label(self) -> str:
        chain, number, icode, _ = self.key
        return f"{chain}:{self.name}{number}{icode}"

    def atom(self, name: str) -> DraftAtom | None:
        return next((a for a in self.atoms if a.name == name), None)

    @property
    def heavy(self) -> list[DraftAtom]:
        return [a for a in self.atoms if a.element != "H"]


@dataclass
class DraftChain:
    """One bonded fragment (or the non-polymer residues of a chain); ``build`` maps insertion index -> names."""

    id: str
    residues: list[DraftResidue]
    build: dict[int, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class CleanupOptions:
    keep_water: bool = True
    keep_additives: bool = False
    max_gap: int = 10
    long_gaps: str = "error"  # or "cap"
    chain_breaks: str = "cap"  # or "termini"


def clean(source: Source, options: CleanupOptions, report: Report) -> tuple[list[DraftChain], np.ndarray | None]:
    """Chains ready to be completed, and the crystal/periodic box (3x3 nm, rows a, b, c) if the file has one."""
    structure = source.structure
    if len(structure) > 1:
        report.change("model", f"kept model 1 of {len(structure)}")
    structure.setup_entities()
    structure.assign_label_seq_id(False)
    chains: list[DraftChain] = []
    removed: dict[str, list[str]] = {"additive": [], "water": []}
    for chain in structure[0]:
        entity = structure.get_entity_of(chain.get_polymer())
        sequence = list(entity.full_sequence) if entity is not None else []
        polymer: list[tuple[DraftResidue, int | None, bool]] = []
        others: list[DraftResidue] = []
        for residue in _one_per_position(chain, report):
            draft = _draft_residue(source, chain.name, residue, report)
            if draft.category == "ligand" and draft.name in ADDITIVES and not options.keep_additives:
                removed["additive"].append(draft.label)
            elif draft.category == "water" and not options.keep_water:
                removed["water"].append(draft.label)
            elif draft.category == "polymer":
                polymer.append((draft, residue.label_seq, draft.key in source.ter_after))
            else:
                others.append(draft)
        chains += _fragments(source, chain.name, polymer, sequence, options, report)
        if others:
            chains.append(DraftChain(chain.name, others))
    if removed["additive"]:
        report.change("additives-removed", f"removed {len(removed['additive'])} crystallisation additive(s)",
                      removed["additive"])
    if removed["water"]:
        report.change("waters-removed", f"removed {len(removed['water'])} crystal water(s)", removed["water"])
    if not any(c.residues for c in chains):
        raise PreparationError(f"{source.path}: nothing left to prepare after removing waters and additives")
    _name_chains(chains, report)
    _strip_hydrogens(chains, report)
    cell = structure.cell
    box = None
    if cell.is_crystal():  # OpenMM's reduced form, as OpenMM itself reads CRYST1
        vectors = computePeriodicBoxVectors(cell.a / 10, cell.b / 10, cell.c / 10,
                                            *(np.radians([cell.alpha, cell.beta, cell.gamma])))
        box = np.array([v.value_in_unit(unit.nanometer) for v in vectors])
    return chains, box


def _one_per_position(chain: gemmi.Chain, report: Report) -> list[gemmi.Residue]:
    """Microheterogeneity (two residue types deposited at one position as altlocs): keep the more occupied."""
    kept: list[gemmi.Residue] = []
    for _, group in itertools.groupby(chain, key=lambda r: (r.seqid.num, r.seqid.icode)):
        group = list(group)
        if len(group) > 1 and len({r.name for r in group}) == len(group):
            occupancy = [np.mean([a.occ for a in r]) for r in group]
            best = int(np.argmax(occupancy))
            others = ", ".join(f"{r.name} ({o:.2f})" for i, (r, o) in enumerate(zip(group, occupancy, strict=True))
                               if i != best)
            report.change("altloc", f"kept residue {group[best].name} (occupancy {occupancy[best]:.2f}) over {others}",
                          [f"{chain.name}:{group[best].seqid.num}{group[best].seqid.icode.strip()}"])
            group = [group[best]]
        kept += group
    return kept


def _draft_residue(source: Source, chain_id: str, residue: gemmi.Residue, report: Report) -> DraftResidue:
    key = (chain_id, residue.seqid.num, residue.seqid.icode.strip(), residue.name)
    name, variant = VARIANT_NAMES.get(residue.name, (residue.name, None))
    if name in WATER_NAMES:
        name = "HOH"
    atoms = list(residue)
    labels = sorted({a.altloc for a in atoms if a.altloc != "\0"})
    if labels:
        occupancy = {lab: np.mean([a.occ for a in atoms if a.altloc == lab]) for lab in labels}
        best = max(labels, key=lambda lab: (occupancy[lab], -labels.index(lab)))
        atoms = [a for a in atoms if a.altloc in ("\0", best)]
        others = ", ".join(f"{lab} ({occupancy[lab]:.2f})" for lab in labels if lab != best)
        over = f" over {others}" if others else " (the only one deposited)"
        report.change("altloc", f"kept conformer {best} (occupancy {occupancy[best]:.2f}){over}",
                      [f"{chain_id}:{residue.name}{residue.seqid.num}{key[2]}"])
    drafted = []
    for atom in atoms:
        element = atom.element.name
        if element in ("X", ""):
            raise PreparationError(f"{source.where(key)}: atom {atom.name} of residue {residue.name}{key[1]} "
                                   "has no recognisable element")
        drafted.append(DraftAtom(atom.name, element.capitalize() if len(element) > 1 else element,
                                 np.array([atom.pos.x, atom.pos.y, atom.pos.z]) / 10.0))
    heavy = [a for a in drafted if a.element != "H"]
    kind = category(name, len(heavy), heavy[0].element if heavy else "H")
    if kind == "ligand" and {"N", "CA", "C"} <= {a.name for a in heavy}:
        kind = "polymer"  # an amino acid PDBFixer has no parent for (e.g. MLY): it stays in its chain
    return DraftResidue(key, name, drafted, kind, variant, origin=key)


def _bonded(a: DraftResidue, b: DraftResidue) -> bool:
    """Whether consecutive polymer residues ``a`` -> ``b`` are covalently linked (by geometry)."""
    if a.atom("O3'") is not None and b.atom("P") is not None:
        return np.linalg.norm(a.atom("O3'").xyz - b.atom("P").xyz) < NUCLEIC_BOND_MAX
    c, n = a.atom("C"), b.atom("N")
    if c is not None and n is not None:
        return np.linalg.norm(c.xyz - n.xyz) < PEPTIDE_BOND_MAX
    ca_a, ca_b = a.atom("CA"), b.atom("CA")
    if ca_a is not None and ca_b is not None:
        return np.linalg.norm(ca_a.xyz - ca_b.xyz) < CA_CA_BONDED_MAX
    return False


def _parent(name: str) -> str:
    return NONSTANDARD_PARENTS.get(name, name)


def _fragments(source, chain_id, polymer, sequence, options, report) -> list[DraftChain]:
    """Cut a chain's polymer residues into bonded fragments, deciding what each gap becomes."""
    if not polymer:
        return []
    fragments = [DraftChain(chain_id, [polymer[0][0]])]

    def missing_or_cap(where: str, names: list[str], insert_at: int, cap: str, fragment: DraftChain,
                       at: DraftResidue):
        label = at.label
        if len(names) <= options.max_gap:
            fragment.build[insert_at] = [_parent(n) for n in names]
            report.change("missing-residues", f"built {len(names)} missing residue(s) {where}: {'-'.join(names)}",
                          [label])
            return
        if options.long_gaps != "cap":
            raise PreparationError(
                f"{source.where(at.key)}: gap of {len(names)} missing residues {where} in chain "
                f"{chain_id!r} is longer than max_gap={options.max_gap}; raise max_gap or use long_gaps='cap'"
            )
        fragment.build[insert_at] = [cap]
        report.change("cap", f"{cap} cap where {len(names)} residues are missing {where}", [label])

    first, first_seq, _ = polymer[0]
    if sequence and first_seq and first_seq > 1 and first.name in AMINO_ACIDS:
        missing_or_cap(f"before {first.label}", sequence[: first_seq - 1], 0, "ACE", fragments[0], first)
    for (prev, prev_seq, ter), (res, seq, _) in zip(polymer, polymer[1:], strict=False):
        current = fragments[-1]
        if _bonded(prev, res):
            if ter:
                report.change("chain-merged", "ignored a TER record between bonded residues", [prev.label, res.label])
            current.residues.append(res)
            continue
        gap = sequence[prev_seq : seq - 1] if sequence and prev_seq and seq and seq - prev_seq > 1 else []
        if (ter and not gap) or prev.name == "NME" or res.name == "ACE":
            fragments.append(DraftChain(chain_id, [res]))  # a real chain end (TER) or an existing cap
        elif gap and len(gap) <= options.max_gap:
            missing_or_cap(f"between {prev.label} and {res.label}", gap, len(current.residues), "", current, res)
            current.residues.append(res)
        elif gap and options.long_gaps != "cap":
            missing_or_cap(f"between {prev.label} and {res.label}", gap, 0, "", current, res)
        else:
            nxt = DraftChain(chain_id, [res])
            if options.chain_breaks == "cap" or gap:
                current.build[len(current.residues)] = ["NME"]
                nxt.build[0] = ["ACE"]
                why = f"{len(gap)} residues missing" if gap else "no sequence information"
                report.change("cap", f"chain break capped with NME/ACE ({why})", [prev.label, res.label])
            else:
                report.change("chain-break", "chain break left as C- and N-termini", [prev.label, res.label])
            fragments.append(nxt)
    last, last_seq, _ = polymer[-1]
    if sequence and last_seq and last_seq < len(sequence) and last.name in AMINO_ACIDS:
        tail = fragments[-1]
        missing_or_cap(f"after {last.label}", sequence[last_seq:], len(tail.residues), "NME", tail, last)
    return fragments


def _name_chains(chains: list[DraftChain], report: Report) -> None:
    """Give blank chain ids the first unused letters, one per fragment."""
    used = {c.id for c in chains}
    free = iter(ch for ch in string.ascii_uppercase + string.ascii_lowercase + string.digits if ch not in used)
    renamed = []
    for chain in chains:
        if not chain.id.strip():
            chain.id = next(free)
            for residue in chain.residues:
                residue.key = (chain.id, *residue.key[1:])
            renamed.append(chain.id)
    if renamed:
        report.change("chain-ids", f"blank chain ids set to {', '.join(renamed)}")


def _strip_hydrogens(chains: list[DraftChain], report: Report) -> None:
    """Remove deposited hydrogens of standard residues unless they are already complete."""
    stripped: list[str] = []
    for chain in chains:
        n = len(chain.residues)
        for i, residue in enumerate(chain.residues):
            present = frozenset(a.name for a in residue.atoms if a.element == "H")
            if not present or residue.category not in ("polymer", "water"):
                continue
            n_term = i == 0 and 0 not in chain.build
            c_term = i == n - 1 and n not in chain.build
            complete = [v for v, names in expected_hydrogens(residue.name, n_term, c_term).items() if names == present]
            if complete and (residue.variant is None or residue.variant in complete or complete == [None]):
                residue.variant = residue.variant or complete[0]
                continue
            residue.atoms = residue.heavy
            stripped.append(f"{residue.label}({len(present)})")
    if stripped:
        report.change("hydrogens-stripped", f"deposited hydrogens removed from {len(stripped)} residue(s) "
                      "(to be rebuilt at the requested pH)", stripped)
