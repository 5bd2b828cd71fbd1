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

Two-level multiple time steps (:func:`add_reference_potential` with an engine): E_ref is instead a
cheaper QM level of the same region in the same embedding (GFN2-xTB/MM under a DFT/MM run), so the slow
force F_QM - F_ref is the difference between two descriptions of the same chemistry, plus X-H springs
fitted to the difference of the two levels' bond stretches. The cheap level is evaluated once per inner
step (the slow group's -E_ref at the outer step's end reuses the fast group's result at the same
positions).
"""

from __future__ import annotations

import numpy as np
import openmm
from openmm import unit

from bioqmmm.errors import CalculationError, InputError
from bioqmmm.qm.base import QMEngine
from bioqmmm.qmmm.force import QMForceKernel, make_qm_force
from bioqmmm.qmmm.surgery import X_H_BONDS, constraint_springs, free_force_group, qm_internal_forces
from bioqmmm.qmmm.system import QMMMSystem
from bioqmmm.units import minimum_image, positions_nm


def add_reference_potential(
    qmmm: QMMMSystem, fit_positions=None, box_vectors=None, springs: np.ndarray | None = None,
    engine: QMEngine | None = None,
) -> int:
    """Add +E_ref to a new fast force group and -E_ref to the QM force's group; return the fast group.

    E_ref is the force field's description of the QM region (the module docstring) or, with ``engine``,
    that cheaper QM level's QM/MM energy of the region (same atoms, link atoms, charges and embedding;
    both forces share one :class:`~bioqmmm.qmmm.force.QMForceKernel`, ``qmmm.reference_kernel``, so at the
    end of an outer step, where both groups are evaluated at the same positions, it runs once). Either
    way E_ref also holds one X-H spring per freed constraint and link atom:

    ``springs``: (r0 nm, k kJ/mol/nm^2) of every X-H spring, as ``qmmm.reference_springs`` of an
    earlier run (a resumed run reuses its fit rather than redoing it).
    ``fit_positions`` (nm): fit every spring to the force along its bond at these positions that the rest
    of E_ref leaves to the slow force -- the QM force (force field reference), or the QM force minus the
    reference level's (a level reference: k may then be negative) -- k = -dF/dr and r0 = r + F/k by
    central differences (two evaluations of each level per spring). HF/STO-3G C-H is 1.6x stiffer than
    Amber's; with a level reference the two levels' bond stretches differ less, but still enough to
    resonate with impulses every few fs. Without either, Amber's springs (force field reference) or none
    (level reference).
    Idempotent: a second call returns the same group. Call it before a Context is built on
    ``qmmm.system`` (Contexts built earlier do not see the added forces).
    """
    if qmmm.reference_group is not None:
        held = None if qmmm.reference_kernel is None else qmmm.reference_kernel.engine
        if held is not engine:
            raise InputError("this QMMMSystem already has another multiple-time-step reference potential")
        return qmmm.reference_group
    fast_group = free_force_group(qmmm.system, "the multiple-time-step reference potential")
    elements = dict(zip(qmmm.qm_atoms, qmmm.symbols, strict=True))
    x_h = constraint_springs(qmmm.reference_system, qmmm.qm_atoms, elements)
    _add_link_springs(qmmm, x_h, elements)
    kernel = None
    if engine is not None:
        engine.validate(list(qmmm.region.symbols), qmmm.charge, qmmm.multiplicity)
        kernel = QMForceKernel(qmmm.region, qmmm.boundary, engine, qmmm.embedding)
    if springs is not None:
        if len(springs) != x_h.getNumBonds() and not (kernel is not None and len(springs) == 0):
            raise InputError(f"{len(springs)} stored reference springs for {x_h.getNumBonds()} X-H bonds")
        for index, (r0, k) in enumerate(springs):
            i, j, _, _ = x_h.getBondParameters(index)
            x_h.setBondParameters(index, i, j, float(r0), float(k))
    elif fit_positions is not None:
        _fit_springs(qmmm, x_h, positions_nm(fit_positions), box_vectors, kernel)
    unfitted_level = kernel is not None and springs is None and fit_positions is None
    if unfitted_level or (springs is not None and len(springs) == 0):
        x_h = openmm.HarmonicBondForce()  # a level reference carries its own bond stretches
    qmmm.reference_springs = np.array(
        [[p[2].value_in_unit(unit.nanometer), p[3].value_in_unit(unit.kilojoule_per_mole / unit.nanometer**2)]
         for p in map(x_h.getBondParameters, range(x_h.getNumBonds()))]
    ).reshape(-1, 2)
    names = []
    negated = openmm.CustomCVForce("")
    terms = [] if kernel is not None else qm_internal_forces(qmmm.reference_system, qmmm.qm_atoms)
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
    if kernel is not None:
        qmmm.system.addForce(make_qm_force(kernel, fast_group, name="QMReferenceLevel"))
        qmmm.system.addForce(make_qm_force(kernel, qmmm.qm_force_group, sign=-1.0, name="QMReferenceLevelCorrection"))
        qmmm.reference_kernel = kernel
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


def _fit_springs(qmmm: QMMMSystem, springs: openmm.HarmonicBondForce, positions: np.ndarray, box,
                 reference: QMForceKernel | None = None) -> None:
    """Set each spring's k and r0 from the QM force (minus the ``reference`` level's) on one atom moved
    along the bond.

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
            if reference is not None:
                forces = forces - reference.evaluate(moved, box, None)[1]
            along.append(float(forces[local[mover]] @ unit_vector))
        k = (along[1] - along[0]) / (2.0 * FIT_STEP)
        if reference is not None and abs(k) < 1e-6:
            springs.setBondParameters(index, i, j, length, 0.0)  # the two levels agree along this bond
            continue
        if k <= 0.0 and reference is None:
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
    reference_engine: QMEngine | None = None,
) -> openmm.Integrator:
    """An OpenMM MTS integrator that evaluates the QM force once per outer step.

    timestep: the outer (QM) step, ps; MM forces are integrated with ``timestep / qm_every``.
    temperature (K) and friction (1/ps): Langevin dynamics (``MTSLangevinIntegrator``); without a
    temperature, velocity-Verlet r-RESPA (``MTSIntegrator``, NVE). Adds the reference potential to
    ``qmmm.system`` (:func:`add_reference_potential`): a cheaper QM level, ``reference_engine``, or the
    force field's; with X-H springs as stored (``springs``) or fitted at ``fit_positions``.
    """
    if int(qm_every) != qm_every or qm_every < 1:
        raise InputError(f"qm_every must be a positive integer, got {qm_every}")
    if timestep <= 0:
        raise InputError(f"the outer time step must be positive, got {timestep} ps")
    add_reference_potential(qmmm, fit_positions, box_vectors, springs, reference_engine)
    groups = force_groups(qmmm, int(qm_every))
    if temperature is None:
        return openmm.MTSIntegrator(timestep * unit.picosecond, groups)
    return openmm.MTSLangevinIntegrator(
        temperature * unit.kelvin, friction / unit.picosecond, timestep * unit.picosecond, groups
    )
