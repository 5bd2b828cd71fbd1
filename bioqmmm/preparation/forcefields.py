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
    #: Net charge (e) of the QM-only residues, whose templates carry none: the solvent's ions must.
    qm_only_charge: int = 0

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
    amber: bool = True,
) -> ForceFieldSetup:
    """Templates for every residue of ``topology``, generating ligand parameters where needed."""
    setup = ForceFieldSetup(list(files))
    for path in user_files:
        setup.extra[Path(path).name] = Path(path).read_text()
    try:
        forcefield = setup.forcefield()
    except Exception as exc:  # OpenMM: unreadable XML, clashing definitions
        raise PreparationError(f"cannot load force field files {files + [str(p) for p in user_files]}: {exc}") from exc
    setup.templates = _ion_templates(forcefield, topology, where)
    plans: dict[str, list] = {}  # residue name -> [first residue, net charge, every copy in the QM region]
    for residue in _unmatched(forcefield, topology, set(setup.templates)):
        if residue.name in POLYMER_NAMES:
            continue  # standard residues (CHARMM termini match through patches, which this check ignores)
        if residue.name in plans:
            plans[residue.name][2] &= is_qm(residue)
            continue
        _check_parameterisable(topology, residue, where)
        charge = ligand_charges.get(residue.name)
        if charge is None:
            try:
                charge = infer_net_charge(ligand_graph(residue, positions), label=label(residue))
            except InputError as exc:
                raise PreparationError(f"{where(residue)}: {exc}; or give ligand_smiles so that its hydrogens "
                                       "are placed") from exc
        plans[residue.name] = [residue, charge, is_qm(residue)]
    if plans and not amber:
        first = next(iter(plans.values()))[0]
        raise PreparationError(f"{where(first)}: ligand parameters are generated for amber14 only (GAFF2, Amber 1-4 "
                               f"scaling); for charmm36 supply CGenFF-derived OpenMM XML for {', '.join(plans)}")
    for name, (residue, charge, qm_only) in plans.items():
        if qm_only:
            file = f"{name}-qm-only.xml"
            setup.extra[file] = qm_only_template(residue, positions)
            setup.qm_only_charge += charge * sum(r.name == name for r in topology.residues())
            how = "inside the QM region: zero charges, element Lennard-Jones, no bonded terms"
        else:  # a copy outside the QM region needs real parameters; QMMMSystem zeroes those of QM copies
            path = gaff2_template(residue, positions, charge, cache_dir, label(residue))
            file = path.name
            setup.extra[file] = path.read_text()
            how = "GAFF2 + AM1-BCC (antechamber)"
        report.decide("ligand-parameters", f"{name}: {how}; net charge {charge:+d}", [label(residue)])
        forcefield.loadFile(io.StringIO(setup.extra[file]))
    left = [r for r in _unmatched(forcefield, topology, set(setup.templates)) if r.name not in POLYMER_NAMES]
    if left:
        raise PreparationError(f"{where(left[0])}: {label(left[0])} does not match the template made from another "
                               f"copy of {left[0].name} (different atoms or hydrogens); give the copies the same "
                               "atoms, or different residue names")
    return setup


def _check_parameterisable(topology: app.Topology, residue, where) -> None:
    atoms = list(residue.atoms())
    if len(atoms) == 1:
        raise PreparationError(f"{where(residue)}: no force-field parameters for ion {label(residue)}; "
                               "supply an OpenMM XML template (forcefield_files)")
    if any((a.residue is residue) != (b.residue is residue) for a, b in topology.bonds()
           if residue in (a.residue, b.residue)):
        raise PreparationError(f"{where(residue)}: non-standard residue {label(residue)} is bonded to its "
                               "neighbours and has no template; supply an OpenMM XML template for it")
    if not any(a.element is not None and a.element.symbol == "H" for a in atoms):
        raise PreparationError(f"{where(residue)}: residue {label(residue)} has no template and no hydrogens, so "
                               "it cannot be parameterised; give ligand_smiles (hydrogens are then placed) "
                               "or an OpenMM XML template")


def _ion_templates(forcefield: app.ForceField, topology: app.Topology, where) -> dict[int, str]:
    """Template of each one-atom residue whose element several templates match (FE: Fe3+, FE2: Fe2+): the
    one named like the residue, else the only one of that element; ambiguity is an error."""
    by_element: dict[str, list[str]] = {}
    for name, template in forcefield._templates.items():
        if len(template.atoms) == 1 and template.atoms[0].element is not None:
            by_element.setdefault(template.atoms[0].element.symbol, []).append(name)
    chosen: dict[int, str] = {}
    for residue in topology.residues():
        atoms = list(residue.atoms())
        if len(atoms) != 1 or atoms[0].element is None:
            continue
        candidates = by_element.get(atoms[0].element.symbol, [])
        if residue.name in candidates:
            chosen[residue.index] = residue.name
        elif len(candidates) > 1:
            raise PreparationError(f"{where(residue)}: ion {label(residue)} matches templates {', '.join(candidates)}; "
                                   "rename the residue to the one meant (e.g. FE for Fe3+, FE2 for Fe2+)")
    return chosen


def _unmatched(forcefield: app.ForceField, topology: app.Topology, templated: set[int]) -> list:
    """Residues without a template; those with a template chosen by name are left out of the check
    (OpenMM's check refuses an ion that two templates match, e.g. FE and FE2)."""
    if not templated:
        return forcefield.getUnmatchedResidues(topology)
    modeller = app.Modeller(topology, np.zeros((topology.getNumAtoms(), 3)))
    modeller.delete([r for r in topology.residues() if r.index in templated])
    missing = {label(r) for r in forcefield.getUnmatchedResidues(modeller.topology)}
    return [r for r in topology.residues() if label(r) in missing]
