"""QM/MM vibrations: difference Hessians against published frequencies and PySCF's analytic Hessian,
static condensation against exact identities and an analytic spring chain, thermochemistry against
PySCF's, kinetic isotope effects against the Bigeleisen–Mayer formula, and the protocol's bad input."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from openmm import app, unit

from bioqmmm.errors import InputError
from bioqmmm.examples import forcefield, water_box
from bioqmmm.qm import PySCFEngine
from bioqmmm.qmmm.system import QMMMSystem
from bioqmmm.vibrations.active import active_hessian, analyse, check_unconstrained, monoisotopic_masses
from bioqmmm.vibrations.analysis import CM_PER_RAD_PS, normal_modes, write_molden
from bioqmmm.vibrations.condensation import block_preconditioner, condense
from bioqmmm.vibrations.hessian import (
    displacement_columns,
    finite_difference_hessian,
    hessian_vector_product,
    rigid_body_modes,
    without_rigid_body_modes,
)
from bioqmmm.vibrations.kie import isotope_effect, tunnelling_factor
from bioqmmm.vibrations.thermo import vibrational_thermochemistry

#: 1 D²/(amu Å²) in km/mol (GAMESS's unit of IR intensities).
KM_MOL_PER_D2_AMU_A2 = 42.2561
HARTREE_KJMOL, BOHR_NM = 2625.499639, 0.0529177210903


def flexible_cluster(n_waters: int):
    """The ``n_waters`` TIP3P waters nearest the first, flexible, no cutoff: (topology, system, positions nm)."""
    top, _, pos = water_box(1.9)
    xyz = np.array(pos.value_in_unit(unit.nanometer))
    residues = list(top.residues())
    distance = [np.linalg.norm(xyz[r._atoms[0].index] - xyz[0]) for r in residues]
    keep = set(np.argsort(distance)[:n_waters].tolist())
    modeller = app.Modeller(top, pos)
    modeller.delete([r for i, r in enumerate(residues) if i not in keep])
    system = forcefield().createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None,
                                       rigidWater=False)
    return modeller.topology, system, np.array(modeller.positions.value_in_unit(unit.nanometer))


def water_geometry(r: float, theta: float) -> np.ndarray:
    """O, H, H (nm) of a water with O–H length ``r`` nm and angle ``theta`` degrees."""
    half = np.radians(theta) / 2
    return np.array([[0.0, 0.0, 0.0], [r * np.sin(half), r * np.cos(half), 0.0],
                     [-r * np.sin(half), r * np.cos(half), 0.0]])


def qm_water(basis: str, n_waters: int = 1, start: np.ndarray | None = None,
             **options) -> tuple[QMMMSystem, np.ndarray]:
    top, system, positions = flexible_cluster(n_waters)
    if start is not None:
        positions[:3] = start
    engine = PySCFEngine("hf", basis, conv_tol=1e-12, conv_tol_grad=1e-9, **options)
    return QMMMSystem(top, system, [0, 1, 2], charge=0, multiplicity=1, engine=engine, platform="Reference"), positions


def minimised(evaluate, x: np.ndarray, atoms, steps: int = 40, fmax: float = 1e-3) -> np.ndarray:
    """Newton steps with the projected difference Hessian (|eigenvalues|, largest move 0.01 nm) to a minimum."""
    x = np.array(x, dtype=float)
    for _ in range(steps):
        forces = evaluate(x)[1]
        if np.abs(forces).max() < fmax:
            return x
        hessian = without_rigid_body_modes(finite_difference_hessian(evaluate, x, atoms), x)
        values, vectors = np.linalg.eigh(hessian)
        keep = np.abs(values) > 1e-2
        step = vectors[:, keep] @ ((vectors[:, keep].T @ forces[atoms].ravel()) / np.abs(values[keep]))
        x[atoms] += (step * min(1.0, 0.01 / np.abs(step).max())).reshape(-1, 3)
    raise AssertionError(f"no minimum after {steps} Newton steps (max force {np.abs(evaluate(x)[1]).max():.2e})")


def test_water_hf_sto3g_frequencies_and_ir_intensities_match_the_published_ones():
    """HF/STO-3G water at its minimum: 2170.04, 4140.00, 4391.07 cm⁻¹ and IR intensities 0.17128, 1.04807,
    0.70926 D²/(amu Å²) (Yamaguchi, Frisch, Gaw, Schaefer & Binkley, J. Chem. Phys. 84, 2262 (1986), table 6,
    as reproduced by GAMESS's test EXAM10 with analytic second derivatives). Also against PySCF's own analytic
    Hessian at the same geometry, the same masses."""
    from pyscf import gto, scf

    qmmm, x = qm_water("sto-3g", start=water_geometry(0.0989, 100.0))
    x = minimised(qmmm.energy_and_forces, x, [0, 1, 2])
    hessian = active_hessian(qmmm, x, [0, 1, 2], method="full")
    assert hessian.free_body and hessian.qmmm_evaluations == 19
    modes = analyse(qmmm, x, hessian).modes
    assert np.abs(modes.frequencies - [2170.04, 4140.00, 4391.07]).max() < 0.5, modes.frequencies
    intensities = modes.intensities / KM_MOL_PER_D2_AMU_A2
    assert np.abs(intensities - [0.17128, 1.04807, 0.70926]).max() < 1e-3, intensities

    mol = gto.M(atom=[(s, tuple(r)) for s, r in zip("OHH", x / BOHR_NM, strict=True)], unit="Bohr", basis="sto-3g",
                verbose=0)
    mf = scf.RHF(mol).set(conv_tol=1e-12)
    mf.kernel()
    analytic = mf.Hessian().kernel().transpose(0, 2, 1, 3).reshape(9, 9) * HARTREE_KJMOL / BOHR_NM**2
    reference = normal_modes(analytic, monoisotopic_masses(qmmm.topology, [0, 1, 2]), rigid_positions=x)
    assert np.abs(modes.frequencies - reference.frequencies).max() < 0.5, (modes.frequencies, reference.frequencies)


@pytest.mark.slow
def test_water_df_hf_cc_pvdz_frequencies_match_the_published_ones():
    """Density-fitted HF/cc-pVDZ water (cc-pVDZ-JKFIT, Psi4's default): 1776.15, 4113.69, 4212.12 cm⁻¹ at the
    tightly converged minimum (Psi4 test suite, tests/opt-freq-optking ("Optimization followed by frequencies
    H2O HF/cc-pVDZ"), reference frequencies)."""
    qmmm, x = qm_water("cc-pvdz", start=water_geometry(0.0946, 104.6), density_fit=True)
    x = minimised(qmmm.energy_and_forces, x, [0, 1, 2])
    modes = analyse(qmmm, x, active_hessian(qmmm, x, [0, 1, 2], method="full")).modes
    assert np.abs(modes.frequencies - [1776.15, 4113.69, 4212.12]).max() < 0.5, modes.frequencies


@pytest.fixture(scope="module")
def water_in_waters():
    """A QM water (HF/STO-3G) in three flexible MM waters, as built (not at a minimum)."""
    return qm_water("sto-3g", n_waters=4)


@pytest.mark.slow
def test_condensed_hessian_is_the_inverse_of_the_inverse_block_with_rigid_modes_projected(water_in_waters):
    """H_eff = H_AA − H_AE H_EE⁻¹ H_EA equals [P_A ((PHP)⁺)_AA P_A]⁺ for a free cluster whose rigid-body modes
    P projects out (the identity [(H⁻¹)_AA]⁻¹ on the complement of the null space), to round-off."""
    qmmm, x = water_in_waters
    atoms = np.arange(len(x))
    full = without_rigid_body_modes(finite_difference_hessian(qmmm.energy_and_forces, x, atoms), x)
    a, e = np.arange(9), np.arange(9, 3 * len(x))
    condensed = condense(full[np.ix_(a, a)], full[np.ix_(e, a)], lambda v: full[np.ix_(e, e)] @ v,
                         tolerance=1e-14, max_products=400)
    rigid_a = rigid_body_modes(x[:3])
    p_a = np.eye(9) - rigid_a.T @ rigid_a
    inverse = np.linalg.pinv(full, rcond=1e-10, hermitian=True)
    reference = np.linalg.pinv(p_a @ inverse[np.ix_(a, a)] @ p_a, rcond=1e-10, hermitian=True)
    assert np.abs(condensed.hessian - reference).max() < 1e-9 * np.abs(reference).max()
    # its null space is the rigid motion of A (the environment follows a rigid A without strain)
    assert np.abs(condensed.hessian @ rigid_a.T).max() < 1e-9 * np.abs(reference).max()


@pytest.mark.slow
def test_condensation_from_mm_force_difference_products_matches_the_explicit_schur_complement(water_in_waters):
    """The route that scales (preconditioned MINRES on five-point differences of single-precision environment
    forces, MM model in the field of fixed QM charges) against the Schur complement with H_EE and H_EA of that
    model formed column by column from double-precision central differences at a 1e-5 nm step; the MM
    environment is first relaxed in that field, as the vibrations protocol does."""
    from bioqmmm.simulation.environment import qm_charges_on_atoms, relax_environment
    from bioqmmm.vibrations.active import _environment_forces

    qmmm, x = water_in_waters
    environment = np.arange(3, len(x))
    qmmm.energy_and_forces(x)
    x, _ = relax_environment(qmmm, x, qm_charges=qm_charges_on_atoms(qmmm), frozen=[0, 1, 2], tolerance=1e-3)
    result = active_hessian(qmmm, x, [0, 1, 2], environment, method="condensed", environment_model="mm")
    qmmm.energy_and_forces(x)
    forces = _environment_forces(qmmm, qm_charges_on_atoms(qmmm), environment, None, "Reference")
    product = hessian_vector_product(forces, x, environment, 1e-5)
    h_ee = np.array([product(column) for column in np.eye(3 * len(environment))]).T
    coupling = hessian_vector_product(forces, x, [0, 1, 2], 1e-5, rows=environment)
    h_ea = np.array([coupling(column) for column in np.eye(9)]).T
    h_aa = displacement_columns(qmmm.energy_and_forces, x, [0, 1, 2]).block
    explicit = h_aa - h_ea.T @ np.linalg.solve(0.5 * (h_ee + h_ee.T), h_ea)
    explicit = 0.5 * (explicit + explicit.T)
    assert np.abs(result.hessian - explicit).max() < 1e-4 * np.abs(explicit).max()
    assert result.qmmm_evaluations == 19  # one reference call and 18 displacements: the environment costs MM only
    assert result.environment_products < 3 * 27 * 9


def test_spring_chain_condensed_and_partial_frequencies_are_analytic():
    """Wall–m–m–…–m–wall, N masses, N + 1 isotropic springs k (E = ½k Σ|Δx − d|², so each axis is a chain).
    Active block = the first mass. Partial Hessian: both neighbours held, ω² = 2k/m. Condensed: the N springs
    to the right act in series, ω² = (k + k/N)/m. Full: ω_j = 2√(k/m) sin(jπ / 2(N + 1)), j = 1…N."""
    n, k, m, d = 6, 500.0, 12.0, 0.15
    walls = np.array([[-d, 0, 0], [n * d, 0, 0]])

    def evaluate(x: np.ndarray) -> tuple[float, np.ndarray]:
        chain = np.vstack([walls[:1], x, walls[1:]])
        stretch = np.diff(chain, axis=0) - [d, 0, 0]
        energy = 0.5 * k * (stretch**2).sum()
        forces = k * (stretch[1:] - stretch[:-1])
        return energy, forces

    rng = np.random.default_rng(7)
    x = np.arange(n)[:, None] * [d, 0, 0] + rng.normal(scale=0.01, size=(n, 3))  # anywhere: the surface is quadratic
    columns = displacement_columns(evaluate, x, [0], np.arange(n)).block
    environment = np.arange(1, n)
    preconditioner, _ = block_preconditioner(lambda y: evaluate(y)[1], x, environment,
                                             [np.array([i]) for i in range(n - 1)])
    condensed = condense(columns[:3], columns[3:], hessian_vector_product(lambda y: evaluate(y)[1], x, environment),
                         preconditioner=preconditioner)
    to_cm = CM_PER_RAD_PS
    assert np.allclose(normal_modes(condensed.hessian, [m]).frequencies, np.sqrt(k * (1 + 1 / n) / m) * to_cm,
                       rtol=1e-8)
    assert np.allclose(normal_modes(columns[:3], [m]).frequencies, np.sqrt(2 * k / m) * to_cm, rtol=1e-8)
    full = normal_modes(finite_difference_hessian(evaluate, x, np.arange(n)), [m] * n).frequencies
    exact = np.repeat(2 * np.sqrt(k / m) * np.sin(np.arange(1, n + 1) * np.pi / (2 * (n + 1))), 3) * to_cm
    assert np.allclose(full, exact, rtol=1e-8)


def test_zero_coupling_leaves_the_active_block_unchanged():
    rng = np.random.default_rng(3)
    h_aa = rng.normal(size=(6, 6))
    h_aa = h_aa + h_aa.T

    def never(v):
        raise AssertionError("no product is needed when the coupling is zero")

    result = condense(h_aa, np.zeros((12, 6)), never)
    assert np.array_equal(result.hessian, h_aa) and result.products == 0


def test_vibrational_thermochemistry_matches_pyscf_and_the_quasi_harmonic_limits():
    """RRHO vibrational ZPE, thermal energy and entropy against pyscf.hessian.thermo for water's modes; the
    quasi-RRHO entropy equals RRHO for stiff modes and tends to the free rotor's for soft ones."""
    from pyscf import gto
    from pyscf.data import nist
    from pyscf.hessian import thermo

    nu = np.array([1700.0, 3800.0, 3900.0])
    au2hz = (nist.HARTREE2J / (nist.ATOMIC_MASS * nist.BOHR_SI**2)) ** 0.5 / (2 * np.pi)  # PySCF's frequency unit
    mol = gto.M(atom="O 0 0 0; H 0 0.75 0.6; H 0 -0.75 0.6", basis="sto-3g", verbose=0)
    pyscf_vib = thermo.thermo(SimpleNamespace(mol=mol, e_tot=0.0), nu * 2.99792458e10 / au2hz, 298.15)
    ours = vibrational_thermochemistry(nu, 298.15, quasi_harmonic_cutoff=None)
    assert ours.zpe == pytest.approx(pyscf_vib["ZPE"][0] * HARTREE_KJMOL, rel=1e-6)
    assert ours.thermal_energy == pytest.approx(pyscf_vib["E_vib"][0] * HARTREE_KJMOL, rel=1e-6)
    assert ours.entropy == pytest.approx(pyscf_vib["S_vib"][0] * HARTREE_KJMOL * 1000, rel=1e-5)  # CODATA sets
    stiff = vibrational_thermochemistry([3000.0], 298.15)
    assert stiff.entropy == pytest.approx(vibrational_thermochemistry([3000.0], quasi_harmonic_cutoff=None).entropy,
                                          abs=1e-4)  # J/mol/K: the rotor's weight at 3000 cm⁻¹ is 1.2e-6
    soft_rrho = vibrational_thermochemistry([5.0], quasi_harmonic_cutoff=None).entropy
    soft_q = vibrational_thermochemistry([5.0]).entropy
    assert soft_q < soft_rrho  # the harmonic entropy diverges as ν → 0; the free rotor's does not


@pytest.mark.slow
def test_kinetic_isotope_effect_matches_the_bigeleisen_mayer_formula():
    """HCN → HNC (HF/STO-3G, gas phase): H/D KIE at 300 K from our frequencies of reactant and saddle
    (P-RFO) against the Bigeleisen–Mayer formula written out independently below; Wigner tunnelling."""
    from bioqmmm.paths.tsopt import refine_transition_state

    top = app.Topology()
    residue = top.addResidue("HCN", top.addChain())
    for name, element in (("H", "H"), ("C", "C"), ("N", "N")):
        top.addAtom(name, app.Element.getBySymbol(element), residue)
    import openmm

    system = openmm.System()
    for mass in (1.008, 12.011, 14.007):
        system.addParticle(mass)
    qmmm = QMMMSystem(top, system, [0, 1, 2], charge=0, multiplicity=1,
                      engine=PySCFEngine("hf", "sto-3g", conv_tol=1e-11, conv_tol_grad=1e-8), platform="Reference")
    reactant = minimised(qmmm.energy_and_forces, np.array([[-0.106, 0, 0], [0.0, 0, 0], [0.115, 0, 0]]), [0, 1, 2])
    masses = monoisotopic_masses(top, [0, 1, 2])
    ts = refine_transition_state(qmmm.energy_and_forces, np.array([[0.04, 0.10, 0], [0.0, 0, 0], [0.117, 0, 0]]),
                                 np.arange(3), masses, whole_system=True, fmax=0.5, max_steps=60)
    assert ts.converged and len(ts.imaginary_frequencies) == 1

    def frequencies(x, deuterated):
        h = active_hessian(qmmm, x, [0, 1, 2], method="full")
        return analyse(qmmm, x, h, masses={0: 2.014101778} if deuterated else None).modes.frequencies

    r_h, r_d = frequencies(reactant, False), frequencies(reactant, True)
    t_h, t_d = frequencies(ts.positions, False), frequencies(ts.positions, True)
    assert len(r_h) == 4 and len(t_h) == 3  # linear reactant (3N − 5), bent saddle (3N − 6, one imaginary)
    result = isotope_effect(r_h, r_d, t_h, t_d, 300.0, free_molecule=True, tunnelling="wigner")

    # Bigeleisen–Mayer, written out: k_H/k_D = (ν‡_H/ν‡_D) · f_R / f‡, f = Π (u_D/u_H) sinh(u_H/2)/sinh(u_D/2)
    c2 = 1.438776877  # second radiation constant hc/k, cm K
    def f(light, heavy):
        u_l, u_h = c2 * light / 300.0, c2 * heavy / 300.0
        return np.prod(u_h / u_l * np.sinh(u_l / 2) / np.sinh(u_h / 2))

    semiclassical = (t_h[0] / t_d[0]) * f(r_h, r_d) / f(t_h[1:], t_d[1:])
    assert result.semiclassical == pytest.approx(semiclassical, rel=1e-8)  # CODATA constants vs c2
    wigner = (1 + (c2 * t_h[0] / 300) ** 2 / 24) / (1 + (c2 * t_d[0] / 300) ** 2 / 24)
    assert result.kie == pytest.approx(semiclassical * wigner, rel=1e-8)
    assert result.semiclassical > 1  # a primary H/D effect on a hydrogen transfer


def test_bell_tunnelling_refuses_where_it_diverges():
    assert tunnelling_factor(-500.0, 300.0, "bell") == pytest.approx(
        (1.438776877 * 500 / 300 / 2) / np.sin(1.438776877 * 500 / 300 / 2))
    with pytest.raises(InputError, match="2π"):
        tunnelling_factor(-2000.0, 300.0, "bell")
    with pytest.raises(InputError, match="exactly one imaginary"):
        isotope_effect([100.0], [90.0], [200.0], [180.0])


def test_constrained_atoms_and_unknown_methods_are_refused_before_any_qm(water_cluster):
    topology, system, positions = water_cluster  # rigid TIP3P
    with pytest.raises(InputError, match="constraint"):
        check_unconstrained(system, [3, 4, 5])
    qmmm = QMMMSystem(topology, system, [0, 1, 2], charge=0, multiplicity=1, engine=PySCFEngine("hf", "sto-3g"))
    with pytest.raises(InputError, match="unknown Hessian method"):
        active_hessian(qmmm, positions, [0, 1, 2], method="exact")
    with pytest.raises(InputError, match="constraint"):
        active_hessian(qmmm, positions, [0, 1, 2], [3, 4, 5])
    assert qmmm.engine.calls == 0


def test_molden_file_lists_every_mode(tmp_path):
    modes = normal_modes(np.diag([1e5, 2e5, 3e5, 4e5, 5e5, 6e5]), [1.0, 16.0])
    write_molden(tmp_path / "m.molden", ["H", "O"], np.zeros((2, 3)), modes)
    text = (tmp_path / "m.molden").read_text()
    assert text.count("vibration") == 6 and "[FR-COORD]" in text and "[FR-NORM-COORD]" in text
    listed = [float(v) for v in text.split("[FREQ]\n")[1].split("[FR-COORD]")[0].split()]
    assert np.allclose(listed, modes.frequencies, atol=1e-3)


def test_vibrations_protocol_runs_the_three_routes_in_a_periodic_box_and_resumes(tmp_path, monkeypatch):
    """The shipped protocols/vibrations.yaml (a QM water in flexible TIP3P, PME), with the full Hessian added:
    minimised, then partial, condensed and full Hessians. Condensing subtracts H_AE H_EE⁻¹ H_EA ⪰ 0 from H_AA,
    so (Weyl) every condensed frequency lies at or below the partial one of the same rank; the full Hessian has
    a mode per moving coordinate. A rerun reads every Hessian back from its stage file (computing one would
    fail here)."""
    import json

    from conftest import shipped_protocol

    from bioqmmm.run.runner import run_protocol

    path = shipped_protocol(tmp_path, "vibrations.yaml", "out", hessians=["partial", "condensed", "full"])
    record = run_protocol(path, progress=False)
    partial = np.loadtxt(tmp_path / "out" / "frequencies_partial.csv", delimiter=",", skiprows=1)[:, 1]
    condensed = np.loadtxt(tmp_path / "out" / "frequencies_condensed.csv", delimiter=",", skiprows=1)[:, 1]
    full = np.loadtxt(tmp_path / "out" / "frequencies_full.csv", delimiter=",", skiprows=1)[:, 1]
    assert len(partial) == len(condensed) == 9
    assert len(full) == 9 + 3 * record["environment_atoms"] and record["environment_atoms"] >= 9
    assert np.all(condensed <= partial + 0.5), (condensed, partial)
    assert condensed[:6].sum() < partial[:6].sum() - 50  # the cage modes soften when the cage follows
    assert record["full"]["qmmm_evaluations"] > record["condensed"]["qmmm_evaluations"] == 19
    assert (tmp_path / "out" / "spectrum.png").stat().st_size > 0

    import bioqmmm.protocols.vibrations as vibrations_protocol

    def refuse(*args, **kwargs):
        raise AssertionError("a rerun computed a Hessian instead of reading its stage file")

    monkeypatch.setattr(vibrations_protocol, "active_hessian", refuse)
    again = run_protocol(path, progress=False)
    assert json.dumps(again["full"]["highest_frequencies"]) == json.dumps(record["full"]["highest_frequencies"])
