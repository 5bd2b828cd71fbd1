"""Completing clean chains: non-standard residues, missing residues and atoms (PDBFixer), hydrogens.

PDBFixer builds what is missing from its residue templates; OpenMM's Modeller adds hydrogens at
the requested pH. What we add around them: the gaps decided during clean-up (not PDBFixer's own
sequence alignment, which cannot tell a chain end from a gap), and protonation choices near metal
ions — a cysteine whose sulfur binds a metal is a thiolate (no HG), a histidine binds a metal
through the nitrogen without a hydrogen — which Modeller's hydrogen-bond rule does not see.
"""

from __future__ import annotations

import io
import random
from contextlib import contextmanager

import numpy as np
import openmm
from openmm import app, unit
from pdbfixer import PDBFixer

from bioqmmm.errors import PreparationError
from bioqmmm.preparation.cleanup import DraftChain
from bioqmmm.preparation.ligands import ligand_graph
from bioqmmm.preparation.pka import Protonation, assign, report_states
from bioqmmm.preparation.report import Report
from bioqmmm.preparation.residues import ION_ELEMENTS

#: A ligand atom of a residue binds a metal ion when closer than this, nm (Zn-N 0.21, Fe-S 0.23, Ca-O 0.24).
METAL_LIGAND_MAX = 0.28

ResidueId = tuple[int, int]  # (chain index, position in the chain before residues are built)


def label(residue: app.topology.Residue) -> str:
    """``A:HIS218`` style residue label used in reports and messages."""
    return f"{residue.chain.id}:{residue.name}{residue.id}{residue.insertionCode.strip()}"


def to_topology(chains: list[DraftChain], box: np.ndarray | None):
    """OpenMM Topology (ligand bonds perceived), positions (nm), variants by residue id, residues to build."""
    topology = app.Topology()
    positions: list[np.ndarray] = []
    variants: dict[ResidueId, str] = {}
    build: dict[tuple[int, int], list[str]] = {}
    ligands = []
    for c, draft in enumerate(chains):
        chain = topology.addChain(draft.id)
        for index, names in draft.build.items():
            build[(c, index)] = names
        for res in draft.residues:
            _, number, icode, _ = res.key
            residue = topology.addResidue(res.name, chain, str(number), icode or " ")
            for atom in res.atoms:
                topology.addAtom(atom.name, app.Element.getBySymbol(atom.element), residue)
                positions.append(atom.xyz)
            if res.variant:
                variants[(c, residue.index - chain._residues[0].index)] = res.variant
            if res.category == "ligand":
                ligands.append(residue)
    if box is not None:
        topology.setPeriodicBoxVectors(box * unit.nanometer)
    xyz = np.array(positions)
    for residue in ligands:
        atoms = list(residue.atoms())
        mol = ligand_graph(residue, xyz)
        for bond in mol.GetBonds():
            topology.addBond(atoms[bond.GetBeginAtomIdx()], atoms[bond.GetEndAtomIdx()])
    return topology, xyz, variants, build


def complete(topology: app.Topology, positions: np.ndarray, build: dict, report: Report, seed: int = 0) -> PDBFixer:
    """Replace non-standard residues, build the decided missing residues and all missing heavy atoms."""
    text = io.StringIO()  # PDBFixer reads files only; sequential ids survive the PDB format at any size
    app.PDBFile.writeFile(topology, positions * 10.0 * unit.angstrom, text, keepIds=False)
    text.seek(0)
    with reproducible(seed) as platform:  # PDBFixer relaxes built atoms with a short MD run
        fixer = PDBFixer(pdbfile=text, platform=platform)
        for new_chain, chain in zip(fixer.topology.chains(), topology.chains(), strict=True):
            new_chain.id = chain.id
            for new, residue in zip(new_chain.residues(), chain.residues(), strict=True):
                new.id, new.insertionCode = residue.id, residue.insertionCode
        unknown = sorted({n for names in build.values() for n in names} - set(fixer.templates))
        if unknown:
            raise PreparationError(f"missing residues {', '.join(unknown)} cannot be built (no PDBFixer template); "
                                   "use long_gaps='cap' with max_gap below the gap length, or complete the file")
        _complete(fixer, build, report, seed)
    return fixer


def _complete(fixer: PDBFixer, build: dict, report: Report, seed: int) -> None:
    fixer.missingResidues = dict(build)
    fixer.findNonstandardResidues()
    for residue, parent in fixer.nonstandardResidues:
        report.change("nonstandard", f"replaced by its standard parent {parent}", [label(residue)])
    fixer.replaceNonstandardResidues()
    fixer.findMissingAtoms()
    for residue, atoms in fixer.missingAtoms.items():
        report.change("missing-atoms", f"added {', '.join(a.name for a in atoms)}", [label(residue)])
    for residue, atoms in fixer.missingTerminals.items():
        report.change("missing-atoms", f"added terminal {', '.join(atoms)}", [label(residue)])
    fixer.addMissingAtoms(seed=seed)


def metal_variants(topology: app.Topology, positions: np.ndarray, report: Report) -> dict[int, str]:
    """Variants forced by metal coordination, by residue index: CYS-S-M -> CYX (thiolate), HIS -> HID/HIE."""
    metals = [a for a in topology.atoms() if a.element is not None and a.element.symbol in ION_ELEMENTS
              and len(list(a.residue.atoms())) == 1 and a.element.symbol not in ("F", "Cl", "Br", "I")]
    if not metals:
        return {}
    metal_xyz = positions[[m.index for m in metals]]

    def binds(atom) -> str | None:
        d = np.linalg.norm(metal_xyz - positions[atom.index], axis=1)
        i = int(np.argmin(d))
        return f"{metals[i].element.symbol} {label(metals[i].residue)}" if d[i] < METAL_LIGAND_MAX else None

    forced: dict[int, str] = {}
    for residue in topology.residues():
        atoms = {a.name: a for a in residue.atoms()}
        if residue.name == "CYS" and "SG" in atoms and (metal := binds(atoms["SG"])):
            forced[residue.index] = "CYX"
            report.decide("protonation", f"thiolate (no HG): SG binds {metal}", [label(residue)])
        elif residue.name == "HIS" and "ND1" in atoms and "NE2" in atoms:
            nd1, ne2 = binds(atoms["ND1"]), binds(atoms["NE2"])
            if nd1 and not ne2:
                forced[residue.index] = "HIE"
                report.decide("protonation", f"HIE: ND1 binds {nd1}", [label(residue)])
            elif ne2 and not nd1:
                forced[residue.index] = "HID"
                report.decide("protonation", f"HID: NE2 binds {ne2}", [label(residue)])
    return forced


#: Residues whose protonation choice is reported.
TITRATABLE = frozenset({"HIS", "ASP", "GLU", "LYS", "CYS"})


@contextmanager
def reproducible(seed: int):
    """Modeller places new hydrogens and ions with Python's ``random`` and relaxes hydrogens on the CPU
    platform: seed the one and make the other deterministic and single-threaded, restoring both after.
    Yields the platform to pass to Modeller."""
    platform = openmm.Platform.getPlatformByName("CPU")
    settings = {"Threads": "1", "DeterministicForces": "true"}
    saved = {key: platform.getPropertyDefaultValue(key) for key in settings}
    state = random.getstate()
    try:
        random.seed(seed)
        for key, value in settings.items():
            platform.setPropertyDefaultValue(key, value)
        yield platform
    finally:
        random.setstate(state)
        for key, value in saved.items():
            platform.setPropertyDefaultValue(key, value)


def add_hydrogens(fixer: PDBFixer, variants: dict[ResidueId, str], build: dict, protonation: Protonation,
                  report: Report, seed: int = 0) -> app.Modeller:
    """Modeller with all hydrogens at ``protonation.ph``; given variants (input names, complete H sets, metals)
    are kept, the other titratable residues get the states :func:`bioqmmm.preparation.pka.assign` chooses
    (PROPKA or the rules; the user's overrides win over everything).

    ``variants`` are keyed by position before the residues in ``build`` were inserted."""
    topology, positions = fixer.topology, np.array(fixer.positions.value_in_unit(unit.nanometer))
    chosen: list[str | None] = [None] * topology.getNumResidues()
    for chain in topology.chains():
        residues = list(chain.residues())
        shift = 0
        for position in range(len(residues)):
            shift += len(build.get((chain.index, position), ()))
            if (chain.index, position) in variants:
                chosen[residues[position + shift].index] = variants[(chain.index, position)]
    for index, variant in metal_variants(topology, positions, report).items():
        chosen[index] = chosen[index] or variant
    for a, b in (bond for bond in topology.bonds() if bond[0].name == "SG" and bond[1].name == "SG"):
        pair = [label(a.residue), label(b.residue)]
        report.decide("disulfide", f"disulfide {pair[0]}-{pair[1]}", pair)
    sites, modeller_ph = assign(topology, positions, chosen, protonation, label)
    before = topology.getNumAtoms()
    hydrogens_before = {r.index: sum(a.element == app.element.hydrogen for a in r.atoms()) for r in topology.residues()}
    modeller = app.Modeller(topology, positions * unit.nanometer)
    with reproducible(seed) as platform:
        try:
            used = modeller.addHydrogens(pH=modeller_ph, variants=chosen, platform=platform)
        except ValueError as exc:  # Modeller: a residue with the wrong set of atoms
            raise PreparationError(f"hydrogens cannot be added: {exc}") from exc
    added: list[str] = []
    states: dict[str, list[str]] = {}
    for residue in modeller.topology.residues():
        count = sum(a.element == app.element.hydrogen for a in residue.atoms())
        if count != hydrogens_before[residue.index]:
            added.append(label(residue))
        if residue.name in TITRATABLE:
            states.setdefault(used[residue.index] or residue.name, []).append(label(residue))
    for variant, residues in sorted(states.items()):
        report.decide("protonation", f"{variant} ({len(residues)})", residues)
    if modeller.topology.getNumAtoms() != before:
        report.change("hydrogens-added", f"added {modeller.topology.getNumAtoms() - before} hydrogens at pH "
                      f"{protonation.ph:g}", added)
    report_states(report, modeller.topology, np.array(modeller.positions.value_in_unit(unit.nanometer)), used,
                  sites, protonation, label)
    return modeller
