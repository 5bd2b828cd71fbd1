"""Multiple time steps for QM/MM: the QM force every outer step, MM forces every inner step.

r-RESPA (Tuckerman, Berne & Martyna, J. Chem. Phys. 97, 1990 (1992)) splits the force into a
fast part, integrated with the inner step h/n, and a slow part applied as impulses every outer
step h. With a cheap reference potential for the fast part (Luehr, Markland & Martínez,
J. Chem. Phys. 140, 084116 (2014)) the split is

    fast:  E_MM + E_ref            (every inner step)
    slow:  E_QM - E_ref            (every outer step: one QM evaluation)

where E_ref is the MM force field's own description of the QM region -- the bonded terms,
Lennard-Jones and Coulomb interactions among QM atoms that :func:`bioqmmm.qmmm.surgery.build_mm_system`
removed, springs for its freed X-H constraints -- plus, for each link atom at
r_L = r_Q + g (r_M - r_Q), an X-H spring on the cut bond, 1/2 g^2 k_XH (|r_M - r_Q| - r0_XH/g)^2.
It carries the fast bond vibrations of the QM atoms, so the slow part varies slowly.
The total energy is unchanged (E_ref is added once with each sign), so a run's energies are
those of the QMMMSystem; only the integration differs.
"""

from __future__ import annotations

import numpy as np
import openmm
from openmm import unit

from bioqmmm.errors import CalculationError, InputError
from bioqmmm.qmmm.surgery import X_H_BONDS, constraint_springs, free_force_group, qm_internal_forces
from bioqmmm.qmmm.system import QMMMSystem
from bioqmmm.units import minimum_image, positions_nm


def add_reference_potential(
    qmmm: QMMMSystem, fit_positions=None, box_vectors=None, springs: np.ndarray | None = None
) -> int:
    """Add +E_ref to a new fast force group and -E_ref to the QM force's group; return the fast group.

    ``springs``: (r0 nm, k kJ/mol/nm^2) of every X-H spring, as ``qmmm.reference_springs`` of an
    earlier run (a resumed run reuses its fit rather than redoing it).
    ``fit_positions`` (nm): fit every X-H spring of E_ref (freed constraints, link atoms) to the
    QM force along its bond at these positions, k = -dF/dr and r0 = r + F/k by central
    differences (two QM evaluations per spring). The QM force constants differ from the force
    field's (HF/STO-3G C-H: 1.6x Amber's), and what the springs miss is left to the slow force.
    Idempotent: a second call returns the same group. Call it before a Context is built on
    ``qmmm.system`` (Contexts built earlier do not see the added forces).
    """
    if qmmm.reference_group is not None:
        return qmmm.reference_group
    fast_group = free_force_group(qmmm.system, "the multiple-time-step reference potential")
    elements = dict(zip(qmmm.qm_atoms, qmmm.symbols, strict=True))
    x_h = constraint_springs(qmmm.reference_system, qmmm.qm_atoms, elements)
    _add_link_springs(qmmm, x_h, elements)
    if springs is not None:
        if len(springs) != x_h.getNumBonds():
            raise InputError(f"{len(springs)} stored reference springs for {x_h.getNumBonds()} X-H bonds")
        for index, (r0, k) in enumerate(springs):
            i, j, _, _ = x_h.getBondParameters(index)
            x_h.setBondParameters(index, i, j, float(r0), float(k))
    elif fit_positions is not None:
        _fit_springs(qmmm, x_h, positions_nm(fit_positions), box_vectors)
    qmmm.reference_springs = np.array(
        [[p[2].value_in_unit(unit.nanometer), p[3].value_in_unit(unit.kilojoule_per_mole / unit.nanometer**2)]
         for p in map(x_h.getBondParameters, range(x_h.getNumBonds()))]
    ).reshape(-1, 2)
    names = []
    negated = openmm.CustomCVForce("")
    terms = qm_internal_forces(qmmm.reference_system, qmmm.qm_atoms)
    for index, force in enumerate([*terms, x_h] if x_h.getNumBonds() else terms):
        fast = openmm.XmlSerializer.clone(force)
        fast.setForceGroup(fast_group)
        qmmm.system.addForce(fast)
        names.append(f"ref{index}")
        negated.addCollectiveVariable(names[-1], force)
    if names:
        negated.setEnergyFunction("-(" + "+".join(names) + ")")
        negated.setForceGroup(qmmm.qm_force_group)
        negated.setName("QMReferenceCorrection")
        qmmm.system.addForce(negated)
    qmmm.system_changed()
    qmmm.reference_group = fast_group
    return fast_group


def _add_link_springs(qmmm: QMMMSystem, springs: openmm.HarmonicBondForce, elements: dict[int, str]) -> None:
    """Each link atom's X-H stretch as a spring on its cut bond (Amber X-H parameters)."""
    for link in qmmm.links:
        k, length = X_H_BONDS.get(elements[link.qm_host], X_H_BONDS["C"])
        springs.addBond(link.qm_host, link.mm_host, length / link.ratio, link.ratio**2 * k)


#: Displacement for the finite-difference fit of the springs, nm.
FIT_STEP = 0.002


def _fit_springs(qmmm: QMMMSystem, springs: openmm.HarmonicBondForce, positions: np.ndarray, box) -> None:
    """Set each spring's k and r0 from the QM force on one atom moved along the bond.

    The moved atom is the hydrogen of a freed constraint, and the MM host of a link atom (moving the
    QM host would stretch its other bonds too).
    """
    box = None if box is None else positions_nm(box)
    particles = np.asarray(qmmm.boundary.particles)  # the QM force works in their (local) order
    local = {int(atom): index for index, atom in enumerate(particles)}
    mm_hosts = {(link.qm_host, link.mm_host): link.mm_host for link in qmmm.links}
    for index in range(springs.getNumBonds()):
        i, j, _, _ = springs.getBondParameters(index)
        lighter = j if qmmm.system.getParticleMass(j) < qmmm.system.getParticleMass(i) else i
        mover = mm_hosts.get((i, j), lighter)
        anchor = i if mover == j else j
        bond = positions[mover] - positions[anchor]
        if box is not None:
            bond = minimum_image(bond, box)
        length = float(np.linalg.norm(bond))
        unit_vector = bond / length
        along = []
        for sign in (1.0, -1.0):
            moved = positions[particles]
            moved[local[mover]] += sign * FIT_STEP * unit_vector
            _, forces = qmmm.kernel.evaluate(moved, box, None)
            along.append(float(forces[local[mover]] @ unit_vector))
        k = (along[1] - along[0]) / (2.0 * FIT_STEP)
        if k <= 0.0:
            raise CalculationError(f"QM force along the bond {i}-{j} does not restore it (k = {k:.0f} kJ/mol/nm^2)")
        springs.setBondParameters(index, i, j, length + 0.5 * (along[0] + along[1]) / k, k)


def force_groups(qmmm: QMMMSystem, qm_every: int) -> list[tuple[int, int]]:
    """OpenMM MTS group list: the QM group once per outer step, every other group ``qm_every`` times."""
    groups = sorted({f.getForceGroup() for f in qmmm.system.getForces()} - {qmmm.qm_force_group})
    return [(qmmm.qm_force_group, 1), *((g, qm_every) for g in groups)]


def mts_integrator(
    qmmm: QMMMSystem,
    timestep: float,
    qm_every: int,
    temperature: float | None = None,
    friction: float = 1.0,
    fit_positions=None,
    box_vectors=None,
    springs: np.ndarray | None = None,
) -> openmm.Integrator:
    """An OpenMM MTS integrator that evaluates the QM force once per outer step.

    timestep: the outer (QM) step, ps; MM forces are integrated with ``timestep / qm_every``.
    temperature (K) and friction (1/ps): Langevin dynamics (``MTSLangevinIntegrator``); without a
    temperature, velocity-Verlet r-RESPA (``MTSIntegrator``, NVE). Adds the reference potential
    (:func:`add_reference_potential`: ``springs`` as stored, or fitted to the QM forces at
    ``fit_positions``, or the force field's) to ``qmmm.system``.
    """
    if int(qm_every) != qm_every or qm_every < 1:
        raise InputError(f"qm_every must be a positive integer, got {qm_every}")
    if timestep <= 0:
        raise InputError(f"the outer time step must be positive, got {timestep} ps")
    add_reference_potential(qmmm, fit_positions, box_vectors, springs)
    groups = force_groups(qmmm, int(qm_every))
    if temperature is None:
        return openmm.MTSIntegrator(timestep * unit.picosecond, groups)
    return openmm.MTSLangevinIntegrator(
        temperature * unit.kelvin, friction / unit.picosecond, timestep * unit.picosecond, groups
    )
