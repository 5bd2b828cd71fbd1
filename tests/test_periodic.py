"""Periodic embedding: switched exact near field + Ewald far field."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from conftest import assert_fd_forces, directional_derivative, switching_scan
from openmm import unit

from bioqmmm import QMMMSystem
from bioqmmm.qm import PySCFEngine
from bioqmmm.qmmm.embedding import REAL_SPACE_FACTOR, PeriodicEmbedding, _images_within
from bioqmmm.qmmm.ewald import ReciprocalSum, point_tensors
from bioqmmm.qmmm.surgery import mm_charges
from bioqmmm.units import COULOMB_KJMOL_NM, minimum_image

QM = [0, 1, 2]
BOX = 1.9


def _qmmm(box_system, embedding=None, conv_tol=1e-11, basis="sto-3g"):
    top, system, _ = box_system
    engine = PySCFEngine("hf", basis, conv_tol=conv_tol)
    embedding = embedding or PeriodicEmbedding(cutoff=0.9, switch_width=0.3)
    return QMMMSystem(
        top, system, QM, charge=0, multiplicity=1, engine=engine, embedding=embedding, platform="Reference"
    )


@pytest.fixture(scope="module")
def box_qmmm(small_water_box):
    return _qmmm(small_water_box, basis="6-31g*")


def test_forces_match_finite_differences_across_the_switch(box_qmmm, small_water_box):
    _, _, pos = small_water_box
    energy_fn = lambda p: box_qmmm.energy_and_forces(p)[0]  # noqa: E731
    _, forces = box_qmmm.energy_and_forces(pos)
    d = np.linalg.norm(minimum_image(pos - pos[QM].mean(axis=0), np.eye(3) * BOX), axis=1)
    # a near charge (exact), two inside the switching shell, one beyond the cutoff (far field only)
    picks = [int(np.argmin(np.abs(d - r))) for r in (0.3, 0.72, 0.8, 1.1)]
    assert_fd_forces(energy_fn, pos, forces, (*QM, *picks), h=2e-5)
    direction = forces / np.linalg.norm(forces)
    assert directional_derivative(energy_fn, pos, direction) == pytest.approx(np.sum(forces * direction), rel=1e-4)


def test_energy_is_continuous_when_a_charge_crosses_the_cutoff(small_water_box):
    """Work of the QM forces along a scan through the switching shell equals the E_QM change."""
    _, _, pos = small_water_box
    energies, work = switching_scan(_qmmm(small_water_box), pos, BOX)
    assert np.ptp(energies) > 0.5  # the scan does move the QM energy
    assert np.max(np.abs(energies - work)) < 0.01  # kJ/mol; trapezoid error only


def test_translation_across_the_box_edge_leaves_energy_unchanged(small_water_box):
    """Total energy (rtol 1e-8) and forces are unchanged when the QM region straddles the box edge.

    The MM part uses plain Ewald here: PME's grid makes OpenMM's own energy translation-dependent at
    ~1e-7 relative, which is not what this test is about.
    """
    top, system, pos = small_water_box
    ewald_system = openmm.XmlSerializer.clone(system)
    next(f for f in ewald_system.getForces() if isinstance(f, openmm.NonbondedForce)).setNonbondedMethod(
        openmm.NonbondedForce.Ewald
    )
    qmmm_system = _qmmm((top, ewald_system, pos))
    e0, f0 = qmmm_system.energy_and_forces(pos, box_vectors=ewald_system.getDefaultPeriodicBoxVectors())
    shift = np.array([BOX, BOX, BOX]) - pos[0] + np.array([0.02, -0.03, 0.01])  # QM oxygen just off the corner
    moved = pos + shift
    moved[QM] -= np.floor(moved[QM] / BOX) * BOX  # wrap QM atoms one by one: the region straddles the edge
    assert np.ptp(moved[QM], axis=0).max() > BOX / 2
    e1, f1 = qmmm_system.energy_and_forces(moved)
    assert e1 == pytest.approx(e0, rel=1e-8)
    np.testing.assert_allclose(f1, f0, atol=1e-2)  # SCF-convergence noise, 2e-7 Eh/Bohr


def test_far_field_is_independent_of_the_ewald_splitting(small_water_box):
    _, _, pos = small_water_box
    coarse = _qmmm(small_water_box, PeriodicEmbedding(cutoff=0.9, switch_width=0.3, ewald_tolerance=1e-6))
    fine = _qmmm(small_water_box, PeriodicEmbedding(cutoff=0.9, switch_width=0.3, ewald_tolerance=1e-11))
    assert fine.energy_and_forces(pos)[0] == pytest.approx(coarse.energy_and_forces(pos)[0], abs=2e-4)


def test_ewald_potential_and_field_match_openmm(small_water_box):
    """phi and grad phi at a point from our Ewald sums versus OpenMM's Ewald with a probe charge."""
    _, system, pos = small_water_box
    q = mm_charges(system)
    probe = np.array([0.31, 0.52, 0.77])
    probe_system = openmm.System()
    probe_system.setDefaultPeriodicBoxVectors(*system.getDefaultPeriodicBoxVectors())
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.Ewald)
    nb.setCutoffDistance(0.9)
    nb.setEwaldErrorTolerance(1e-7)
    for charge in q:
        probe_system.addParticle(1.0)
        nb.addParticle(charge, 0.3, 0.0)
    probe_system.addParticle(1.0)
    nb.addParticle(0.0, 0.3, 0.0)
    probe_system.addForce(nb)
    context = openmm.Context(
        probe_system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(np.vstack([pos, probe]))

    def probe_energy(charge):
        nb.setParticleParameters(len(q), charge, 0.3, 0.0)
        nb.updateParametersInContext(context)
        state = context.getState(getEnergy=True, getForces=True)
        return (
            state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True)[-1].value_in_unit(unit.kilojoule_per_mole / unit.nanometer),
        )

    (e_plus, f_plus), (e_minus, _) = probe_energy(1e-3), probe_energy(-1e-3)
    phi_openmm = (e_plus - e_minus) / 2e-3
    field_openmm = f_plus / 1e-3  # force on a small charge = q E = -q grad phi

    box = np.eye(3) * BOX
    alpha = 3.0
    recip = ReciprocalSum(box, alpha, 1e-12)
    d0 = minimum_image(pos - probe, box)
    images = (d0[None] + (np.array(np.meshgrid(*[[-1, 0, 1]] * 3)).reshape(3, -1).T @ box)[:, None]).reshape(-1, 3)
    ours = point_tensors(-images, np.tile(q, 27), alpha) + recip.tensors(recip.phases(-d0), q)
    assert COULOMB_KJMOL_NM * ours.t0 == pytest.approx(phi_openmm, rel=1e-4)
    np.testing.assert_allclose(-COULOMB_KJMOL_NM * ours.t1, field_openmm, rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize(
    "box",
    [np.diag([2.0, 2.5, 3.0]), np.array([[3.0, 0.0, 0.0], [1.0, 2.8, 0.0], [-1.4, 1.3, 2.6]])],
    ids=["rectangular", "triclinic"],
)
def test_far_field_images_are_every_lattice_image_within_the_real_space_cutoff(box):
    """The shift search finds exactly the images a brute-force lattice sum finds."""
    rng = np.random.default_rng(3)
    d0 = minimum_image(rng.uniform(-4.0, 4.0, (300, 3)), box)
    r_max = REAL_SPACE_FACTOR * np.diag(box).min()
    images, owners = _images_within(d0, box, r_max)
    lattice = np.array(np.meshgrid(*[np.arange(-5, 6)] * 3)).reshape(3, -1).T @ box
    brute = (d0[None] + lattice[:, None]).reshape(-1, 3)
    brute_owner = np.tile(np.arange(len(d0)), len(lattice))
    inside = np.linalg.norm(brute, axis=1) < r_max
    assert len(images) == inside.sum()
    key = lambda pts, own: sorted(zip(own.tolist(), np.round(pts, 9).tolist(), strict=True))  # noqa: E731
    assert key(images, owners) == key(brute[inside], brute_owner[inside])
