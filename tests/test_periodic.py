"""Periodic embedding: switched exact near field + Ewald far field."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from conftest import assert_fd_forces, directional_derivative, switching_scan
from openmm import unit

from bioqmmm import QMMMSystem
from bioqmmm.errors import InputError
from bioqmmm.examples import alanine_dipeptide
from bioqmmm.qm import PySCFEngine
from bioqmmm.qmmm.embedding import PeriodicEmbedding
from bioqmmm.qmmm.ewald import multipole_response, point_tensors
from bioqmmm.qmmm.far_field import REAL_SPACE_CUTOFF, EwaldFarField, images_within
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
    coarse = _qmmm(small_water_box, PeriodicEmbedding(cutoff=0.9, switch_width=0.3))  # default 1e-5
    fine = _qmmm(small_water_box, PeriodicEmbedding(cutoff=0.9, switch_width=0.3, ewald_tolerance=1e-10))
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
    far_field = EwaldFarField(box, 1e-10)
    ours = far_field.tensors(far_field.geometry(probe, minimum_image(pos - probe, box)), q)
    assert COULOMB_KJMOL_NM * ours.t0[0] == pytest.approx(phi_openmm, rel=1e-4)
    np.testing.assert_allclose(-COULOMB_KJMOL_NM * ours.t1[0], field_openmm, rtol=1e-3, atol=1e-2)


TRICLINIC = np.array([[2.2, 0.0, 0.0], [0.66, 1.98, 0.0], [-0.44, 0.55, 1.87]])
MULTIPOLE = (0.3, np.array([0.05, -0.02, 0.03]),
             np.array([[0.01, 0.002, -0.001], [0.002, -0.004, 0.0005], [-0.001, 0.0005, 0.02]]))


def _random_charges(box, seed=0):
    rng = np.random.default_rng(seed)
    n = int(100 * abs(np.linalg.det(box)))
    q = rng.normal(size=n)
    return rng.uniform(0.0, 1.0, (n, 3)) @ box, q - q.mean() + 0.1 / n


def _direct_ewald(box, center, pos, q, m):
    """Reference: plain Ewald sums (real-space images, plane waves), tolerance 1e-12, no mesh.

    Returns the tensors t0..t3 at the centre and grad_x U of the multipole m for every charge.
    """
    r_real = 1.5 * np.diag(box).min()
    alpha = np.sqrt(-np.log(1e-12)) / r_real
    d0 = minimum_image(pos - center, box)
    lattice = np.array(np.meshgrid(*[np.arange(-4, 5)] * 3)).reshape(3, -1).T @ box
    images = (d0[None] + lattice[:, None]).reshape(-1, 3)
    owners = np.tile(np.arange(len(q)), len(lattice))
    inside = np.linalg.norm(images, axis=1) < r_real
    images, owners = images[inside], owners[inside]
    tensors = point_tensors(-images, q[owners], alpha)
    _, g_real = multipole_response(-images, *m, alpha)
    gradient = np.zeros_like(d0)
    np.add.at(gradient, owners, g_real)
    volume = abs(np.linalg.det(box))
    n = np.array(np.meshgrid(*[np.arange(-14, 15)] * 3)).reshape(3, -1).T
    k = 2 * np.pi * n[np.any(n != 0, axis=1)] @ np.linalg.inv(box).T
    k2 = np.einsum("ka,ka->k", k, k)
    a = (4 * np.pi / volume) * np.exp(-k2 / (4 * alpha**2)) / k2  # psi_rec(x) = sum_k a_k cos(k.x) (full sphere)
    theta = -d0 @ k.T  # x = centre - r_j
    cos, sin = np.cos(theta), np.sin(theta)
    s_cos, s_sin = q @ cos, q @ sin
    t0 = a @ s_cos - np.pi / (alpha**2 * volume) * q.sum()
    t1 = -np.einsum("k,ka->a", a * s_sin, k)
    t2 = -np.einsum("k,ka,kb->ab", a * s_cos, k, k)
    t3 = np.einsum("k,ka,kb,kc->abc", a * s_sin, k, k, k)
    m0, m1, m2 = m
    kmk = np.einsum("ka,ab,kb->k", k, m2, k)
    gradient += sin @ ((a * (0.5 * kmk - m0))[:, None] * k) - cos @ ((a * (k @ m1))[:, None] * k)
    return tensors.t0 + t0, tensors.t1 + t1, tensors.t2 + t2, tensors.t3 + t3, gradient


#: Two expansion centres 0.3 nm apart (two atoms of a QM region) and a multipole at each.
CENTRES = np.array([[0.7, 1.3, 0.4], [0.9, 1.1, 0.6]])
MULTIPOLES = (np.array([0.3, -0.2]), np.array([MULTIPOLE[1], [-0.01, 0.04, 0.02]]),
              np.array([MULTIPOLE[2], 0.5 * MULTIPOLE[2].T + 0.003 * np.eye(3)]))


@pytest.mark.parametrize("tolerance, rel", [(1e-5, 5e-5), (1e-8, 5e-7)])
def test_mesh_far_field_matches_the_direct_ewald_sum(tolerance, rel):
    """Particle-mesh tensors at each centre and multipole gradients at the charges against plain Ewald."""
    pos, q = _random_charges(TRICLINIC)
    origin = CENTRES.mean(axis=0)
    far_field = EwaldFarField(TRICLINIC, tolerance)
    geometry = far_field.geometry(origin, minimum_image(pos - origin, TRICLINIC), CENTRES)
    ours = far_field.tensors(geometry, q)
    gradient = far_field.multipole_gradient(geometry, *MULTIPOLES)
    total = np.zeros_like(pos)
    for c, centre in enumerate(CENTRES):
        reference = _direct_ewald(TRICLINIC, centre, pos, q, tuple(m[c] for m in MULTIPOLES))
        for mine, ref in zip((ours.t0[c], ours.t1[c], ours.t2[c], ours.t3[c]), reference[:4], strict=True):
            assert np.max(np.abs(mine - ref)) < rel * np.max(np.abs(ref))
        total += reference[4]
    assert np.max(np.abs(gradient - total)) < rel * np.max(np.abs(total))


def test_mesh_far_field_derivatives_are_exact():
    """t1..t3 are the centre derivatives of t0..t2 at each centre, and the multipole gradient is the
    derivative of E = sum_c m0 t0 + m1.t1 + 1/2 m2:t2 in each charge's position, to finite-difference
    precision: the mesh approximates psi, but consistently, so forces stay the exact gradient of the energy."""
    pos, q = _random_charges(TRICLINIC, seed=1)
    origin = np.array([0.8, 1.2, 0.5])
    far_field = EwaldFarField(TRICLINIC, 1e-5)

    def tensors(centres, p=pos):
        return far_field.tensors(far_field.geometry(origin, minimum_image(p - origin, TRICLINIC), centres), q)

    h = 1e-5
    t = tensors(CENTRES)
    for c in range(len(CENTRES)):
        for a in range(3):
            moved = [CENTRES.copy(), CENTRES.copy()]
            moved[0][c, a] += h
            moved[1][c, a] -= h
            plus, minus = tensors(moved[0]), tensors(moved[1])
            np.testing.assert_allclose((plus.t0[c] - minus.t0[c]) / (2 * h), t.t1[c, a], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose((plus.t1[c] - minus.t1[c]) / (2 * h), t.t2[c, a], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose((plus.t2[c] - minus.t2[c]) / (2 * h), t.t3[c, a], rtol=1e-5, atol=1e-5)

    def energy(p):
        tt = tensors(CENTRES, p)
        m0, m1, m2 = MULTIPOLES
        return m0 @ tt.t0 + np.sum(m1 * tt.t1) + 0.5 * np.sum(m2 * tt.t2)

    gradient = far_field.multipole_gradient(
        far_field.geometry(origin, minimum_image(pos - origin, TRICLINIC), CENTRES), *MULTIPOLES)
    for j in (0, 7, 123):
        for a in range(3):
            moved = [pos.copy(), pos.copy()]
            moved[0][j, a] += h
            moved[1][j, a] -= h
            force = -(energy(moved[0]) - energy(moved[1])) / (2 * h)
            assert force == pytest.approx(q[j] * gradient[j, a], rel=1e-6, abs=1e-8)


@pytest.mark.parametrize(
    "box",
    [np.diag([2.0, 2.5, 3.0]), np.array([[3.0, 0.0, 0.0], [1.0, 2.8, 0.0], [-1.4, 1.3, 2.6]])],
    ids=["rectangular", "triclinic"],
)
def test_far_field_images_are_every_lattice_image_within_the_real_space_cutoff(box):
    """The shift search finds exactly the images a brute-force lattice sum finds."""
    rng = np.random.default_rng(3)
    d0 = minimum_image(rng.uniform(-4.0, 4.0, (300, 3)), box)
    r_max = REAL_SPACE_CUTOFF
    images, owners = images_within(d0, box, r_max)
    lattice = np.array(np.meshgrid(*[np.arange(-5, 6)] * 3)).reshape(3, -1).T @ box
    brute = (d0[None] + lattice[:, None]).reshape(-1, 3)
    brute_owner = np.tile(np.arange(len(d0)), len(lattice))
    inside = np.linalg.norm(brute, axis=1) < r_max
    assert len(images) == inside.sum()
    key = lambda pts, own: sorted(zip(own.tolist(), np.round(pts, 9).tolist(), strict=True))  # noqa: E731
    assert key(images, owners) == key(brute[inside], brute_owner[inside])


@pytest.fixture(scope="module")
def solvated_dipeptide():
    top, system, positions = alanine_dipeptide(box_size=2.6)
    qm = [a.index for a in top.atoms() if a.residue.name in ("ACE", "ALA", "NME")]
    return top, system, np.array(positions.value_in_unit(unit.nanometer)), qm


@pytest.mark.slow  # ~40 s: three HF gradients of the 22-atom region
def test_far_field_about_each_atom_is_closer_to_every_charge_exact(solvated_dipeptide):
    """The 22-atom dipeptide with a short near field (0.6 nm): the far field expanded about each QM atom is
    several times closer to the all-exact reference (cutoff half the box) than the expansion about the
    centroid, in the QM forces and in the energy."""
    top, system, pos, qm = solvated_dipeptide
    results = {}
    for name, embedding in (("atoms", PeriodicEmbedding(cutoff=0.6, switch_width=0.2)),
                            ("centroid", PeriodicEmbedding(cutoff=0.6, switch_width=0.2, expansion="centroid")),
                            ("reference", PeriodicEmbedding(cutoff=1.3, switch_width=0.2))):
        qmmm = QMMMSystem(top, system, qm, charge=0, multiplicity=1, engine=PySCFEngine("hf", "sto-3g", conv_tol=1e-10),
                          embedding=embedding, platform="Reference")
        results[name] = qmmm.energy_and_forces(pos)
    e_ref, f_ref = results.pop("reference")
    errors = {name: (abs(energy - e_ref), np.sqrt(np.mean(np.sum((forces[qm] - f_ref[qm]) ** 2, axis=1))))
              for name, (energy, forces) in results.items()}
    assert errors["centroid"][1] > 1.0  # kJ/mol/nm: the centroid's truncation error is visible here
    assert errors["atoms"][1] < errors["centroid"][1] / 4
    assert errors["atoms"][0] < errors["centroid"][0] / 10


def test_unknown_far_field_expansion_is_refused():
    with pytest.raises(InputError, match="expansion 'multipoles'"):
        PeriodicEmbedding(expansion="multipoles")
