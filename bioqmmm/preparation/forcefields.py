"""Force fields for a prepared structure: the protein force field, ion templates, ligand parameters.

Order of precedence for a residue the protein force field does not know:

1. a template in a user XML file (``forcefield_files`` or ``forcefields/*.xml`` beside the input);
2. a residue entirely inside the QM region: a template with zero charges, element Lennard-Jones and
   no bonded terms (:func:`~bioqmmm.preparation.ligands.qm_only_template`);
3. any other ligand: GAFF2 + AM1-BCC through AmberTools (:func:`~bioqmmm.preparation.ligands.gaff2_template`),
   cached by chemical identity.

A residue none of these can handle (an ion without parameters, a non-standard polymer residue, a
ligand without hydrogens) is an error naming the file line and residue.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from openmm import app

from bioqmmm.errors import InputError, PreparationError
from bioqmmm.preparation.completion import label
from bioqmmm.preparation.ligands import gaff2_template, infer_net_charge, ligand_graph, qm_only_template
from bioqmmm.preparation.residues import POLYMER_NAMES

FORCEFIELDS: dict[str, tuple[str, ...]] = {
    "amber14": ("amber14-all.xml", "amber14/tip3p.xml"),
    "charmm36": ("charmm36.xml", "charmm36/water.xml"),
}
#: Implicit solvent files that go with each protein force field (GBn2, Nguyen et al. JCTC 2013, 9, 2020).
IMPLICIT: dict[str, str] = {"amber14": "implicit/gbn2.xml"}


@dataclass
class ForceFieldSetup:
    """Everything needed to rebuild the ForceField: bundled files, extra XML (user or generated), ion templates."""

    files: list[str]
    extra: dict[str, str] = field(default_factory=dict)  # file name -> XML text
    templates: dict[int, str] = field(default_factory=dict)  # residue index -> template name

    def forcefield(self) -> app.ForceField:
        forcefield = app.ForceField(*self.files)
        for text in self.extra.values():
            forcefield.loadFile(io.StringIO(text))
        return forcefield

    def residue_templates(self, topology: app.Topology) -> dict:
        residues = list(topology.residues())
        return {residues[i]: name for i, name in self.templates.items()}


def base_files(forcefield: str, solvent: str) -> list[str]:
    if forcefield not in FORCEFIELDS:
        raise InputError(f"unknown forcefield {forcefield!r}; choose one of {', '.join(FORCEFIELDS)}")
    files = list(FORCEFIELDS[forcefield])
    if solvent == "implicit":
        if forcefield not in IMPLICIT:
            raise InputError(f"implicit solvent is available with {', '.join(IMPLICIT)} only, not {forcefield}")
        files.append(IMPLICIT[forcefield])
    return files


def parameterize(
    topology: app.Topology,
    positions: np.ndarray,
    files: list[str],
    user_files: Sequence[Path],
    is_qm: Callable[[app.topology.Residue], bool],
    ligand_charges: dict[str, int],
    cache_dir: Path,
    where: Callable[[app.topology.Residue], str],
    report,
) -> ForceFieldSetup:
    """Templates for every residue of ``topology``, generating ligand parameters where needed."""
    setup = ForceFieldSetup(list(files))
    for path in user_files:
        setup.extra[Path(path).name] = Path(path).read_text()
    try:
        forcefield = setup.forcefield()
    except Exception as exc:  # OpenMM: unreadable XML, clashing definitions
        raise PreparationError(f"cannot load force field files {files + [str(p) for p in user_files]}: {exc}") from exc
    names = set(forcefield._templates)
    for residue in topology.residues():
        if len(list(residue.atoms())) == 1 and residue.name in names:
            setup.templates[residue.index] = residue.name  # e.g. FE (Fe3+) rather than FE2: the name decides
    done: set[str] = set()
    for residue in _unmatched(forcefield, topology, set(setup.templates)):
        if residue.name in done or residue.name in POLYMER_NAMES:
            continue  # standard residues (CHARMM termini match through patches, which this check ignores)
        atoms = list(residue.atoms())
        elements = {a.element.symbol for a in atoms if a.element is not None}
        if len(atoms) == 1:
            raise PreparationError(f"{where(residue)}: no force-field parameters for ion {label(residue)}; "
                                   "supply an OpenMM XML template (forcefield_files)")
        if any((a.residue is residue) != (b.residue is residue) for a, b in topology.bonds()
               if residue in (a.residue, b.residue)):
            raise PreparationError(f"{where(residue)}: non-standard residue {label(residue)} is bonded to its "
                                   "neighbours and has no template; supply an OpenMM XML template for it")
        if "H" not in elements:
            raise PreparationError(f"{where(residue)}: residue {label(residue)} has no template and no hydrogens, so "
                                   "it cannot be parameterised; give ligand_smiles (hydrogens are then placed) "
                                   "or an OpenMM XML template")
        charge = ligand_charges.get(residue.name)
        if charge is None:
            try:
                charge = infer_net_charge(ligand_graph(residue, positions), label=label(residue))
            except InputError as exc:
                raise PreparationError(f"{where(residue)}: {exc}; or give ligand_smiles so that its hydrogens "
                                       "are placed") from exc
        if is_qm(residue):
            name = f"{residue.name}-qm-only.xml"
            setup.extra[name] = qm_only_template(residue, positions)
            how = "inside the QM region: zero charges, element Lennard-Jones, no bonded terms"
        else:
            path = gaff2_template(residue, positions, charge, cache_dir, label(residue))
            name = path.name
            setup.extra[name] = path.read_text()
            how = "GAFF2 + AM1-BCC (antechamber)"
        report.decide("ligand-parameters", f"{residue.name}: {how}; net charge {charge:+d}", [label(residue)])
        forcefield.loadFile(io.StringIO(setup.extra[name]))
        done.add(residue.name)
    return setup


def _unmatched(forcefield: app.ForceField, topology: app.Topology, templated: set[int]) -> list:
    """Residues without a template; those with a template chosen by name are left out of the check
    (OpenMM's check refuses an ion that two templates match, e.g. FE and FE2)."""
    if not templated:
        return forcefield.getUnmatchedResidues(topology)
    modeller = app.Modeller(topology, np.zeros((topology.getNumAtoms(), 3)))
    modeller.delete([r for r in topology.residues() if r.index in templated])
    missing = {label(r) for r in forcefield.getUnmatchedResidues(modeller.topology)}
    return [r for r in topology.residues() if label(r) in missing]
