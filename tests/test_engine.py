"""PySCFEngine against PySCF run directly, finite differences, the SCF ladder and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FD_ABS_TOL
from pyscf import gto, qmmm, scf

from bioqmmm.errors import InputError, SCFConvergenceError
from bioqmmm.qm import AtomicPolynomialPotential, PolynomialPotential, PySCFEngine, SCFStrategy
from bioqmmm.units import BOHR_NM, HARTREE_KJMOL

WATER = ["O", "H", "H"]
WATER_XYZ = np.array([[0.0, 0.0, 0.0], [0.0957, 0.0, 0.0], [-0.024, 0.0927, 0.0]]) + 0.01  # nm
MM_XYZ = np.array([[0.30, 0.10, 0.05], [-0.25, 0.20, 0.10], [0.10, -0.30, 0.20]])  # nm
MM_Q = np.array([-0.8, 0.4, 0.4])


def _pyscf_direct(symbols, xyz_nm, mm_xyz_nm, mm_q, charge=0, spin=0, method="hf", basis="6-31g*"):
    mol = gto.M(
        atom=list(zip(symbols, xyz_nm / BOHR_NM, strict=True)),
        unit="Bohr",
        basis=basis,
        charge=charge,
        spin=spin,
        verbose=0,
    )
    mf = (scf.RHF if spin == 0 else scf.UHF)(mol)
    mf.conv_tol = 1e-12
    mf = qmmm.mm_charge(mf, mm_xyz_nm / BOHR_NM, mm_q, unit="Bohr")
    return mf.kernel()


def test_energy_equals_pyscf_direct():
    engine = PySCFEngine("hf", "6-31g*", conv_tol=1e-12)
    result = engine.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q)
    assert result.energy / HARTREE_KJMOL == pytest.approx(_pyscf_direct(WATER, WATER_XYZ, MM_XYZ, MM_Q), abs=1e-9)
    assert result.info.converged and result.info.scf_cycles > 0 and result.info.wall_time > 0


def test_open_shell_is_unrestricted_and_matches_pyscf():
    engine = PySCFEngine("hf", "6-31g", conv_tol=1e-12)
    oh = WATER_XYZ[:2]
    result = engine.compute(["O", "H"], oh, 0, 2, MM_XYZ, MM_Q)
    expected = _pyscf_direct(["O", "H"], oh, MM_XYZ, MM_Q, spin=1, basis="6-31g")
    assert result.energy / HARTREE_KJMOL == pytest.approx(expected, abs=1e-9)


def test_forces_match_finite_differences_with_external_potential():
    """QM and MM-charge forces, potentials (dE/dq) and moments (dE/dt) of the engine."""
    engine = PySCFEngine("hf", "6-31g*", conv_tol=1e-12)
    ext = PolynomialPotential(
        np.array([0.02, 0.03, -0.01]),
        5.0,
        np.array([300.0, -200.0, 100.0]),
        np.array([[1000.0, 200, 50], [200, -400, 100], [50, 100, -600]]),
    )

    def run(xyz=WATER_XYZ, mm=MM_XYZ, q=MM_Q, external=ext, **kw):
        return engine.compute(WATER, xyz, 0, 1, mm, q, external=external, **kw)

    ref = run(potential_at=np.array([0, 2]))
    h = 1e-5
    for atom in range(3):
        for axis in range(3):
            step = np.zeros_like(WATER_XYZ)
            step[atom, axis] = h
            fd = -(run(xyz=WATER_XYZ + step).energy - run(xyz=WATER_XYZ - step).energy) / (2 * h)
            assert ref.qm_forces[atom, axis] == pytest.approx(fd, abs=FD_ABS_TOL)
            fd = -(run(mm=MM_XYZ + step).energy - run(mm=MM_XYZ - step).energy) / (2 * h)
            assert ref.mm_forces[atom, axis] == pytest.approx(fd, abs=FD_ABS_TOL)
    for k, j in enumerate([0, 2]):
        dq = np.zeros(3)
        dq[j] = 1e-4
        fd = (run(q=MM_Q + dq).energy - run(q=MM_Q - dq).energy) / 2e-4
        assert ref.mm_potentials[k] == pytest.approx(fd, rel=1e-6)
    dt = np.array([1e-2, 0, 0])
    plus = PolynomialPotential(ext.center, ext.t0, ext.t1 + dt, ext.t2)
    minus = PolynomialPotential(ext.center, ext.t0, ext.t1 - dt, ext.t2)
    assert ref.moments.m1[0] == pytest.approx((run(external=plus).energy - run(external=minus).energy) / 2e-2, rel=1e-6)


#: A different second-order polynomial about each water atom (kJ/mol/e, nm).
ATOMIC = AtomicPolynomialPotential(
    WATER_XYZ + np.array([[0.002, -0.001, 0.0], [0.0, 0.001, 0.002], [-0.002, 0.0, 0.001]]),
    np.array([5.0, -3.0, 4.0]),
    np.array([[300.0, -200.0, 100.0], [250.0, -150.0, 80.0], [320.0, -260.0, 60.0]]),
    np.array([[[1000.0, 200, 50], [200, -400, 100], [50, 100, -600]],
              [[800.0, 150, 0], [150, -300, 90], [0, 90, -500]],
              [[1100.0, 250, 70], [250, -450, 120], [70, 120, -650]]]),
)


def test_atomic_external_potential_derivatives_match_finite_differences():
    """Per-atom moments are dE/dt_A; moving an atom with its centre gives -F + dE/dc (the embedding's
    split); MM-charge forces stay exact."""
    engine = PySCFEngine("hf", "6-31g*", conv_tol=1e-12)

    def run(xyz=WATER_XYZ, mm=MM_XYZ, external=ATOMIC):
        return engine.compute(WATER, xyz, 0, 1, mm, MM_Q, external=external)

    def moved(**fields):
        return AtomicPolynomialPotential(**{"centers": ATOMIC.centers, "t0": ATOMIC.t0, "t1": ATOMIC.t1,
                                            "t2": ATOMIC.t2, **fields})

    ref = run()
    assert ref.moments.m0.shape == (3,) and ref.center_gradient.shape == (3, 3)
    assert ref.moments.m0.sum() == pytest.approx(0.0, abs=1e-9)  # a neutral water: the atoms' charges add up
    h = 1e-5
    for atom in range(3):
        for axis in range(3):
            step = np.zeros_like(WATER_XYZ)
            step[atom, axis] = h
            both = -(run(xyz=WATER_XYZ + step, external=moved(centers=ATOMIC.centers + step)).energy
                     - run(xyz=WATER_XYZ - step, external=moved(centers=ATOMIC.centers - step)).energy) / (2 * h)
            assert ref.qm_forces[atom, axis] - ref.center_gradient[atom, axis] == pytest.approx(both, abs=FD_ABS_TOL)
            centre_only = (run(external=moved(centers=ATOMIC.centers + step)).energy
                           - run(external=moved(centers=ATOMIC.centers - step)).energy) / (2 * h)
            assert ref.center_gradient[atom, axis] == pytest.approx(centre_only, abs=FD_ABS_TOL)
            fd = -(run(mm=MM_XYZ + step).energy - run(mm=MM_XYZ - step).energy) / (2 * h)
            assert ref.mm_forces[atom, axis] == pytest.approx(fd, abs=FD_ABS_TOL)
    for atom in range(3):
        dt0, dt1, dt2 = np.zeros(3), np.zeros((3, 3)), np.zeros((3, 3, 3))
        dt0[atom], dt1[atom, 1], dt2[atom, 0, 2] = 1e-2, 1e-2, 1e-2
        for delta, field, moment in ((dt0, "t0", ref.moments.m0[atom]), (dt1, "t1", ref.moments.m1[atom, 1]),
                                     (dt2, "t2", 0.5 * ref.moments.m2[atom, 0, 2])):
            plus = run(external=moved(**{field: getattr(ATOMIC, field) + delta})).energy
            minus = run(external=moved(**{field: getattr(ATOMIC, field) - delta})).energy
            assert (plus - minus) / 2e-2 == pytest.approx(moment, rel=1e-5, abs=1e-7), (field, atom)


def test_atomic_potential_with_one_centre_is_the_polynomial_potential():
    """Every atom given the same centre and tensors: the partitioned operator is the plain polynomial."""
    engine = PySCFEngine("hf", "6-31g*", conv_tol=1e-12)
    ext = PolynomialPotential(ATOMIC.centers[0], 5.0, ATOMIC.t1[0], ATOMIC.t2[0])
    same = AtomicPolynomialPotential(np.tile(ext.center, (3, 1)), np.full(3, ext.t0), np.tile(ext.t1, (3, 1)),
                                     np.tile(ext.t2, (3, 1, 1)))
    one = engine.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q, external=ext)
    per_atom = engine.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q, external=same)
    assert per_atom.energy == pytest.approx(one.energy, abs=1e-7)
    # to SCF convergence (1e-12 Eh: ~1e-7 Eh/Bohr in the gradients)
    np.testing.assert_allclose(per_atom.qm_forces, one.qm_forces, atol=FD_ABS_TOL)
    np.testing.assert_allclose(per_atom.center_gradient.sum(axis=0), one.center_gradient, atol=FD_ABS_TOL)
    np.testing.assert_allclose(per_atom.moments.m2.sum(axis=0), one.moments.m2, atol=1e-8)


def test_atomic_potential_needs_one_row_per_atom():
    engine = PySCFEngine("hf", "sto-3g")
    short = AtomicPolynomialPotential(ATOMIC.centers[:2], ATOMIC.t0[:2], ATOMIC.t1[:2], ATOMIC.t2[:2])
    with pytest.raises(InputError, match="one row per QM atom"):
        engine.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q, external=short)


def test_warm_start_is_used_and_dropped_when_the_region_changes():
    engine = PySCFEngine("hf", "sto-3g", conv_tol=1e-10)
    cold = engine.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q)
    warm = engine.compute(WATER, WATER_XYZ + 1e-4, 0, 1, MM_XYZ, MM_Q)
    assert not cold.info.warm_start and warm.info.warm_start
    assert warm.info.scf_cycles < cold.info.scf_cycles
    other = engine.compute(["O", "H"], WATER_XYZ[:2], -1, 1, MM_XYZ, MM_Q)
    assert not other.info.warm_start


def test_ladder_is_climbed_then_typed_error_names_step_and_attempts():
    hopeless = tuple(
        SCFStrategy(name, max_cycle=1, **kw)
        for name, kw in [
            ("cdiis", {}),
            ("level_shift_damping", {"level_shift": 0.5, "damp": 0.5}),
            ("fresh_guess", {"fresh_guess": True}),
            ("second_order", {"second_order": True}),
        ]
    )
    engine = PySCFEngine("hf", "6-31g*", conv_tol=1e-14, ladder=hopeless)
    with pytest.raises(SCFConvergenceError) as info:
        engine.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q, step=7)
    assert info.value.step == 7
    assert [a.strategy for a in info.value.attempts] == [s.name for s in hopeless]
    assert not any(a.converged for a in info.value.attempts)
    assert "step 7" in str(info.value)


def test_ladder_recovers_when_a_later_rung_converges():
    ladder = (SCFStrategy("too_short", max_cycle=2), SCFStrategy("cdiis"))
    engine = PySCFEngine("hf", "6-31g*", conv_tol=1e-10, ladder=ladder)
    result = engine.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q)
    assert [a.strategy for a in result.info.attempts] == ["too_short", "cdiis"]
    assert result.energy / HARTREE_KJMOL == pytest.approx(_pyscf_direct(WATER, WATER_XYZ, MM_XYZ, MM_Q), abs=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "symbols", "charge", "mult", "message"),
    [
        ({}, WATER, 0, 2, "inconsistent with 10 electrons"),
        ({}, WATER, 1, 1, "inconsistent with 9 electrons"),
        ({"method": "rhf"}, ["O", "H"], 0, 2, "cannot describe multiplicity 2"),
        ({"method": "b3lyp", "restricted": True}, ["O", "H"], 0, 2, "cannot describe multiplicity 2"),
        ({"basis": "no-such-basis"}, WATER, 0, 1, "not known to PySCF for element"),
        ({}, [], 0, 1, "no atoms"),
    ],
)
def test_bad_input_is_refused_before_any_scf(kwargs, symbols, charge, mult, message):
    engine = PySCFEngine(**{"method": "hf", "basis": "sto-3g", **kwargs})
    with pytest.raises(InputError, match=message):
        engine.validate(symbols, charge, mult)
    assert engine.calls == 0


def test_unknown_method_and_option_are_refused():
    with pytest.raises(InputError, match="unknown QM method 'b3lpy'"):
        PySCFEngine("b3lpy", "sto-3g")
    with pytest.raises(InputError, match="conv_toll"):
        PySCFEngine("hf", "sto-3g", conv_toll=1e-9)


def test_unknown_device_is_refused():
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        PySCFEngine("hf", "sto-3g", device="tpu")


def test_gpu_engine_matches_the_cpu_engine_or_names_what_is_missing():
    """On a CUDA machine with gpu4pyscf: same energy, QM and MM forces, potentials and moments as
    the CPU path (B3LYP, density fitting, MM charges, far-field polynomial). Elsewhere: a clear error."""
    options = {"conv_tol": 1e-11, "conv_tol_grad": 1e-7}
    try:
        gpu = PySCFEngine("b3lyp", "6-31g*", device="gpu", **options)
    except InputError as exc:
        assert "gpu4pyscf" in str(exc) and "CUDA" in str(exc)
        return
    cpu = PySCFEngine("b3lyp", "6-31g*", **options)
    external = PolynomialPotential(
        WATER_XYZ.mean(axis=0), 3.0, np.array([20.0, -10.0, 5.0]), np.diag([40.0, -25.0, -15.0])
    )
    results = [
        engine.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q, potential_at=np.array([0, 2]), external=external)
        for engine in (cpu, gpu)
    ]
    ref, test = results
    print(f"GPU - CPU: energy {test.energy - ref.energy:.2e} kJ/mol, "
          f"QM forces {np.abs(test.qm_forces - ref.qm_forces).max():.2e}, "
          f"MM forces {np.abs(test.mm_forces - ref.mm_forces).max():.2e} kJ/mol/nm")
    assert test.energy == pytest.approx(ref.energy, abs=1e-3)
    np.testing.assert_allclose(test.qm_forces, ref.qm_forces, atol=1e-2)
    np.testing.assert_allclose(test.mm_forces, ref.mm_forces, atol=1e-2)
    np.testing.assert_allclose(test.mm_potentials, ref.mm_potentials, atol=1e-3)
    np.testing.assert_allclose(test.moments.m1, ref.moments.m1, atol=1e-6)


def test_threads_cap_pyscf_and_numpy_blas():
    from pyscf import lib
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits(limits=None):  # restores the process's BLAS threads afterwards
        before = lib.num_threads()
        try:
            PySCFEngine("hf", "sto-3g", threads=1).compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q)
            assert lib.num_threads() == 1
            assert all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")
        finally:
            lib.num_threads(before)


def test_engine_pickles_without_its_history_and_computes_after():
    import pickle

    engine = PySCFEngine("hf", "sto-3g", conv_tol=1e-10)
    first = engine.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q)
    copy = pickle.loads(pickle.dumps(engine))
    assert copy.get_state() == {} and engine.get_state()
    assert copy.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q).energy == pytest.approx(first.energy, abs=1e-6)
