"""What the periodic protocols share: the cells of a run, their sizes checked, and their models.

The protocol file's system is the *defect cell* (its ``qm`` block selects the QM region in it); an
optional host cell (a PDB file with the same box, parametrised with the file's force field) fills the
other copies of a supercell. Supercell Systems get a tight Ewald tolerance (energies are differenced)
and their QM/MM models the file's QM region, engine and embedding cut-offs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

from bioqmmm.errors import InputError
from bioqmmm.periodic.cells import Cell, supercell
from bioqmmm.periodic.model import CellModel
from bioqmmm.qmmm.embedding import PeriodicEmbedding
from bioqmmm.qmmm.surgery import mm_charges
from bioqmmm.qmmm.system import QMMMSystem


def defect_cell(context) -> Cell:
    """The protocol file's cell (a periodic system whose every atom is free to move)."""
    qmmm = context.qmmm
    if context.box is None:
        raise InputError("a periodic protocol needs a periodic system (a PDB file with a CRYST1 record)")
    if qmmm.reference_system.getNumConstraints():
        raise InputError("the cell has distance constraints: give the system constraints: none (strains and "
                         "relaxations move every atom)")
    return Cell(qmmm.topology, qmmm.reference_system, np.asarray(context.positions, dtype=float),
                np.asarray(context.box, dtype=float))


def host_cell(path: str, context, defect: Cell) -> Cell:
    """The host (defect-free) cell in the PDB file ``path`` (relative to the protocol file), parametrised like
    the defect cell; its box must be the defect cell's."""
    file = Path(path) if Path(path).is_absolute() else context.base / path
    if not file.exists():
        raise InputError(f"host cell {file} does not exist")
    pdb = app.PDBFile(str(file))
    if pdb.topology.getPeriodicBoxVectors() is None:
        raise InputError(f"host cell {file} has no CRYST1 record (box vectors)")
    box = np.array(pdb.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
    if not np.allclose(box, defect.box, atol=1e-4):
        raise InputError(f"host cell {file} has box {np.round(box, 4).tolist()} nm, the defect cell "
                         f"{np.round(defect.box, 4).tolist()} nm: they must be the same cell")
    system = context.system_for(pdb.topology)
    return Cell(pdb.topology, system, np.array(pdb.positions.value_in_unit(unit.nanometer)), defect.box)


def check_repeats(box: np.ndarray, system: openmm.System, repeats: Sequence[int]) -> None:
    """Every supercell must be at least twice the nonbonded cut-off wide (OpenMM's PME needs it)."""
    cutoff = max((f.getCutoffDistance().value_in_unit(unit.nanometer) for f in system.getForces()
                  if isinstance(f, openmm.NonbondedForce)), default=0.0)
    widths = abs(np.linalg.det(box)) / np.linalg.norm(np.cross(box[[1, 2, 0]], box[[2, 0, 1]]), axis=1)
    smallest = min(repeats) * widths.min()
    if smallest < 2.0 * cutoff:
        needed = int(np.ceil(2.0 * cutoff / widths.min()))
        raise InputError(f"a {min(repeats)}-fold supercell is {smallest:.3f} nm wide, less than twice the nonbonded "
                         f"cut-off {cutoff:g} nm: use repeats of {needed} or more, or a shorter cut-off")


def build_supercell(host: Cell, repeats: Sequence[int], defect: Cell | None, ewald_tolerance: float,
                    switch_width: float | None) -> Cell:
    """The supercell, its NonbondedForce at Ewald tolerance ``ewald_tolerance`` and, with ``switch_width``
    (nm), Lennard-Jones switched off smoothly over that width below the cut-off: a truncated LJ jumps when a
    neighbour crosses the cut-off under strain or relaxation."""
    cell = supercell(host, repeats, defect)
    for force in cell.system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            force.setEwaldErrorTolerance(ewald_tolerance)
            if switch_width is not None:
                cutoff = force.getCutoffDistance().value_in_unit(unit.nanometer)
                if not 0.0 < switch_width < cutoff:
                    raise InputError(f"lj_switch_nm {switch_width} must lie between 0 and the cut-off {cutoff} nm")
                force.setUseSwitchingFunction(True)
                force.setSwitchingDistance(cutoff - switch_width)
    return cell


def qmmm_model(cell: Cell, context, ewald_tolerance: float) -> tuple[QMMMSystem, CellModel]:
    """The supercell's QM/MM model (the file's QM region, which is among its first atoms, engine and embedding
    cut-offs; the far field at ``ewald_tolerance``) and its :class:`CellModel`."""
    embedding = context.qmmm.embedding
    qmmm = QMMMSystem(cell.topology, cell.system, context.qmmm.region, engine=context.qmmm.engine,
                      embedding=PeriodicEmbedding(cutoff=embedding.cutoff, switch_width=embedding.switch_width,
                                                  ewald_tolerance=ewald_tolerance, expansion=embedding.expansion))
    return qmmm, CellModel(qmmm.system, qmmm=qmmm)


def qm_charge_change(context) -> float:
    """The QM region's charge minus the MM charges of its atoms (e): what the QM treatment adds to the cell's
    MM net charge."""
    return context.qmmm.charge - float(mm_charges(context.qmmm.reference_system)[list(context.qmmm.qm_atoms)].sum())
