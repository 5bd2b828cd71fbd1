"""Periodic crystals: the Madelung term, finite-size extrapolation of charged cells, the static dielectric
constant and elastic constants by stress–strain, each against an independent reference; the finite_size
and elastic protocols end to end."""

from __future__ import annotations

import json
import math
from itertools import product
from pathlib import Path

import numpy as np
import openmm
import pytest
from conftest import shipped_protocol
from openmm import app, unit

from bioqmmm.errors import InputError
from bioqmmm.periodic.cells import Cell, deformation, deformed, supercell
from bioqmmm.periodic.crystals import rocksalt
from bioqmmm.periodic.dielectric import gamma_force_constants, static_dielectric
from bioqmmm.periodic.elastic import KJMOL_NM3_GPA, VOIGT, elastic_tensor
from bioqmmm.periodic.extrapolation import analytic_a, fit
from bioqmmm.periodic.madelung import CUBIC_XI, cubic_constant, self_energy
from bioqmmm.periodic.model import CellModel
from bioqmmm.periodic.setup import build_supercell
from bioqmmm.units import COULOMB_KJMOL_NM

ROOT = Path(__file__).resolve().parents[1]


def _charges_in_box(charges, positions, box, method=openmm.NonbondedForce.Ewald, tolerance=1e-6) -> float:
    """OpenMM's energy (kJ/mol) of point charges (no Lennard-Jones) in the periodic cell ``box`` (rows, nm)."""
    system = openmm.System()
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(method)
    force.setCutoffDistance(0.9)
    force.setEwaldErrorTolerance(tolerance)
    for q in charges:
        system.addParticle(1.0)
        force.addParticle(q, 0.1, 0.0)
    system.addForce(force)
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in box))
    return CellModel(system).energy(np.asarray(positions, dtype=float), np.asarray(box, dtype=float))


def test_madelung_constants_of_cubic_and_fcc_lattices():
    """ξ = −2.837297 for simple cubic and −2.888282 for fcc with L = V^⅓ (Nijboer & De Wette, Physica 23,
    309 (1957); Makov & Payne, Phys. Rev. B 51, 4014 (1995), Table I: α = 2.8373, 2.8883), for any size."""
    for length in (0.7, 2.0, 5.3):
        assert cubic_constant(np.eye(3) * length) == pytest.approx(CUBIC_XI, abs=1e-8)
    fcc = 0.5 * np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]) * 1.7
    assert cubic_constant(fcc) == pytest.approx(-2.888282, abs=2e-6)


def test_madelung_term_is_openmms_energy_of_one_charge_and_screens_with_the_dielectric():
    """A single charge q in OpenMM's PME sum (neutralising background) has E = k_e q² ε_self(box), here in a
    triclinic cell; a scalar ε divides it, and a tensor ε rotates with the cell."""
    box = np.array([[2.1, 0.0, 0.0], [0.4, 1.9, 0.0], [-0.3, 0.5, 2.3]])
    energy = _charges_in_box([1.5], [[0.3, 0.2, 0.1]], box, openmm.NonbondedForce.PME, tolerance=1e-7)
    assert energy == pytest.approx(COULOMB_KJMOL_NM * 1.5**2 * self_energy(box), rel=1e-5)
    assert self_energy(box, 2.5) == pytest.approx(self_energy(box) / 2.5, rel=1e-12)
    eps = np.array([[3.0, 0.4, 0.1], [0.4, 2.0, -0.2], [0.1, -0.2, 4.0]])
    angle = 0.7
    rotation = np.array([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0],
                         [0.0, 0.0, 1.0]])
    assert self_energy(box @ rotation.T, rotation @ eps @ rotation.T) == pytest.approx(self_energy(box, eps),
                                                                                      rel=1e-10)
    with pytest.raises(ValueError, match="positive definite"):
        self_energy(box, -np.eye(3))


def test_point_charges_extrapolate_to_the_isolated_energy_with_the_analytic_a():
    """Acceptance: a charged cluster (+1 e, with a dipole and quadrupole) in cubic Ewald and PME cells of edge
    2–5 nm. The fitted A equals k_e q² ξ/2 to 0.1 % and E∞ the cluster's Coulomb energy in vacuum."""
    charges = np.array([1.5, -0.5, 0.4, -0.4])
    positions = np.array([[0.0, 0.0, 0.0], [0.15, 0.0, 0.0], [0.0, 0.2, 0.05], [-0.1, -0.1, 0.12]])
    isolated = sum(COULOMB_KJMOL_NM * charges[i] * charges[j] / np.linalg.norm(positions[i] - positions[j])
                   for i in range(len(charges)) for j in range(i))
    a_analytic = analytic_a(np.eye(3), charges.sum())
    assert a_analytic == pytest.approx(COULOMB_KJMOL_NM * CUBIC_XI / 2.0, rel=1e-9)
    lengths = [2.0, 3.0, 4.0, 5.0]
    for method in (openmm.NonbondedForce.Ewald, openmm.NonbondedForce.PME):
        energies = [_charges_in_box(charges, positions, np.eye(3) * length, method) for length in lengths]
        result = fit(lengths, energies, a_analytic)
        assert abs(result.a_deviation) < 1e-3
        assert result.e_inf == pytest.approx(isolated, abs=5e-3)  # 1/L⁵ terms: ~1e-3 kJ/mol at L ≥ 2 nm
        assert result.e_inf_fixed_a == pytest.approx(isolated, abs=5e-3)
        assert 0.0 < result.e_inf_error < 1e-2 and result.warnings == ()


def test_fit_recovers_its_parameters_and_warns():
    lengths = np.array([1.0, 1.5, 2.0, 2.5, 3.0])
    exact = 10.0 - 5.0 / lengths + 2.0 / lengths**3
    result = fit(lengths, exact, a_analytic=-5.0)
    assert (result.e_inf, result.a, result.b) == pytest.approx((10.0, -5.0, 2.0), abs=1e-9)
    assert result.warnings == () and result.a_deviation == pytest.approx(0.0, abs=1e-9)
    assert fit(lengths[:3], exact[:3]).warnings[0].startswith("only 3 cells")
    noisy = exact + np.array([0.3, -0.3, 0.3, -0.3, 0.3])
    assert any(w.startswith("poor fit") for w in fit(lengths, noisy).warnings)
    assert any("disagree" in w for w in fit(lengths, exact, a_analytic=-4.0).warnings)
    with pytest.raises(ValueError, match="three or more different cell sizes"):
        fit([1.0, 1.0, 2.0], [1.0, 2.0, 3.0])


def _nacl(repeats: int = 2) -> tuple[Cell, Cell]:
    """The 8-atom rock-salt NaCl cell (Joung–Cheatham ions, PME cut-off 0.55 nm) and its supercell."""
    topology, positions, box = rocksalt(0.5592)
    system = app.ForceField("amber14/tip3p.xml").createSystem(topology, nonbondedMethod=app.PME,
                                                              nonbondedCutoff=0.55 * unit.nanometer)
    cell = Cell(topology, system, positions, box)
    return cell, build_supercell(cell, (repeats,) * 3, None, 1e-6, 0.1)


def test_static_dielectric_from_force_constants_equals_the_response_to_an_applied_field():
    """ε = I + 4πk_e ZᵀK⁺Z/V (Born & Huang) against the polarisation a uniform field E induces in the relaxed
    crystal: ε − 1 = 4πk_e ΔP/E with P = Σq x / V (the Ewald sum's conducting boundary: zero macroscopic field
    besides E)."""
    cell, big = _nacl()
    model = CellModel(big.system)
    relaxed = model.relax(big.positions, big.box, 1e-3)[0]
    eps = static_dielectric(gamma_force_constants(model, relaxed, big.box, 8), cell.charges(), cell.volume)
    assert np.allclose(eps, eps[0, 0] * np.eye(3), atol=1e-4)  # cubic crystal: isotropic
    field = 5.0  # kJ/mol/nm/e
    charges = big.charges()
    with_field = openmm.System()
    for i in range(big.system.getNumParticles()):
        with_field.addParticle(big.system.getParticleMass(i))
    for force in big.system.getForces():
        with_field.addForce(openmm.XmlSerializer.clone(force))
    external = openmm.CustomExternalForce("-q*field*x")
    external.addGlobalParameter("field", field)
    external.addPerParticleParameter("q")
    for i, q in enumerate(charges):
        external.addParticle(i, [q])
    with_field.addForce(external)
    polarised = CellModel(with_field).relax(relaxed, big.box, 1e-4)[0]
    polarisation = charges @ (polarised - relaxed)[:, 0] / big.volume
    assert eps[0, 0] == pytest.approx(1.0 + 4.0 * math.pi * COULOMB_KJMOL_NM * polarisation / field, rel=2e-3)
    assert 2.0 < eps[0, 0] < 4.0


def test_relaxation_finishes_on_forces_alone_when_the_line_search_stalls(monkeypatch):
    """Near the minimum of a large cell a line search stalls on the rounding of the total energy; the FIRE stage
    then brings every force component below the tolerance (here L-BFGS-B is made to stall at once)."""
    from types import SimpleNamespace

    from bioqmmm.periodic import model as model_module

    _, big = _nacl()
    displaced = big.positions.copy()
    displaced[3] += [0.01, -0.005, 0.002]
    expected = CellModel(big.system).relax(displaced, big.box, 1e-3)
    monkeypatch.setattr(model_module.scipy.optimize, "minimize",
                        lambda fun, x0, **kwargs: SimpleNamespace(x=x0, message="stalled"))
    model = CellModel(big.system)
    positions, energy, largest = model.relax(displaced, big.box, 1e-3)
    assert largest <= 1e-3 and model.evaluations > 10  # FIRE steps were taken
    assert energy == pytest.approx(expected[1], abs=1e-6)
    assert np.abs(positions - expected[0]).max() < 1e-5


def test_deformation_gradient_and_rotation_back_to_openmm_box_form():
    strain = np.array([[0.01, 0.002, -0.003], [0.002, -0.005, 0.004], [-0.003, 0.004, 0.02]])
    gradient = deformation(strain)
    assert np.allclose(0.5 * (gradient.T @ gradient - np.eye(3)), strain, atol=1e-14)
    box = np.array([[2.0, 0.0, 0.0], [0.3, 1.8, 0.0], [-0.2, 0.4, 2.2]])
    positions = np.random.default_rng(1).uniform(0.0, 2.0, (5, 3))
    angle = 0.4
    rotation = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(angle), -math.sin(angle)],
                         [0.0, math.sin(angle), math.cos(angle)]])
    plain = deformed(positions, box, gradient)
    rotated = deformed(positions, box, rotation @ gradient)  # a rigid rotation after F is undone
    assert np.allclose(plain[0], rotated[0], atol=1e-12) and np.allclose(plain[1], rotated[1], atol=1e-12)
    new_box = plain[1]
    assert np.all(np.triu(new_box, 1) == 0.0) and np.all(np.diag(new_box) > 0.0)
    fractional = positions @ np.linalg.inv(box)
    assert np.allclose(plain[0] @ np.linalg.inv(new_box), fractional, atol=1e-12)
    assert np.allclose(deformed(positions, box, rotation)[1], box, atol=1e-12)
    with pytest.raises(InputError, match="not a deformation"):
        deformation(-np.eye(3))


def _lj_fcc(lattice: float, sigma: float, epsilon: float, copies: int, cutoff: float) -> tuple[CellModel, np.ndarray,
                                                                                                 np.ndarray]:
    """A Lennard-Jones fcc crystal of ``copies``³ conventional cells, truncated at ``cutoff`` (no switch, no
    dispersion correction): its CellModel, positions and box."""
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    positions = np.array([(b + n) * lattice for n in product(range(copies), repeat=3) for b in basis])
    box = np.eye(3) * copies * lattice
    system = openmm.System()
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(cutoff)
    force.setUseDispersionCorrection(False)
    for _ in positions:
        system.addParticle(39.948)
        force.addParticle(0.0, sigma, epsilon)
    system.addForce(force)
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in box))
    return CellModel(system), positions, box


def test_lennard_jones_fcc_elastic_constants_match_lattice_sums():
    """Acceptance: the 0 K elastic constants of a Lennard-Jones fcc crystal (argon-like, truncated at
    2.55 nearest-neighbour distances, between the 6th and 7th shells) against the lattice sums
    C_ijkl = (1/2Ω) Σ_n (φ'' − φ'/r) x_i x_j x_k x_l / r² and σ_ij = (1/2Ω) Σ_n φ' x_i x_j / r
    (Born & Huang (1954), §11; Ω the volume per atom), to 0.5 %; cubic symmetry and the Cauchy relation
    C12 = C44 of central pair forces."""
    sigma, epsilon, lattice = 0.34, 0.996, 0.5256
    cutoff = 2.55 * lattice / math.sqrt(2.0)
    model, positions, box = _lj_fcc(lattice, sigma, epsilon, 4, cutoff)
    tensor = elastic_tensor(model, positions, box, (0.005, 0.01))

    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    points = np.array([(b + n) * lattice for n in product(range(-4, 5), repeat=3) for b in basis])
    r = np.linalg.norm(points, axis=1)
    points, r = points[(r > 0) & (r < cutoff)], r[(r > 0) & (r < cutoff)]
    s6 = (sigma / r) ** 6
    first = 4 * epsilon * (-12 * s6**2 + 6 * s6) / r
    second = 4 * epsilon * (156 * s6**2 - 42 * s6) / r**2
    omega = lattice**3 / 4
    lattice_c = np.empty((6, 6))
    for (a, (i, j)), (b, (k, m)) in product(enumerate(VOIGT), repeat=2):
        lattice_c[a, b] = np.sum((second - first / r) * points[:, i] * points[:, j] * points[:, k] * points[:, m]
                                 / r**2) / (2 * omega) * KJMOL_NM3_GPA
    lattice_stress = np.array([np.sum(first * points[:, i] * points[:, j] / r) / (2 * omega)
                               for i, j in VOIGT]) * KJMOL_NM3_GPA
    nonzero = np.abs(lattice_c) > 1e-6
    assert np.all(np.abs(tensor.c[nonzero] / lattice_c[nonzero] - 1.0) < 5e-3)
    assert np.all(np.abs(tensor.c[~nonzero]) < 5e-3 * lattice_c[0, 0])
    assert np.allclose(tensor.stress, lattice_stress, atol=1e-3 * abs(lattice_stress[0]) + 1e-6)
    cubic = tensor.cubic()
    assert cubic["cubic_deviation"] < 1e-3 * cubic["c11"] and tensor.major_asymmetry < 1e-3 * cubic["c11"]
    assert cubic["c12"] == pytest.approx(cubic["c44"], rel=5e-3)
    assert tensor.eigenvalues.min() > 0.0 and tensor.stress_asymmetry < 1e-3 * cubic["c11"]
    assert np.all(tensor.error < 5e-3 * cubic["c11"])


def test_supercell_puts_the_defect_cell_first_and_refuses_a_mismatch():
    cell, _ = _nacl()
    topology, positions, box = rocksalt(0.5592, dopant="K")
    defect = Cell(topology, app.ForceField("amber14/tip3p.xml").createSystem(
        topology, nonbondedMethod=app.PME, nonbondedCutoff=0.55 * unit.nanometer), positions, box)
    big = supercell(cell, (2, 1, 3), defect)
    assert big.system.getNumParticles() == 48 and np.allclose(np.diag(big.box), [1.1184, 0.5592, 1.6776])
    names = [atom.name for atom in big.topology.atoms()]
    assert names[0] == "K" and names.count("K") == 1 and names.count("NA") == 23
    assert big.net_charge() == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(InputError, match="differs from the host cell's"):
        supercell(cell, (2, 2, 2), Cell(topology, defect.system, positions, box * 1.01))
    with pytest.raises(InputError, match="three positive integers"):
        supercell(cell, (2, 0, 2))


def _finite_size_file(tmp_path, output, **changes):
    return shipped_protocol(tmp_path, "finite_size.yaml", output, **changes)


def test_finite_size_protocol_frozen_host(tmp_path):
    """Ca²⁺ (QM, HF/STO-3G) on a Na⁺ site of NaCl in 2³…5³ supercells, host frozen (ε = 1): the fitted A of the
    QM/MM series is k_e (ξ/2)(q² − q_QM²) and of the MM series k_e (ξ/2) q² (q = +1, q_QM = +2) within the
    protocol's tolerance; E∞ comes with its uncertainty; a rerun reads every cell back."""
    from bioqmmm.run.runner import run_protocol

    path = _finite_size_file(tmp_path, "out", relax="none", a_tolerance=0.01)
    result = run_protocol(path, progress=False)
    assert result["defect_charge"]["value"] == pytest.approx(1.0) and result["qm_charge"]["value"] == 2
    assert result["dielectric_source"] == "frozen host" and result["warnings"] == []
    half_xi = COULOMB_KJMOL_NM * CUBIC_XI / 2.0
    for series, expected in (("qmmm", half_xi * (1 - 4)), ("mm", half_xi)):
        figures = result[series]
        assert figures["a_analytic"]["value"] == pytest.approx(expected, rel=1e-8)
        assert abs(figures["a_deviation_percent"]) < 1.0
        assert 0.0 < figures["e_inf"]["uncertainty"] < 1.0
    out = tmp_path / "out"
    assert len((out / "finite_size.csv").read_text().splitlines()) == 5 and (out / "finite_size.png").exists()
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    again = run_protocol(path, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == stamps
    assert again["qmmm"] == result["qmmm"]


def test_elastic_protocol_unrelaxed_defect_against_host(tmp_path):
    """The elastic protocol on NaCl:Ca²⁺ (2×2×2, homogeneous strain only): both tensors symmetric and positive
    definite, the host cubic, the QM/MM defect's C differing from the host's."""
    from bioqmmm.run.runner import run_protocol

    path = shipped_protocol(tmp_path, "elastic.yaml", "out", relax=False, mm_reference=False, ewald_tolerance=1e-5)
    result = run_protocol(path, progress=False)
    for name in ("qmmm", "host"):
        figures = result[name]
        assert figures["positive_definite"] and figures["major_asymmetry"]["value"] < 0.01
        assert figures["stress_asymmetry"]["value"] < 1e-3
        assert figures["max_error"]["value"] < 0.01 * figures["cubic"]["c11"]  # anharmonicity: C(h) − C(0) ∝ h²
    host = result["host"]["cubic"]
    assert host["cubic_deviation"] < 1e-3 * host["c11"]
    assert np.abs(result["qmmm_minus_host"]["value"]).max() > 0.1 and "qmmm_minus_mm" not in result
    rows = (tmp_path / "out" / "elastic.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 36 and (tmp_path / "out" / "elastic.png").exists()
    assert json.loads((tmp_path / "out" / "result.json").read_text())["amplitudes"] == [0.005, 0.01]


@pytest.mark.parametrize(("protocol", "changes", "message"), [
    ("finite_size.yaml", {"host_pdb": "missing.pdb"}, "host cell .*missing.pdb does not exist"),
    ("finite_size.yaml", {"repeats": [1, 2, 3, 4]},
     "a 1-fold supercell is 0.559 nm wide, less than twice the nonbonded cut-off 0.52 nm: use repeats of 2 or more"),
    ("elastic.yaml", {"repeats": [1, 2, 2]}, "a 1-fold supercell"),
    ("finite_size.yaml", {"repeats": [2, 3]}, "three or more different positive sizes"),
    ("elastic.yaml", {"amplitudes": [0.01, 0.1]}, "two different strain amplitudes"),
])
def test_bad_periodic_input_stops_before_any_calculation(tmp_path, monkeypatch, protocol, changes, message):
    from bioqmmm.periodic import model
    from bioqmmm.run.runner import run_protocol

    def no_energy(*args, **kwargs):
        raise AssertionError("an energy was computed")

    monkeypatch.setattr(model.CellModel, "energy_and_forces", no_energy)
    monkeypatch.setattr(model.CellModel, "relax", no_energy)
    with pytest.raises(InputError, match=message):
        run_protocol(shipped_protocol(tmp_path, protocol, "out", **changes), progress=False)


def test_host_cell_with_another_box_and_a_model_with_constraints_are_refused(tmp_path, small_water_box):
    from bioqmmm.run.runner import run_protocol

    other = tmp_path / "other.pdb"
    other.write_text((ROOT / "protocols" / "nacl_cell.pdb").read_text().replace("5.592", "5.600", 3))
    with pytest.raises(InputError, match="they must be the same cell"):
        run_protocol(_finite_size_file(tmp_path, "a", host_pdb=str(other)), progress=False)
    with pytest.raises(InputError, match="a cell model needs every atom free"):
        CellModel(small_water_box[1])


@pytest.mark.slow
def test_shipped_periodic_examples_reproduce_the_documented_numbers(tmp_path):
    """Acceptance: the shipped finite_size (relaxed host, ε from its force constants) and elastic (relaxed
    QM point defect) examples as docs/periodic.md quotes them."""
    from bioqmmm.run import docs_numbers
    from bioqmmm.run.runner import run_protocol

    finite = run_protocol(_finite_size_file(tmp_path, "finite"), progress=False)
    assert finite["warnings"] == []
    for series in ("qmmm", "mm"):
        assert abs(finite[series]["a_deviation_percent"]) < 5.0
    assert docs_numbers.compare("finite_size", finite) == []
    elastic = run_protocol(shipped_protocol(tmp_path, "elastic.yaml", "elastic"), progress=False)
    for name in ("qmmm", "mm", "host"):
        assert elastic[name]["positive_definite"]
    assert docs_numbers.compare("elastic", elastic) == []
