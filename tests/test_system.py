"""QMMMSystem on a non-periodic cluster: reference energies, finite differences, surgery, errors."""

from __future__ import annotations

import pickle

import numpy as np
import openmm
import pytest
from conftest import assert_fd_forces, directional_derivative, mm_energy
from openmm import app
from pyscf import gto, qmmm, scf

from bioqmmm import QMMMSystem
from bioqmmm.errors import InputError, SCFConvergenceError, SelectionError, TopologyError
from bioqmmm.qm import PySCFEngine, SCFStrategy
from bioqmmm.qmmm.surgery import mm_charges
from bioqmmm.units import BOHR_NM, HARTREE_KJMOL

QM = [0, 1, 2]


@pytest.fixture(scope="module")
def cluster_qmmm(water_cluster):
    top, system, pos = water_cluster
    engine = PySCFEngine("hf", "6-31g*", conv_tol=1e-11)
    return QMMMSystem(top, system, QM, charge=0, multiplicity=1, engine=engine, platform="Reference"), pos


def _without_qm_force(system: openmm.System) -> openmm.System:
    """The MM part of a QM/MM System (every force but the PythonForce)."""
    mm_only = openmm.System()
    for i in range(system.getNumParticles()):
        mm_only.addParticle(system.getParticleMass(i))
    for force in system.getForces():
        if not isinstance(force, openmm.PythonForce):
            mm_only.addForce(openmm.XmlSerializer.clone(force))
    return mm_only


def _pyscf_qmmm_energy(symbols, qm_xyz, mm_xyz, mm_q, basis="6-31g*"):
    mol = gto.M(atom=list(zip(symbols, qm_xyz / BOHR_NM, strict=True)), unit="Bohr", basis=basis, verbose=0)
    mf = scf.RHF(mol)
    mf.conv_tol = 1e-12
    if len(mm_q):
        mf = qmmm.mm_charge(mf, mm_xyz / BOHR_NM, mm_q, unit="Bohr")
    return mf.kernel()


def test_energy_equals_pyscf_qmmm_plus_modified_mm(cluster_qmmm, water_cluster):
    qmmm_system, pos = cluster_qmmm
    _, reference, _ = water_cluster
    energy, _ = qmmm_system.energy_and_forces(pos)
    charges = mm_charges(reference)
    mm = [i for i in range(len(pos)) if i not in QM]
    e_qm = _pyscf_qmmm_energy(["O", "H", "H"], pos[QM], pos[mm], charges[mm]) * HARTREE_KJMOL
    e_mm = mm_energy(_without_qm_force(qmmm_system.system), pos)
    assert (energy - e_qm - e_mm) / HARTREE_KJMOL == pytest.approx(0.0, abs=1e-6)


def test_zero_mm_charges_reproduce_gas_phase_plus_mm(water_cluster):
    top, system, pos = water_cluster
    neutral = openmm.XmlSerializer.clone(system)
    nb = next(f for f in neutral.getForces() if isinstance(f, openmm.NonbondedForce))
    for i in range(nb.getNumParticles()):
        _, sigma, eps = nb.getParticleParameters(i)
        nb.setParticleParameters(i, 0.0, sigma, eps)
    for k in range(nb.getNumExceptions()):
        i, j, _, sigma, eps = nb.getExceptionParameters(k)
        nb.setExceptionParameters(k, i, j, 0.0, sigma, eps)
    qmmm_system = QMMMSystem(
        top,
        neutral,
        QM,
        charge=0,
        multiplicity=1,
        engine=PySCFEngine("hf", "6-31g*", conv_tol=1e-12),
        platform="Reference",
    )
    energy, _ = qmmm_system.energy_and_forces(pos)
    e_gas = _pyscf_qmmm_energy(["O", "H", "H"], pos[QM], np.zeros((0, 3)), np.zeros(0)) * HARTREE_KJMOL
    e_mm = mm_energy(_without_qm_force(qmmm_system.system), pos)
    assert qmmm_system.last_qm.n_exact_charges == 0
    assert (energy - e_gas - e_mm) / HARTREE_KJMOL == pytest.approx(0.0, abs=1e-9)


def test_forces_match_finite_differences(cluster_qmmm):
    qmmm_system, pos = cluster_qmmm
    _, forces = qmmm_system.energy_and_forces(pos)

    def energy(p):
        return qmmm_system.energy_and_forces(p)[0]

    dist = np.linalg.norm(pos - pos[QM].mean(axis=0), axis=1)
    near_mm = int(np.argsort(np.where(dist > 0.2, dist, np.inf))[0])
    far_mm = int(np.argmax(dist))
    assert_fd_forces(energy, pos, forces, (*QM, near_mm, far_mm))
    # directional check on the whole force field, relative 1e-4
    direction = forces / np.linalg.norm(forces)
    assert directional_derivative(energy, pos, direction) == pytest.approx(np.sum(forces * direction), rel=1e-4)


def test_new_system_is_built_and_reference_is_untouched(water_cluster, cluster_qmmm):
    top, system, _ = water_cluster
    before = openmm.XmlSerializer.serialize(system)
    qmmm_system, _ = cluster_qmmm
    QMMMSystem(top, system, QM, charge=0, multiplicity=1, engine=PySCFEngine("hf", "sto-3g"))
    assert openmm.XmlSerializer.serialize(system) == before
    new = qmmm_system.system
    python_forces = [f for f in new.getForces() if isinstance(f, openmm.PythonForce)]
    assert len(python_forces) == 1
    assert python_forces[0].getForceGroup() == qmmm_system.qm_force_group
    assert {f.getForceGroup() for f in new.getForces() if not isinstance(f, openmm.PythonForce)} == {0}
    nb = next(f for f in new.getForces() if isinstance(f, openmm.NonbondedForce))
    assert all(nb.getParticleParameters(i)[0]._value == 0.0 for i in QM)
    exceptions = {
        tuple(sorted(nb.getExceptionParameters(k)[:2])): nb.getExceptionParameters(k)
        for k in range(nb.getNumExceptions())
    }
    for pair in [(0, 1), (0, 2), (1, 2)]:
        assert exceptions[pair][2]._value == 0.0 and exceptions[pair][4]._value == 0.0
    constrained = {tuple(sorted(new.getConstraintParameters(k)[:2])) for k in range(new.getNumConstraints())}
    assert not constrained & {(0, 1), (0, 2), (1, 2)}
    assert new.getNumConstraints() == system.getNumConstraints() - 3
    for force in new.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                i, j, _, kb = force.getBondParameters(k)
                if i in QM and j in QM:
                    assert kb._value == 0.0


def test_qm_force_pickles_and_serialises(cluster_qmmm):
    qmmm_system, pos = cluster_qmmm
    clone = openmm.XmlSerializer.clone(qmmm_system.system)
    assert sum(isinstance(f, openmm.PythonForce) for f in clone.getForces()) == 1
    kernel = pickle.loads(pickle.dumps(qmmm_system.kernel))
    assert kernel.region == qmmm_system.kernel.region


def test_stock_simulation_runs_and_scf_failure_surfaces_typed(water_cluster):
    top, system, pos = water_cluster
    engine = PySCFEngine("hf", "sto-3g", conv_tol=1e-9)
    qmmm_system = QMMMSystem(top, system, QM, charge=0, multiplicity=1, engine=engine)
    simulation = app.Simulation(
        qmmm_system.topology,
        qmmm_system.system,
        openmm.VerletIntegrator(0.0005),
        openmm.Platform.getPlatformByName("Reference"),
    )
    simulation.context.setPositions(pos)
    with qmmm_system.typed_errors():
        simulation.step(3)
    good = qmmm_system.last_qm
    assert good.qm.info.converged
    hopeless = (SCFStrategy("cdiis", max_cycle=1), SCFStrategy("second_order", second_order=True, max_cycle=1))
    engine.options = engine.options.__class__(**{**engine.options.__dict__, "ladder": hopeless, "conv_tol": 1e-14})
    with pytest.raises(SCFConvergenceError) as info, qmmm_system.typed_errors():
        simulation.step(1)
    assert info.value.step == 3
    assert [a.strategy for a in info.value.attempts] == ["cdiis", "second_order"]
    assert qmmm_system.last_qm is good  # nothing unconverged was handed to OpenMM
    with pytest.raises(SCFConvergenceError):
        qmmm_system.energy_and_forces(pos)


def test_selection_string_and_errors(water_cluster):
    top, system, _ = water_cluster
    engine = PySCFEngine("hf", "sto-3g")
    by_string = QMMMSystem(top, system, "resid 0", charge=0, multiplicity=1, engine=engine)
    assert by_string.qm_atoms == (0, 1, 2)
    with pytest.raises(SelectionError, match="matches no atom"):
        QMMMSystem(top, system, "resname XYZ", charge=0, multiplicity=1, engine=engine)
    with pytest.raises(SelectionError, match="empty"):
        QMMMSystem(top, system, [], charge=0, multiplicity=1, engine=engine)
    with pytest.raises(TopologyError, match=r"cuts the bond to hydrogen HOH1:O \(index 0\) – HOH1:H2 \(index 2\)"):
        QMMMSystem(top, system, [0, 1], charge=0, multiplicity=2, engine=engine)


@pytest.mark.parametrize(
    ("engine_kwargs", "charge", "multiplicity", "message"),
    [
        ({}, 0, 2, "inconsistent with 10 electrons"),
        ({"method": "rhf"}, -1, 2, "inconsistent with 11 electrons|cannot describe multiplicity 2"),
        ({"method": "rhf"}, 1, 2, "cannot describe multiplicity 2"),
        ({"basis": "no-such-basis"}, 0, 1, "not known to PySCF for element H"),
    ],
)
def test_qmmm_system_refuses_bad_input_before_any_scf(water_cluster, engine_kwargs, charge, multiplicity, message):
    top, system, _ = water_cluster
    engine = PySCFEngine(**{"method": "hf", "basis": "sto-3g", **engine_kwargs})
    with pytest.raises(InputError, match=message):
        QMMMSystem(top, system, QM, charge=charge, multiplicity=multiplicity, engine=engine)
    assert engine.calls == 0
