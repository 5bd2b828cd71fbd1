"""XTBEngine against xtb run directly, finite differences (full and periodic embedding, a cut bond), the
damped point-charge kernel, the SCC ladder and bad input."""

from __future__ import annotations

import ctypes
import glob
import os
import pickle

import numpy as np
import pytest
import xtb
from conftest import FD_ABS_TOL, assert_fd_forces, directional_derivative, switching_scan
from openmm import unit
from xtb.interface import Calculator, Param
from xtb.libxtb import VERBOSITY_MUTED, ffi

from bioqmmm import QMMMSystem
from bioqmmm.errors import InputError, SCFConvergenceError
from bioqmmm.examples import alanine_dipeptide
from bioqmmm.qm import PolynomialPotential, XTBEngine
from bioqmmm.qm.factory import Level, create_engine
from bioqmmm.qmmm.embedding import PeriodicEmbedding
from bioqmmm.qmmm.surgery import mm_charges
from bioqmmm.region.protein import sidechain
from bioqmmm.units import BOHR_NM, HARTREE_KJMOL, HARTREE_PER_BOHR_KJMOL_NM, minimum_image

WATER = ["O", "H", "H"]
# No bond along a Cartesian axis: there xtb 6.5.1's analytic gradient is wrong (GFN1 and GFN2; an O-H bond
# exactly along x gives 0.01 Eh/Bohr error in the y components, 1e-8 Bohr off the axis none).
WATER_XYZ = np.array([[0.0, 0.0, 0.0], [0.0955, 0.004, 0.003], [-0.024, 0.0927, -0.002]]) + 0.01  # nm
MM_XYZ = np.array([[0.30, 0.10, 0.05], [-0.25, 0.20, 0.10], [0.10, -0.30, 0.20]])  # nm
MM_Q = np.array([-0.8, 0.4, 0.4])
NUMBERS = {"H": 1, "C": 6, "N": 7, "O": 8, "S": 16}


def _xtb_direct(symbols, xyz_nm, mm_xyz_nm, mm_q, charge=0, unpaired=0, param=Param.GFN2xTB):
    """Energy (Eh), QM gradient and point-charge gradient (Eh/Bohr) from xtb-python and libxtb directly
    (nitrogen-hardness point charges)."""
    numbers = np.array([NUMBERS[s] for s in symbols])
    calc = Calculator(param, numbers, np.asarray(xyz_nm) / BOHR_NM, charge, unpaired)
    calc.set_verbosity(VERBOSITY_MUTED)

    calc.set_external_charges(np.full(len(mm_q), 7), np.asarray(mm_q, float), np.asarray(mm_xyz_nm) / BOHR_NM)
    res = calc.singlepoint()
    library = glob.glob(os.path.join(os.path.dirname(xtb.__file__), os.pardir, "xtb.libs", "libxtb*"))[0]
    get_pc_gradient = ctypes.CDLL(library).xtb_getPCGradient
    pc_gradient = np.zeros((len(mm_q), 3))
    get_pc_gradient(ctypes.c_void_p(int(ffi.cast("uintptr_t", calc._env))),
                    ctypes.c_void_p(int(ffi.cast("uintptr_t", res._res))),
                    pc_gradient.ctypes.data_as(ctypes.POINTER(ctypes.c_double)))
    return res.get_energy(), res.get_gradient(), pc_gradient


def _assert_matches_direct(result, symbols, xyz, mm_xyz, mm_q, **kwargs):
    energy, grad_qm, grad_pc = _xtb_direct(symbols, xyz, mm_xyz, mm_q, **kwargs)
    assert result.energy / HARTREE_KJMOL == pytest.approx(energy, abs=1e-7)
    assert np.abs(-result.qm_forces / HARTREE_PER_BOHR_KJMOL_NM - grad_qm).max() < 1e-6
    assert np.abs(-result.mm_forces / HARTREE_PER_BOHR_KJMOL_NM - grad_pc).max() < 1e-6


@pytest.mark.parametrize(("method", "param"), [("gfn2", Param.GFN2xTB), ("gfn1", Param.GFN1xTB)])
def test_energy_and_gradients_equal_xtb_direct(method, param):
    result = XTBEngine(method).compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q)
    _assert_matches_direct(result, WATER, WATER_XYZ, MM_XYZ, MM_Q, param=param)
    assert result.atomic_charges.sum() == pytest.approx(0.0, abs=1e-8)


def test_open_shell_radical_matches_xtb_direct_with_one_unpaired_electron():
    result = XTBEngine("gfn2").compute(["O", "H"], WATER_XYZ[:2], 0, 2, MM_XYZ, MM_Q)
    _assert_matches_direct(result, ["O", "H"], WATER_XYZ[:2], MM_XYZ, MM_Q, unpaired=1)


@pytest.fixture(scope="module")
def cluster_qmmm(water_cluster):
    top, system, _ = water_cluster
    return QMMMSystem(top, system, [0, 1, 2], charge=0, multiplicity=1, engine=XTBEngine("gfn2", accuracy=1e-4),
                      platform="Reference")


def test_qm_water_among_mm_waters_matches_direct_and_finite_differences(cluster_qmmm, water_cluster):
    _, system, pos = water_cluster
    _, forces = cluster_qmmm.energy_and_forces(pos)
    charges = mm_charges(system)
    mm = np.arange(3, len(pos))
    qm = cluster_qmmm.last_qm.qm
    energy, grad_qm, grad_pc = _xtb_direct(WATER, pos[:3], pos[mm], charges[mm])
    # the system's own run is at accuracy 1e-4, the direct one at xtb's default: SCC-tolerance agreement
    assert qm.energy / HARTREE_KJMOL == pytest.approx(energy, abs=1e-5)
    assert np.abs(-qm.mm_forces / HARTREE_PER_BOHR_KJMOL_NM - grad_pc).max() < 1e-5
    assert_fd_forces(lambda p: cluster_qmmm.energy_and_forces(p)[0], pos, forces, [0, 1, 2, 3, 4, 20])


def _alanine_side_chain(box_size=None):
    top, system, pos = alanine_dipeptide(box_size=box_size)
    embedding = PeriodicEmbedding(cutoff=0.9, switch_width=0.3) if box_size else None
    qmmm = QMMMSystem(top, system, sidechain(top, "ALA2"), charge=0, multiplicity=1, embedding=embedding,
                      engine=XTBEngine("gfn2", accuracy=1e-4), platform="Reference")
    return qmmm, top, np.array(pos.value_in_unit(unit.nanometer))


def _atoms(top, names):
    residue = next(r for r in top.residues() if r.name == "ALA")
    index = {a.name: a.index for a in residue.atoms()}
    return [index[name] for name in names]


def test_side_chain_with_a_cut_bond_matches_direct_and_finite_differences():
    """Ala side chain of alanine dipeptide (link H on Cα–Cβ, RCD boundary charges), the rest MM."""
    qmmm, top, pos = _alanine_side_chain()
    _, forces = qmmm.energy_and_forces(pos)
    sites = qmmm.kernel.boundary
    symbols = list(qmmm.region.symbols)
    qm_xyz, mm_xyz = sites.qm_sites.positions(pos, None), sites.charge_sites.positions(pos, None)
    assert symbols == ["C", "H", "H", "H", "H"] and len(qmmm.links) == 1
    result = XTBEngine("gfn2").compute(symbols, qm_xyz, 0, 1, mm_xyz, sites.site_charges)
    _assert_matches_direct(result, symbols, qm_xyz, mm_xyz, sites.site_charges)

    energy = lambda p: qmmm.energy_and_forces(p)[0]  # noqa: E731
    assert_fd_forces(energy, pos, forces, _atoms(top, ("CB", "HB1", "CA", "N", "C", "HA")))  # QM, MM host, M2
    direction = forces / np.linalg.norm(forces)
    assert directional_derivative(energy, pos, direction) == pytest.approx(np.sum(forces * direction), rel=1e-4)


def test_periodic_cut_forces_match_finite_differences():
    qmmm, top, pos = _alanine_side_chain(box_size=2.4)
    _, forces = qmmm.energy_and_forces(pos)
    assert_fd_forces(lambda p: qmmm.energy_and_forces(p)[0], pos, forces, _atoms(top, ("CB", "HB2", "CA", "C")))


@pytest.fixture(scope="module")
def box_xtb(small_water_box):
    top, system, _ = small_water_box
    return QMMMSystem(top, system, [0, 1, 2], charge=0, multiplicity=1, engine=XTBEngine("gfn2", accuracy=1e-4),
                      embedding=PeriodicEmbedding(cutoff=0.9, switch_width=0.3), platform="Reference")


def test_periodic_forces_match_finite_differences_across_the_switch(box_xtb, small_water_box):
    """Receding switched charges and the far field on distant charges: all forces exact."""
    _, _, pos = small_water_box
    energy = lambda p: box_xtb.energy_and_forces(p)[0]  # noqa: E731
    _, forces = box_xtb.energy_and_forces(pos)
    d = np.linalg.norm(minimum_image(pos - pos[:3].mean(axis=0), np.eye(3) * 1.9), axis=1)
    picks = [int(np.argmin(np.abs(d - r))) for r in (0.3, 0.72, 0.8, 1.1)]  # exact, two switched, far only
    assert_fd_forces(energy, pos, forces, (0, 1, 2, *picks), h=2e-5)
    assert box_xtb.last_qm.far_field_energy != 0.0


def test_periodic_energy_is_continuous_through_the_switching_shell(box_xtb, small_water_box):
    """Work of the QM forces along a radial scan of one water through the 0.6-0.9 nm shell equals the energy
    change: the receding switched charges leave no jump."""
    _, _, pos = small_water_box
    energies, work = switching_scan(box_xtb, pos, 1.9, steps=41)
    assert np.ptp(energies) > 0.5
    assert np.max(np.abs(energies - work)) < 0.02  # kJ/mol; trapezoid error only


def test_polynomial_potential_derivatives_are_the_moments():
    """dE/dt (moments), dE/dc (centre gradient) and the QM forces under an external polynomial, by finite
    differences; the isotropic part of t2 has no effect."""
    engine = XTBEngine("gfn2", accuracy=1e-4)
    ext = PolynomialPotential(np.array([0.02, 0.03, -0.01]), 5.0, np.array([300.0, -200.0, 100.0]),
                              np.array([[1000.0, 200, 50], [200, -400, 100], [50, 100, -600]]))

    def run(xyz=WATER_XYZ, external=ext):
        return engine.compute(WATER, xyz, 0, 1, MM_XYZ, MM_Q, external=external)

    res = run()
    h = 1.0  # kJ/mol/e/nm
    for k, (t1_step, m1) in enumerate(zip(np.eye(3), res.moments.m1, strict=True)):
        plus = run(external=PolynomialPotential(ext.center, ext.t0, ext.t1 + h * t1_step, ext.t2)).energy
        minus = run(external=PolynomialPotential(ext.center, ext.t0, ext.t1 - h * t1_step, ext.t2)).energy
        assert (plus - minus) / (2 * h) == pytest.approx(m1, rel=1e-4, abs=1e-6), k
        shift = 1e-5 * t1_step
        plus = run(external=PolynomialPotential(ext.center + shift, ext.t0, ext.t1, ext.t2)).energy
        minus = run(external=PolynomialPotential(ext.center - shift, ext.t0, ext.t1, ext.t2)).energy
        assert (plus - minus) / 2e-5 == pytest.approx(res.center_gradient[k], abs=FD_ABS_TOL), k
    isotropic = run(external=PolynomialPotential(ext.center, ext.t0, ext.t1, ext.t2 + 500.0 * np.eye(3)))
    assert isotropic.energy == pytest.approx(res.energy, abs=1e-7)  # kJ/mol
    assert res.energy - run(external=None).energy != pytest.approx(0.0, abs=1.0)
    for atom in range(3):
        for axis in range(3):
            step = np.zeros((3, 3))
            step[atom, axis] = 1e-5
            fd = -(run(WATER_XYZ + step).energy - run(WATER_XYZ - step).energy) / 2e-5
            assert res.qm_forces[atom, axis] == pytest.approx(fd, abs=FD_ABS_TOL), (atom, axis)


def test_point_charge_kernel_tends_to_bare_coulomb_far_away():
    """The force on one MM charge from the QM water approaches the bare Coulomb force of xtb's atomic charges,
    and is clearly damped near the QM region. GFN2's kernel sum_s q_s / sqrt(r^2 + a_s^2) (shell charges q_s,
    a_s = 2 / (eta_s + eta_N)) differs from q_A / r by -sum_s q_s a_s^2 / (2 r^3), an isotropic term that for a
    neutral molecule decays only one power faster than its dipole field: relative deviation ~ 1/r."""
    engine = XTBEngine("gfn2", accuracy=1e-4)
    direction = np.array([0.6, 0.0, 0.8])
    distances = np.array([0.3, 1.0, 3.0, 30.0])  # nm
    deviations = []
    for r in distances:
        site = WATER_XYZ[0] + r * direction
        res = engine.compute(WATER, WATER_XYZ, 0, 1, site[None], np.array([0.5]))
        d = site - WATER_XYZ
        coulomb = 138.935458 * 0.5 * np.sum(res.atomic_charges[:, None] * d / np.linalg.norm(d, axis=1)[:, None] ** 3,
                                            axis=0)
        deviations.append(np.linalg.norm(res.mm_forces[0] - coulomb) / np.linalg.norm(coulomb))
    deviations = np.array(deviations)
    assert deviations[0] > 0.2  # damped at H-bond distance
    assert np.all(np.diff(deviations) < 0) and deviations[-1] < 5e-3
    assert np.ptp(deviations[1:] * distances[1:]) < 0.05  # the 1/r tail of the damping


def test_scc_failure_climbs_the_ladder_then_raises_a_typed_error():
    engine = XTBEngine("gfn2", max_iterations=1)
    with pytest.raises(SCFConvergenceError) as caught:
        engine.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q, step=7)
    assert caught.value.step == 7
    assert [a.strategy for a in caught.value.attempts] == ["fresh_guess", "fresh_long"]
    assert "gfn2-xTB SCC" in str(caught.value)


def test_warm_start_reuses_the_last_charges_and_matches_a_cold_start():
    engine = XTBEngine("gfn2", accuracy=1e-4)
    first = engine.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q)
    moved = WATER_XYZ + 1e-3
    warm = engine.compute(WATER, moved, 0, 1, MM_XYZ, MM_Q)
    cold = XTBEngine("gfn2", accuracy=1e-4).compute(WATER, moved, 0, 1, MM_XYZ, MM_Q)
    assert not first.info.warm_start and warm.info.warm_start
    assert warm.energy == pytest.approx(cold.energy, abs=1e-4)  # kJ/mol


@pytest.mark.parametrize(
    ("symbols", "charge", "mult", "message"),
    [(WATER, 0, 2, "inconsistent"), (WATER, 11, 1, "electrons"), (["Rn", "H"], 0, 1, "inconsistent"),
     (["U"], 0, 1, "no parameters")],
)
def test_bad_input_is_refused_before_any_scc(symbols, charge, mult, message):
    with pytest.raises(InputError, match=message):
        XTBEngine("gfn2").validate(symbols, charge, mult)


def test_levels_and_options_are_checked_when_made():
    engine = create_engine(Level("gfn2", engine="xtb", options={"accuracy": 0.1}), threads=1)
    assert isinstance(engine, XTBEngine) and engine.options.threads == 1 and engine.options.accuracy == 0.1
    assert Level("GFN1", engine="xtb").label == "gfn1-xtb"
    with pytest.raises(InputError, match="no method 'b3lyp'"):
        Level("b3lyp", engine="xtb")
    with pytest.raises(InputError, match="unknown option"):
        Level("gfn2", engine="xtb", options={"conv_tol": 1e-9})
    with pytest.raises(InputError, match="accuracy"):
        Level("gfn2", engine="xtb", options={"accuracy": 1e-6})
    with pytest.raises(InputError, match="charge_element"):
        XTBEngine("gfn2", charge_element=0)


def test_missing_xtb_names_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_xtb(name, *args, **kwargs):
        if name == "xtb" or name.startswith("xtb."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_xtb)
    with pytest.raises(InputError, match="pip install xtb"):
        XTBEngine("gfn2")


def test_engine_pickles_and_computes_after():
    engine = XTBEngine("gfn2")
    before = engine.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q)
    clone = pickle.loads(pickle.dumps(engine))
    assert clone.options == engine.options and clone.get_state() == {}
    after = clone.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q)
    assert after.energy == pytest.approx(before.energy, abs=1e-6)



def test_threads_cap_only_the_libraries_bundled_with_xtb():
    import threadpoolctl

    before = {lib["filepath"]: lib["num_threads"] for lib in threadpoolctl.threadpool_info()}
    XTBEngine("gfn2", threads=1).compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q)
    after = {lib["filepath"]: lib["num_threads"] for lib in threadpoolctl.threadpool_info()}
    bundled = [path for path in after if f"{os.sep}xtb.libs{os.sep}" in path]
    assert bundled and all(after[path] == 1 for path in bundled)
    assert all(after[path] == n for path, n in before.items() if path not in bundled)


def test_protocol_file_with_an_unknown_xtb_method_names_the_key_and_line(tmp_path):
    from bioqmmm.run.protocol import load_protocol
    from bioqmmm.run.schema import ProtocolError

    path = tmp_path / "bad.yaml"
    path.write_text("system:\n  example: alanine_dipeptide\nqm:\n  atoms: not water\n  charge: 0\n  multiplicity: 1\n"
                    "  engine: xtb\n  method: b3lyp\nprotocol:\n  type: md\n  steps: 2\noutput: out\n")
    with pytest.raises(ProtocolError, match=r"bad.yaml:8: 'method': QM engine 'xtb' has no method 'b3lyp'"):
        load_protocol(path)
    path.write_text(path.read_text().replace("method: b3lyp", "method: gfn1\n  options: {accuracy: 0.5}"))
    level = load_protocol(path).qm.level()
    assert (level.engine, level.method, level.basis, dict(level.options)) == ("xtb", "gfn1", None, {"accuracy": 0.5})
