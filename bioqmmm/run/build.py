"""From a validated protocol file to a QMMMSystem and its start positions (no QM computation)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

from bioqmmm.errors import InputError
from bioqmmm.examples import FORCEFIELD_FILES, alanine_dipeptide, formamide, salt_bridge, water_box
from bioqmmm.preparation import load_prepared
from bioqmmm.preparation.forcefields import ForceFieldSetup
from bioqmmm.qm.factory import Level, create_engine
from bioqmmm.qmmm.embedding import PeriodicEmbedding
from bioqmmm.qmmm.system import QMMMSystem
from bioqmmm.region.protein import residues, sidechain
from bioqmmm.region.region import QMRegion
from bioqmmm.region.selection import resolve_qm_atoms
from bioqmmm.run.protocol import ProtocolFile, QMSection, SystemSection
from bioqmmm.simulation.environment import fixed_atoms, mm_context

#: MM relaxation of a freshly built example (solvation leaves clashes): tolerance kJ/mol/nm, iterations.
EXAMPLE_RELAX_TOLERANCE = 10.0
EXAMPLE_RELAX_MAX_ITERATIONS = 1000


def build_model(section: SystemSection, base: Path | None = None):
    """(topology, reference System, positions nm, box vectors nm or None) of the ``system`` block, as built."""
    if section.example is not None:
        examples = {"alanine_dipeptide": alanine_dipeptide, "formamide": formamide, "water_box": water_box,
                    "salt_bridge": salt_bridge}
        build = examples[section.example]
        rigid = section.constraints == "hbonds"
        top, system, pos = build(section.box_size_nm, section.nonbonded_cutoff_nm, rigid=rigid)
    elif section.prepared is not None:
        folder = Path(section.prepared)
        prepared = load_prepared(folder if folder.is_absolute() or base is None else base / folder)
        return prepared.topology, prepared.system, prepared.positions, prepared.box
    else:
        path = Path(section.pdb)
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.exists():
            raise InputError(f"system pdb file {path} does not exist")
        structure = app.PDBxFile(str(path)) if path.suffix.lower() in (".cif", ".mmcif") else app.PDBFile(str(path))
        top, pos = structure.topology, structure.positions
        system = create_system(section, top, str(path))
    box = top.getPeriodicBoxVectors()
    box_nm = None if box is None else np.array(box.value_in_unit(unit.nanometer))
    return top, system, np.array(pos.value_in_unit(unit.nanometer)), box_nm


def create_system(section: SystemSection, topology: app.Topology, name: str = "the structure") -> openmm.System:
    """A System for ``topology`` with the ``system`` block's force field files and options (PME when the
    topology has box vectors, else no cut-off); ``name`` is the structure named in errors."""
    if section.prepared is not None:
        raise InputError(f"{name}: a prepared system's force field cannot parametrise another structure; give "
                         "the system as pdb with its force field files")
    periodic = topology.getPeriodicBoxVectors() is not None
    try:
        return app.ForceField(*section.forcefield).createSystem(
            topology,
            nonbondedMethod=app.PME if periodic else app.NoCutoff,
            nonbondedCutoff=section.nonbonded_cutoff_nm * unit.nanometer,
            constraints=app.HBonds if section.constraints == "hbonds" else None,
            rigidWater=section.constraints == "hbonds",
        )
    except (ValueError, KeyError) as exc:  # OpenMM: missing template, unknown file
        raise InputError(f"cannot parametrise {name} with {', '.join(section.forcefield)}: {exc}") from exc


def model_forcefield(section: SystemSection, base: Path | None = None) -> ForceFieldSetup | None:
    """The force field the ``system`` block's model was built with (None for the formamide example, whose
    charges are set by hand)."""
    if section.prepared is not None:
        folder = Path(section.prepared)
        return load_prepared(folder if folder.is_absolute() or base is None else base / folder).forcefield
    if section.pdb is not None:
        return ForceFieldSetup(list(section.forcefield))
    return None if section.example == "formamide" else ForceFieldSetup(list(FORCEFIELD_FILES))


def relax_example(system: openmm.System, positions: np.ndarray, fixed: Sequence[int] = ()) -> np.ndarray:
    """A freshly solvated example relaxed with its MM force field (short L-BFGS), nm; ``fixed`` atoms
    (the QM region, whose MM model may lack bonded terms) do not move."""
    system = openmm.XmlSerializer.clone(system)
    fixed = {int(i) for i in fixed}  # closed under constraints: a constraint has both atoms fixed or neither
    for i in fixed:
        system.setParticleMass(i, 0.0)
    for k in reversed(range(system.getNumConstraints())):
        if system.getConstraintParameters(k)[0] in fixed:
            system.removeConstraint(k)
    context = mm_context(system)
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, EXAMPLE_RELAX_TOLERANCE, EXAMPLE_RELAX_MAX_ITERATIONS)
    return np.asarray(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))


def qm_selection(topology: app.Topology, section: QMSection) -> list[int]:
    """Union of ``atoms``, ``sidechains`` and ``residues`` of the ``qm`` block (Topology indices)."""
    atoms: set[int] = set()
    if section.atoms is not None:
        selection = section.atoms if isinstance(section.atoms, str) else list(section.atoms)
        atoms |= set(resolve_qm_atoms(topology, selection))
    for spec in section.sidechains:
        atoms |= set(sidechain(topology, spec))
    if section.residues:
        atoms |= set(residues(topology, section.residues))
    return sorted(atoms)


def build_qmmm(config: ProtocolFile) -> tuple[QMMMSystem, np.ndarray, np.ndarray | None]:
    """The QMMMSystem of a protocol file, its start positions (nm) and box (nm, or None).

    Everything is validated (selection, boundary, charge and multiplicity, basis) before the
    only computation here, the MM relaxation of a freshly solvated example.
    """
    base = config.base_dir()
    top, system, positions, box = build_model(config.system, base)
    qmmm = qmmm_model(config, top, system)
    if config.system.example is not None:
        positions = relax_example(system, positions, fixed_atoms(system, set(qmmm.qm_atoms)))
    return qmmm, positions, box


def qm_at(qm: QMSection, level: Level | None) -> QMSection:
    """The ``qm`` block at another level of theory: same region; the block's engine options stay under a
    level of the same engine (the level's own options win), another engine takes only the level's."""
    if level is None:
        return qm
    changes: dict = {"method": level.method, "basis": level.basis or qm.basis}
    if level.engine != qm.engine:
        changes.update(engine=level.engine, options=dict(level.options))
    elif level.options:
        changes["options"] = {**qm.options, **level.options}
    return dataclasses.replace(qm, **changes)


def qm_region(config: ProtocolFile, topology: app.Topology) -> QMRegion:
    """The validated QM region of the ``qm`` block (selection, cuts, electron count)."""
    qm = config.qm
    return QMRegion.select(topology, qm_selection(topology, qm), charge=qm.charge, multiplicity=qm.multiplicity,
                           boundary_charges=qm.boundary_charges, allow_polar_cut=qm.allow_polar_cut)


def qmmm_model(config: ProtocolFile, topology: app.Topology, system: openmm.System,
               level: Level | None = None, region: QMRegion | None = None) -> QMMMSystem:
    """A QMMMSystem of ``config``'s QM region (``region`` when it is made already) over the reference
    ``system`` (not modified), at the ``qm`` block's level of theory or at ``level``."""
    qm = qm_at(config.qm, level)
    engine = create_engine(qm.level(), config.resources.threads)
    embedding = None
    if system.usesPeriodicBoundaryConditions():
        embedding = PeriodicEmbedding(cutoff=qm.embedding.cutoff_nm, switch_width=qm.embedding.switch_width_nm)
    return QMMMSystem(topology, system, region or qm_region(config, topology), engine=engine, embedding=embedding,
                      platform=config.resources.platform)
