"""MM relaxation and QM/MM refinement of an interface: a shell around it relaxes, the rest is fixed.

The model is cut from the complex's implicit-solvent System (:func:`~bioqmmm.interface.model.subsystem`):
every residue with an atom within ``shell + margin`` of the QM region. Residues with an atom within
``shell`` of the QM region move; the others are fixed. The optimiser is the optimize protocol's
microiterative L-BFGS (:func:`~bioqmmm.protocols.optimize.run_optimization`); the GB term solvates the
QM atoms with their MM charges (:mod:`bioqmmm.qmmm.surgery`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm
from openmm import unit

from bioqmmm.interface.contacts import Contact, atom_label, remeasure
from bioqmmm.interface.energies import nonbonded_parameters
from bioqmmm.interface.hotspots import region_charge
from bioqmmm.interface.model import Structure, subsystem, within
from bioqmmm.protocols.optimize import OptimizeSettings, run_optimization
from bioqmmm.qm.factory import Level, create_engine
from bioqmmm.qmmm.system import QMMMSystem
from bioqmmm.region.region import QMRegion
from bioqmmm.simulation.environment import inner_atoms

#: Fixed atoms kept around the flexible shell (nm): enough for the shell's GB radii and electrostatics.
MARGIN_NM = 1.0
#: MM relaxation before scoring: heavy-atom restraint (kJ/mol/nm², ≈ 2.4 kcal/mol/Å²), tolerance (kJ/mol/nm)
#: and iterations of OpenMM's L-BFGS.
RESTRAINT_KJMOL_NM2 = 1000.0
RELAX_TOLERANCE = 10.0
RELAX_ITERATIONS = 1000
#: Polar hydrogens of the QM region stay within this distance (nm) of their N, O or S (flat-bottom
#: restraint, kJ/mol/nm²): the protonation states chosen at preparation are kept; a stretched bond is flagged.
PROTON_REACH_NM = 0.11
PROTON_RESTRAINT = 1.0e6
#: Restraint force (kJ/mol/nm) above which a proton is reported as pulled away.
FLAG_FORCE = 100.0


@dataclass
class Refinement:
    """Refined positions of the whole structure (nm) and what changed."""

    positions: np.ndarray
    figures: dict
    moved: int
    interface_rmsd: float
    contacts: list[dict]
    protonation_flags: list[str]


def _residues_within(structure: Structure, atoms: list[int], radius: float) -> np.ndarray:
    """Atoms of every residue with an atom within ``radius`` nm of ``atoms``."""
    near = within(structure.positions, np.arange(len(structure.positions)), atoms, radius)
    residue_of = np.array([a.residue.index for a in structure.topology.atoms()])
    return np.flatnonzero(np.isin(residue_of, np.unique(residue_of[near])))


def relax_mm(structure: Structure, implicit: openmm.System, around: np.ndarray, shell_nm: float,
             threads: int | None = None, restraint: float = RESTRAINT_KJMOL_NM2,
             only_side: int | None = None) -> np.ndarray:
    """Positions (nm) after an MM minimisation in implicit solvent of the residues within ``shell_nm`` of the
    atoms ``around`` (the interface), heavy atoms restrained (``restraint``, kJ/mol/nm²; 0: free) to where
    they were, hydrogens free: deposited or added hydrogens are not placed against the other partner, and
    the standard MM-GBSA start is a minimised structure. Atoms farther out (and, with ``only_side``, the
    atoms of the other partner) are fixed."""
    kept = _residues_within(structure, list(around), shell_nm + MARGIN_NM)
    flexible = set(_residues_within(structure, list(around), shell_nm).tolist())
    system = subsystem(implicit, kept)
    tether = openmm.CustomExternalForce("0.5*k*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
    tether.addGlobalParameter("k", restraint)
    for name in ("x0", "y0", "z0"):
        tether.addPerParticleParameter(name)
    atoms = list(structure.topology.atoms())
    for k, old in enumerate(kept):
        if int(old) not in flexible or (only_side is not None and structure.side[old] != only_side):
            system.setParticleMass(k, 0.0)
        elif restraint > 0 and atoms[old].element is not None and atoms[old].element.symbol != "H":
            tether.addParticle(k, structure.positions[old].tolist())
    system.addForce(tether)
    properties = {"Threads": str(threads)} if threads else {}
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"),
                             properties)
    context.setPositions(structure.positions[kept])
    openmm.LocalEnergyMinimizer.minimize(context, RELAX_TOLERANCE, RELAX_ITERATIONS)
    positions = structure.positions.copy()
    positions[kept] = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return positions


def refine(structure: Structure, implicit: openmm.System, qm_atoms: list[int], level: Level, *,
           shell_nm: float, settings: OptimizeSettings, output: Path, identity: str, interface_atoms: np.ndarray,
           contacts: list[Contact], threads: int | None = None, progress: bool = True) -> Refinement:
    """Optimise the QM region and the residues within ``shell_nm`` of it (module docstring)."""
    kept = _residues_within(structure, qm_atoms, shell_nm + MARGIN_NM)
    flexible = set(_residues_within(structure, qm_atoms, shell_nm).tolist())
    local = {int(old): k for k, old in enumerate(kept)}
    part = structure.subset(kept)
    system = subsystem(implicit, kept)
    atoms = [local[i] for i in qm_atoms]
    charge = region_charge(atoms, nonbonded_parameters(system, part.side)[0], "the QM region", part.topology)
    qmmm = QMMMSystem(part.topology, system, QMRegion.select(part.topology, atoms, charge=charge, multiplicity=1),
                      engine=create_engine(level, threads))
    fixed = np.array([k for k, old in enumerate(kept) if int(old) not in flexible], dtype=int)
    protons = _keep_protons(qmmm, atoms)
    inner = inner_atoms(qmmm, part.positions, 0.0)
    outcome = run_optimization(qmmm, part.positions, settings, output, identity=identity, progress=progress,
                               atoms=(inner, fixed))
    positions = structure.positions.copy()
    positions[kept] = outcome.positions
    heavy = np.array([a.element is not None and a.element.symbol != "H" for a in structure.topology.atoms()])
    chosen = interface_atoms[heavy[interface_atoms]]
    rmsd = float(np.sqrt(np.mean(np.sum((positions[chosen] - structure.positions[chosen]) ** 2, axis=1))))
    after = remeasure(contacts, positions)
    rows = [{"kind": c.kind, "atoms": f"{c.names[0]} - {c.names[1]}", "before_nm": c.distance, "after_nm": d}
            for c, d in zip(contacts, after, strict=True)]
    names = list(part.topology.atoms())
    flags = []
    for h, x in protons:
        force = PROTON_RESTRAINT * (np.linalg.norm(outcome.positions[h] - outcome.positions[x]) - PROTON_REACH_NM)
        if force > FLAG_FORCE:
            flags.append(f"{atom_label(names[h])}–{atom_label(names[x])} held at {PROTON_REACH_NM} nm by "
                         f"{force:.0f} kJ/mol/nm: the QM/MM surface pulls this proton away (check the protonation "
                         "state; the QM region has no solvent polarisation)")
    return Refinement(positions, outcome.figures(), len(flexible), rmsd, rows, flags)


def _keep_protons(qmmm: QMMMSystem, qm_atoms: list[int]) -> list[tuple[int, int]]:
    """Add the flat-bottom restraint on every N/O/S–H bond of the QM region (module constants); the pairs."""
    qm = set(qm_atoms)
    pairs = []
    for a, b in qmmm.topology.bonds():
        h, x = (a, b) if a.element.symbol == "H" else (b, a)
        if h.element.symbol == "H" and x.element.symbol in ("N", "O", "S") and h.index in qm:
            pairs.append((h.index, x.index))
    restraint = openmm.CustomBondForce("step(r - r0) * 0.5 * k * (r - r0)^2")
    restraint.addGlobalParameter("r0", PROTON_REACH_NM)
    restraint.addGlobalParameter("k", PROTON_RESTRAINT)
    for h, x in pairs:
        restraint.addBond(h, x)
    qmmm.system.addForce(restraint)
    return pairs
