"""Multiple time steps: the reference potential, the r-RESPA split and QM evaluations saved."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from openmm import unit

from bioqmmm import QMMMSystem
from bioqmmm.errors import InputError
from bioqmmm.examples import alanine_dipeptide
from bioqmmm.qm import PySCFEngine
from bioqmmm.qm.factory import Level, create_engine
from bioqmmm.qmmm.surgery import X_H_BONDS, constraint_springs, qm_internal_forces
from bioqmmm.region.protein import sidechain
from bioqmmm.simulation.mts import add_reference_potential, force_groups, mts_integrator
from bioqmmm.units import positions_nm


def _energy(system: openmm.System, positions, group_set=None) -> float:
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    groups = -1 if group_set is None else group_set
    return context.getState(getEnergy=True, groups=groups).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_reference_potential_of_a_whole_molecule_is_its_force_field():
    """With every atom in the QM region, the QM-internal MM terms are the whole force field."""
    top, system, pos = alanine_dipeptide()
    reference = openmm.System()
    for i in range(system.getNumParticles()):
        reference.addParticle(system.getParticleMass(i))
    for force in qm_internal_forces(system, range(top.getNumAtoms())):
        reference.addForce(force)
    assert _energy(reference, pos) == pytest.approx(_energy(system, pos), abs=1e-6)


@pytest.fixture(scope="module")
def side_chain_model():
    top, system, pos = alanine_dipeptide()
    return top, system, positions_nm(pos)


def _qmmm(model) -> QMMMSystem:
    top, system, _ = model
    engine = PySCFEngine("hf", "sto-3g", conv_tol=1e-10)
    return QMMMSystem(top, system, sidechain(top, "ALA2"), charge=0, multiplicity=1, engine=engine,
                      platform="Reference")


def test_constraint_springs_rest_at_the_constraint_lengths():
    top, system, pos = alanine_dipeptide()
    springs = constraint_springs(system, range(top.getNumAtoms()), {a.index: a.element.symbol for a in top.atoms()})
    assert springs.getNumBonds() == system.getNumConstraints() > 0
    constants = set()
    for index in range(springs.getNumBonds()):
        _, _, length, k = springs.getBondParameters(index)
        assert length == system.getConstraintParameters(index)[2]
        constants.add(round(k.value_in_unit(unit.kilojoule_per_mole / unit.nanometer**2), 1))
    assert constants == {X_H_BONDS["C"][0], X_H_BONDS["N"][0]}  # Amber's C-H and N-H


def test_reference_potential_leaves_the_energy_and_forces_unchanged(side_chain_model):
    qmmm = _qmmm(side_chain_model)
    pos = side_chain_model[2]
    energy, forces = qmmm.energy_and_forces(pos)
    fast = add_reference_potential(qmmm)
    assert add_reference_potential(qmmm) == fast  # idempotent
    qmmm.kernel.clear_cache()
    energy_split, forces_split = qmmm.energy_and_forces(pos)
    assert energy_split == pytest.approx(energy, abs=1e-6)
    np.testing.assert_allclose(forces_split, forces, atol=1e-3)  # kJ/mol/nm: SCF converged to conv_tol_grad
    # the fast group holds the side chain's MM terms: stretching a C-H bond by 0.02 nm costs energy
    stretched = pos.copy()
    stretched[qmmm.qm_atoms[-1]] += (stretched[qmmm.qm_atoms[-1]] - stretched[qmmm.qm_atoms[0]]) * 0.2
    assert _energy(qmmm.system, stretched, {fast}) - _energy(qmmm.system, pos, {fast}) > 5.0
    assert (qmmm.qm_force_group, 1) == force_groups(qmmm, 3)[0]
    assert (fast, 3) in force_groups(qmmm, 3)


def _run(qmmm: QMMMSystem, integrator: openmm.Integrator, positions, steps: int) -> np.ndarray:
    context = openmm.Context(qmmm.system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 7)
    with qmmm.typed_errors():
        integrator.step(steps)
    return context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)


def test_one_inner_step_is_velocity_verlet(side_chain_model):
    pos = side_chain_model[2]
    plain = _run(_qmmm(side_chain_model), openmm.VerletIntegrator(0.0005), pos, 20)
    qmmm = _qmmm(side_chain_model)
    split = _run(qmmm, mts_integrator(qmmm, 0.0005, 1), pos, 20)
    np.testing.assert_allclose(split, plain, atol=1e-6)  # nm, after 20 steps that moved atoms ~1e-2 nm


def test_qm_is_evaluated_once_per_outer_step(side_chain_model):
    qmmm = _qmmm(side_chain_model)
    integrator = mts_integrator(qmmm, 0.0015, 3)
    before = qmmm.kernel.evaluations
    _run(qmmm, integrator, side_chain_model[2], 10)
    # one evaluation per outer step, plus the initial velocities' force evaluation at most
    assert 10 <= qmmm.kernel.evaluations - before <= 11
    # and the SCF guesses extrapolate along the outer steps: four equally spaced past densities
    steps = qmmm.engine.get_state()["history_steps"]
    assert len(steps) == 4 and len(set(np.diff(steps))) == 1


def test_bad_multiple_time_step_settings_are_refused(side_chain_model):
    with pytest.raises(InputError, match="qm_every"):
        mts_integrator(_qmmm(side_chain_model), 0.002, 0)
    with pytest.raises(InputError, match="time step"):
        mts_integrator(_qmmm(side_chain_model), -0.002, 2)


def _bond_directions(qmmm: QMMMSystem, pos: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(moved atom, unit vector) along each X-H spring of the reference, as the fit moves them."""
    springs = [f for f in qmmm.system.getForces()
               if f.getForceGroup() == qmmm.reference_group and isinstance(f, openmm.HarmonicBondForce)][-1]
    link_hosts = {link.mm_host for link in qmmm.links}
    out = []
    for index in range(springs.getNumBonds()):
        i, j, _, _ = springs.getBondParameters(index)
        mover = j if j in link_hosts or qmmm.system.getParticleMass(j) < qmmm.system.getParticleMass(i) else i
        anchor = i if mover == j else j
        out.append((mover, (pos[mover] - pos[anchor]) / np.linalg.norm(pos[mover] - pos[anchor])))
    return out


def _curvature_along(qmmm: QMMMSystem, pos: np.ndarray, mover: int, u: np.ndarray, h: float = 0.003) -> float:
    """Second derivative of the slow energy (the QM force's group) moving ``mover`` along ``u``, kJ/mol/nm^2."""
    energies = []
    for shift in (-h, 0.0, h):
        moved = pos.copy()
        moved[mover] += shift * u
        for kernel in qmmm.kernels:
            kernel.clear_cache()
        energies.append(_energy(qmmm.system, moved, {qmmm.qm_force_group}))
    return (energies[0] - 2 * energies[1] + energies[2]) / h**2


def _slow_curvatures(qmmm: QMMMSystem, pos: np.ndarray) -> list[tuple[float, float]]:
    """(spring k, curvature of the slow energy E_QM - E_ref) along each X-H spring's bond, kJ/mol/nm^2."""
    springs = [f for f in qmmm.system.getForces()
               if f.getForceGroup() == qmmm.reference_group and isinstance(f, openmm.HarmonicBondForce)][-1]
    ks = [springs.getBondParameters(index)[3].value_in_unit(unit.kilojoule_per_mole / unit.nanometer**2)
          for index in range(springs.getNumBonds())]
    return [(k, _curvature_along(qmmm, pos, mover, u)) for k, (mover, u) in zip(ks, _bond_directions(qmmm, pos),
                                                                                  strict=True)]


def test_fitted_springs_take_the_bond_stretch_out_of_the_slow_force(side_chain_model):
    """Along each X-H spring (three freed C-H constraints, one link) the slow energy E_QM - E_ref is
    flat when the springs are fitted to the QM forces, and not with the force field's springs."""
    pos = side_chain_model[2]
    fitted = _qmmm(side_chain_model)
    add_reference_potential(fitted, fit_positions=pos)
    plain = _qmmm(side_chain_model)
    add_reference_potential(plain)
    for (k, curvature), (_, plain_curvature) in zip(_slow_curvatures(fitted, pos), _slow_curvatures(plain, pos),
                                                    strict=True):
        assert abs(curvature) < 0.02 * k  # observed < 0.1 %
        assert abs(plain_curvature) > 0.1 * k  # HF/STO-3G C-H is 1.6x stiffer than Amber's


# -- two levels: a cheaper QM level (GFN2-xTB/MM) as the fast reference ---------------------------------

def _xtb():
    return create_engine(Level("gfn2", engine="xtb"))


def test_two_level_split_leaves_the_energy_and_forces_unchanged(side_chain_model):
    qmmm = _qmmm(side_chain_model)
    pos = side_chain_model[2]
    energy, forces = qmmm.energy_and_forces(pos)
    fast = add_reference_potential(qmmm, engine=_xtb())
    assert add_reference_potential(qmmm, engine=qmmm.reference_kernel.engine) == fast  # idempotent
    with pytest.raises(InputError, match="already"):
        add_reference_potential(qmmm)
    qmmm.kernel.clear_cache()
    energy_split, forces_split = qmmm.energy_and_forces(pos)
    assert energy_split == pytest.approx(energy, abs=1e-6)
    np.testing.assert_allclose(forces_split, forces, atol=1e-3)  # kJ/mol/nm: the second SCF is a warm start
    # the fast group is the xTB/MM energy of the region, the QM group holds E_HF - E_xTB
    reference_energy = qmmm.reference_kernel.last.energy
    assert _energy(qmmm.system, pos, {fast}) == pytest.approx(reference_energy, abs=1e-6)
    assert abs(reference_energy - energy) > 1e4  # kJ/mol: two different Hamiltonians


def test_two_level_mts_with_one_inner_step_is_plain_stepping(side_chain_model):
    pos = side_chain_model[2]
    plain = _run(_qmmm(side_chain_model), openmm.VerletIntegrator(0.0005), pos, 20)
    qmmm = _qmmm(side_chain_model)
    split = _run(qmmm, mts_integrator(qmmm, 0.0005, 1, reference_engine=_xtb()), pos, 20)
    np.testing.assert_allclose(split, plain, atol=1e-6)  # nm


def test_two_level_mts_evaluates_the_cheap_level_once_per_inner_step(side_chain_model):
    qmmm = _qmmm(side_chain_model)
    integrator = mts_integrator(qmmm, 0.002, 4, reference_engine=_xtb())
    _run(qmmm, integrator, side_chain_model[2], 5)
    # 5 outer steps: one HF evaluation each, one xTB evaluation per inner step; plus the initial velocities'
    assert 5 <= qmmm.kernel.evaluations <= 6
    assert 20 <= qmmm.reference_kernel.evaluations <= 21
    assert qmmm.reference_kernel.cache_hits >= 5  # the slow group's -E_xTB at each outer step's end


def test_fitted_springs_take_the_difference_of_the_two_levels_out_of_the_slow_force(side_chain_model):
    """With GFN2-xTB as the reference level, the slow energy E_HF - E_xTB still curves along each X-H bond
    (HF/STO-3G is much the stiffer: ~1.4e5 kJ/mol/nm^2 for C-H); springs fitted to the difference of the
    two levels' forces flatten it."""
    pos = side_chain_model[2]
    fitted = _qmmm(side_chain_model)
    add_reference_potential(fitted, fit_positions=pos, engine=_xtb())
    assert len(fitted.reference_springs) == 4  # three freed C-H constraints and the link
    unfitted = _qmmm(side_chain_model)
    add_reference_potential(unfitted, engine=_xtb())
    assert len(unfitted.reference_springs) == 0
    for spring, direction in zip(_slow_curvatures(fitted, pos), _bond_directions(fitted, pos), strict=True):
        plain_curvature = _curvature_along(unfitted, pos, *direction)
        assert plain_curvature > 5e4
        assert abs(spring[1]) < 1e-3 * plain_curvature  # observed 1e-4
