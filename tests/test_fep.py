"""Level-of-theory and QM-region free energies (bioqmmm.fep, protocol fep).

References are independent of the code under test: the analytic free energy of mixed harmonic wells,
a rigid-rotor/harmonic-oscillator free energy from PySCF run directly, and agreement between
estimators that share no assumptions (λ windows vs nonequilibrium switching, forward vs reverse).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import openmm
import pytest
import yaml
from conftest import shipped_protocol
from openmm import app, unit

from bioqmmm.errors import InputError
from bioqmmm.fep.analysis import Thresholds, analyse_switching, analyse_windows, uncorrelated
from bioqmmm.fep.cycles import combine
from bioqmmm.fep.hamiltonian import MixedHamiltonian
from bioqmmm.fep.schedule import refine
from bioqmmm.fep.switching import switch
from bioqmmm.run.runner import run_protocol
from bioqmmm.run.schema import ProtocolError
from bioqmmm.sampling.windows import SamplingSettings, sample
from bioqmmm.units import kt_kjmol

KT = kt_kjmol(300.0)
#: Two 3-D wells U = ½ k |x − c|² (kJ/mol/nm², nm).
K_A, K_B = 400.0, 900.0
C_A, C_B = np.zeros(3), np.array([0.05, 0.0, 0.0])


def mixed_well_free_energy(lam: float) -> float:
    """A(λ) − A(0) of U(λ) = (1 − λ) U_a + λ U_b, exactly: the mixture is a well of k_λ = (1 − λ) k_a + λ k_b
    around the weighted centre, raised by ½ λ(1 − λ) k_a k_b |c_a − c_b|² / k_λ at its bottom, so
    A(λ) − A(0) = (3/2) k_BT ln(k_λ / k_a) + that constant (zero at both ends)."""
    k = (1 - lam) * K_A + lam * K_B
    return 1.5 * KT * np.log(k / K_A) + 0.5 * lam * (1 - lam) * K_A * K_B * np.sum((C_A - C_B) ** 2) / k


def well_samples(lam: float, n: int, rng) -> np.ndarray:
    """ΔU = U_b − U_a of n independent samples of the mixed well at λ (exact Boltzmann samples)."""
    k = (1 - lam) * K_A + lam * K_B
    centre = ((1 - lam) * K_A * C_A + lam * K_B * C_B) / k
    x = centre + rng.normal(size=(n, 3)) * np.sqrt(KT / k)
    return 0.5 * K_B * ((x - C_B) ** 2).sum(1) - 0.5 * K_A * ((x - C_A) ** 2).sum(1)


def well_system(k: float, centre: np.ndarray) -> openmm.System:
    system = openmm.System()
    system.addParticle(12.0)
    force = openmm.CustomExternalForce("0.5*k*((x-cx)^2+(y-cy)^2+(z-cz)^2)")
    for name, value in zip(("k", "cx", "cy", "cz"), (k, *centre), strict=True):
        force.addGlobalParameter(name, value)
    force.addParticle(0, [])
    system.addForce(force)
    return system


def within(value: float, reference: float, sigma: float, allowance: float = 0.0) -> bool:
    return abs(value - reference) <= 3 * sigma + allowance


def test_estimators_recover_the_free_energy_of_mixed_harmonic_wells():
    """Acceptance (analytic): ΔA = (3/2) k_BT ln(k_b/k_a) by MBAR, BAR and Zwanzig within 3σ, every window's
    A(λ) including the centre-shift term within 3σ, and the bootstrap σ close to the analytic one."""
    rng = np.random.default_rng(2026)
    lambdas = np.linspace(0.0, 1.0, 5)
    result = analyse_windows(lambdas, [well_samples(lam, 400, rng) for lam in lambdas], KT, bootstraps=60, seed=3)
    exact = 1.5 * KT * np.log(K_B / K_A)
    for name in ("MBAR", "BAR", "Zwanzig"):
        estimate = result.estimates[name]
        assert within(estimate.value, exact, estimate.uncertainty), (name, estimate, exact)
        assert 0.5 < estimate.bootstrap / estimate.uncertainty < 2.0, (name, estimate)
    windows = result.windows
    for lam, f, df in zip(lambdas, windows.state_free_energies, windows.state_uncertainties, strict=True):
        assert within(f, mixed_well_free_energy(lam), max(df, 1e-9)), (lam, f, mixed_well_free_energy(lam))
    assert result.trusted, result.problems
    assert result.estimate.method == "MBAR"


def test_two_windows_far_apart_are_flagged_not_reported_clean():
    """Acceptance (diagnostics): λ = 0 and 1 alone, with wells far apart, give an untrusted result naming
    the overlap that failed, in the record that goes to result.json."""
    global C_B
    rng = np.random.default_rng(5)
    saved, C_B = C_B, np.array([0.4, 0.0, 0.0])
    try:
        result = analyse_windows([0.0, 1.0], [well_samples(lam, 200, rng) for lam in (0.0, 1.0)], KT)
    finally:
        C_B = saved
    assert not result.trusted
    record = result.record()
    assert record["free_energy"]["trusted"] is False
    failed = [d for d in record["diagnostics"] if d["critical"] and not d["passed"]]
    assert failed[0]["name"] == "neighbour_overlap" and failed[0]["value"] < 0.03
    assert "λ 0 and 1" in record["problems"][0] and "add a window" in record["problems"][0]


def test_switching_whose_work_distributions_do_not_overlap_is_flagged_not_crashed():
    """Forward and reverse works 40 k_BT apart: Crooks is reported untrusted with its overlap, no exception."""
    rng = np.random.default_rng(3)
    forward = 110.0 + rng.normal(size=30) * 20.0
    reverse = 90.0 + rng.normal(size=30) * 20.0
    result = analyse_switching(forward, reverse, KT)
    assert result.estimate.method == "Crooks" and not result.trusted
    failed = [c for c in result.checks if c.name == "work_overlap"][0]
    assert not failed.passed and failed.value < 0.03 and "switch more slowly" in failed.message


def test_schedule_inserts_midpoints_where_overlap_is_low_within_the_budget():
    assert refine([0, 0.5, 1], [0.2, 0.01], 0.03, 10) == [0, 0.5, 0.75, 1]
    assert refine([0, 0.5, 1], [0.001, 0.01], 0.03, 4) == [0, 0.25, 0.5, 1]  # the worst gap first
    assert refine([0, 0.5, 1], [0.1, 0.2], 0.03, 10) == [0, 0.5, 1]


def test_mixed_hamiltonian_forces_are_the_gradient_of_the_mixed_energy(water_cluster):
    """MM wells, and two QM/MM models (GFN2-xTB) of one water cluster with QM regions of one and two
    waters: forces at λ = 0.3 equal central differences of (1 − λ) U_a + λ U_b."""
    from bioqmmm.qm.xtb_engine import XTBEngine
    from bioqmmm.qmmm.system import QMMMSystem

    wells = MixedHamiltonian(well_system(K_A, C_A), well_system(K_B, C_B), 0.3)
    x = np.array([[0.01, 0.02, -0.01]])
    _, forces = wells.evaluate(x)
    assert np.allclose(forces, -(0.7 * K_A * (x - C_A) + 0.3 * K_B * (x - C_B)), atol=1e-9)

    topology, system, positions = water_cluster
    models = [QMMMSystem(topology, system, list(range(3 * n)), charge=0, multiplicity=1,
                         engine=XTBEngine("gfn2", accuracy=1e-4)) for n in (1, 2)]
    mixed = MixedHamiltonian(*models, 0.3, constraints=system, platform="Reference")
    energy, forces = mixed.evaluate(positions)
    u_a, u_b = (model.energy_and_forces(positions)[0] for model in models)  # each model's own Context
    assert np.isclose(energy, 0.7 * u_a + 0.3 * u_b, rtol=0, atol=1e-3)
    h = 1e-5
    for atom in (0, 4, 9):  # QM in both, QM only in b, MM in both
        for axis in range(3):
            plus, minus = positions.copy(), positions.copy()
            plus[atom, axis] += h
            minus[atom, axis] -= h
            numeric = -(mixed.evaluate(plus)[0] - mixed.evaluate(minus)[0]) / (2 * h)
            assert abs(numeric - forces[atom, axis]) < 0.02, (atom, axis, numeric, forces[atom, axis])
    # a switch of n steps costs n evaluations of each end (the dynamics reuses them)
    before = [model.kernel.evaluations for model in models]
    switch(mixed, positions, None, forward=True, steps=5, timestep_fs=1.0, temperature_k=300.0, friction_per_ps=5.0,
           seed=1, platform="Reference")
    assert [model.kernel.evaluations - b for model, b in zip(models, before, strict=True)] == [5, 5]


def _window_samples(hamiltonian: MixedHamiltonian, lam: float, folder: Path, seed: int) -> np.ndarray:
    hamiltonian.lam = lam
    settings = SamplingSettings(samples=500, sample_interval=20, equilibration_steps=200, timestep_fs=10.0,
                                friction_per_ps=10.0, seed=seed, checkpoint_interval=100)

    def measure(context, state):
        u_a, u_b = hamiltonian.energies_of(state)
        return {"u_a": u_a, "u_b": u_b}

    recorded = sample(hamiltonian.system, np.zeros((1, 3)), settings, folder, measure, qmmm=hamiltonian)
    return uncorrelated(recorded["u_b"] - recorded["u_a"])


def test_dynamics_windows_and_switching_recover_the_harmonic_free_energy(tmp_path):
    """Acceptance (analytic, with dynamics): Langevin windows through the mixed Hamiltonian (MBAR, BAR) and
    switching in both directions (Jarzynski each way, Crooks) give (3/2) k_BT ln(k_b/k_a) within 3σ."""
    hamiltonian = MixedHamiltonian(well_system(K_A, C_A), well_system(K_B, C_B), 0.0)
    lambdas = [0.0, 0.5, 1.0]
    groups = [_window_samples(hamiltonian, lam, tmp_path / f"w{lam}", 11 + k) for k, lam in enumerate(lambdas)]
    exact = 1.5 * KT * np.log(K_B / K_A)
    windows = analyse_windows(lambdas, groups, KT)
    for name in ("MBAR", "BAR"):
        assert within(windows.estimates[name].value, exact, windows.estimates[name].uncertainty), windows.estimates
    assert windows.trusted, windows.problems

    rng = np.random.default_rng(7)
    works = {}
    for forward, k, centre in ((True, K_A, C_A), (False, K_B, C_B)):
        starts = centre + rng.normal(size=(60, 1, 3)) * np.sqrt(KT / k)  # exact end-state samples
        works[forward] = np.array([switch(hamiltonian, x, None, forward=forward, steps=15, timestep_fs=10.0,
                                          temperature_k=300.0, friction_per_ps=10.0, seed=i + 1).work
                                   for i, x in enumerate(starts)])
    both = analyse_switching(works[True], works[False], KT, bootstraps=50)
    assert both.estimate.method == "Crooks"
    for name, estimate in both.estimates.items():
        assert within(estimate.value, exact, estimate.uncertainty), (name, estimate, exact)
    assert both.trusted, both.problems


def _region_file(tmp_path: Path, name: str, protocol: dict) -> Path:
    """A QM water and its nearest neighbour in a 1.8 nm TIP3P box at GFN2-xTB/MM; R₁ = the first water."""
    config = {
        "system": {"example": "water_box", "box_size_nm": 1.8, "nonbonded_cutoff_nm": 0.7},
        "qm": {"atoms": "resid 0 102", "charge": 0, "multiplicity": 1, "engine": "xtb", "method": "gfn2"},
        "protocol": {"type": "fep", "low_region": {"atoms": "resid 0", "charge": 0}, "samples": 60,
                     "sample_interval": 10, "equilibration_steps": 100, "bootstraps": 30, **protocol},
        "output": str(tmp_path / name),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_mm_to_xtb_correction_flags_a_two_window_schedule_and_the_automatic_schedule_fixes_it(tmp_path):
    """The protocol end to end (MM → GFN2-xTB/MM for one water in TIP3P): λ = 0, 1 alone is reported NOT
    TRUSTED in result.json and summary.txt with the overlap that failed; with a window budget the schedule
    adds windows where the overlap was low, records them, and a rerun reuses every finished window."""
    protocol = {"low": "mm", "lambdas": [0.0, 1.0], "samples": 20, "sample_interval": 5, "equilibration_steps": 50}
    config = yaml.safe_load(_region_file(tmp_path, "bad", protocol).read_text())
    config["system"]["box_size_nm"] = 1.5
    config["qm"]["atoms"] = "resid 0 31 32 33"  # four neighbouring waters: too far from TIP3P for two windows
    del config["protocol"]["low_region"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_protocol(path, progress=False)
    assert result["trusted"] is False and result["free_energy"]["trusted"] is False
    assert any("overlap" in p for p in result["problems"])
    assert "NOT TRUSTED" in (tmp_path / "bad" / "summary.txt").read_text()
    for name in ("lambda.png", "overlap.png", "convergence.png", "windows.csv"):
        assert (tmp_path / "bad" / name).stat().st_size > 0

    config["protocol"]["max_windows"] = 5
    path.write_text(yaml.safe_dump(config))
    scheduled = run_protocol(path, progress=False)
    schedule = scheduled["lambda_schedule"]
    assert schedule[0] == [0.0, 1.0] and 0.5 in schedule[1] and len(schedule[-1]) <= 5
    assert scheduled["lambdas"] == schedule[-1]
    assert min(scheduled["neighbour_overlap"]) >= 0.03 > min(result["neighbour_overlap"])
    record = json.loads((tmp_path / "bad" / "windows" / "replicas.json").read_text())
    assert all(record["replicas"][name]["resumed"] for name in ("l0.000000", "l1.000000"))


def _mm_equilibrated(system: openmm.System, positions: np.ndarray, picoseconds: float) -> np.ndarray:
    """Positions after MM Langevin dynamics at 300 K (2 fs steps)."""
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 5 / unit.picosecond, 0.002 * unit.picoseconds)
    integrator.setRandomNumberSeed(3)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 500)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 3)
    integrator.step(int(picoseconds * 500))
    return context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)


@pytest.mark.slow
def test_region_change_windows_and_switching_agree_from_either_end():
    """Acceptance (QM-region change): a 20-water cluster at GFN2-xTB/MM, the nearest neighbour of the QM
    water moved into QM — MBAR over λ windows and Crooks from both directions agree within their errors and
    are trusted; one-sided Jarzynski from either end (λ = 0 sampled first, or λ = 1) brackets them, and agrees
    with them wherever its effective sample size allows."""
    from conftest import _cluster

    from bioqmmm.qm.xtb_engine import XTBEngine
    from bioqmmm.qmmm.system import QMMMSystem

    topology, system, positions = _cluster(20)
    oxygens = [a.index for a in topology.atoms() if a.element.symbol == "O"]
    system = openmm.XmlSerializer.clone(system)
    wall = openmm.CustomExternalForce("500*max(0, sqrt((x-x0)^2+(y-y0)^2+(z-z0)^2)-0.6)^2")  # keeps the cluster
    for name, value in zip(("x0", "y0", "z0"), positions[oxygens].mean(axis=0), strict=True):
        wall.addGlobalParameter(name, value)
    for atom in oxygens:
        wall.addParticle(atom, [])
    system.addForce(wall)
    positions = _mm_equilibrated(system, positions, picoseconds=20)
    neighbour = oxygens[int(np.argsort(np.linalg.norm(positions[oxygens] - positions[0], axis=1))[1])]
    regions = ([0, 1, 2], [0, 1, 2, neighbour, neighbour + 1, neighbour + 2])
    hamiltonian = MixedHamiltonian(*(QMMMSystem(topology, system, region, charge=0, multiplicity=1,
                                                engine=XTBEngine("gfn2")) for region in regions), 0.0,
                                   constraints=system)
    dynamics = {"timestep_fs": 2.0, "temperature_k": 300.0, "friction_per_ps": 5.0}
    folder = Path(tempfile.mkdtemp())

    def sampled(lam: float, samples: int, interval: int, seed: int, equilibration: int) -> dict[str, np.ndarray]:
        hamiltonian.lam = lam
        settings = SamplingSettings(samples=samples, sample_interval=interval, equilibration_steps=equilibration,
                                    seed=seed,
                                    checkpoint_interval=samples, **dynamics)

        def measure(context, state):
            u_a, u_b = hamiltonian.energies_of(state)
            return {"u_a": u_a, "u_b": u_b}

        return sample(hamiltonian.system, positions, settings, folder / f"{lam}-{seed}", measure, qmmm=hamiltonian)

    lambdas = [0.0, 0.5, 1.0]
    groups = []
    for k, lam in enumerate(lambdas):
        recorded = sampled(lam, 1000, 10, k + 1, 1000)  # 20 ps: ΔU decorrelates over picoseconds
        groups.append(uncorrelated(recorded["u_b"] - recorded["u_a"]))
    windows = analyse_windows(lambdas, groups, KT, bootstraps=30)
    works = {}
    for forward, lam in ((True, 0.0), (False, 1.0)):
        starts = sampled(lam, 40, 50, 7, 1000)["positions"]
        works[forward] = np.array([switch(hamiltonian, x.astype(float), None, forward=forward, steps=200, seed=i + 1,
                                          **dynamics).work for i, x in enumerate(starts)])
    crooks = analyse_switching(works[True], works[False], KT, bootstraps=30)
    assert windows.trusted, windows.problems
    assert crooks.trusted, crooks.problems
    mbar, both = windows.estimate, crooks.estimate
    assert abs(mbar.value - both.value) <= 3 * np.hypot(mbar.uncertainty, both.uncertainty), (mbar, both)
    # one-sided Jarzynski from either end: biased up from λ = 0 and down from λ = 1 (Jensen's inequality), so
    # the two bracket ΔA; each agrees with MBAR within 3σ when its effective sample size says it can be used
    forward, reverse = crooks.estimates["Jarzynski"], crooks.estimates["Jarzynski_reverse"]
    assert reverse.value - 3 * reverse.uncertainty <= mbar.value <= forward.value + 3 * forward.uncertainty
    for one_sided, ess in ((forward, crooks.ess["jarzynski_forward"]), (reverse, crooks.ess["jarzynski_reverse"])):
        if ess >= Thresholds().min_ess:
            assert abs(one_sided.value - mbar.value) <= 3 * np.hypot(one_sided.uncertainty, mbar.uncertainty)


@pytest.mark.slow
def test_water_basis_change_matches_the_rigid_rotor_harmonic_oscillator_free_energy(tmp_path):
    """Acceptance (real QM): one gas-phase water, HF/STO-3G → HF/cc-pVDZ at 300 K, by forward switching from
    STO-3G samples (Jarzynski). The reference, from PySCF run directly at both levels' minima: classically,
    A = E_min − k_BT ln(Q_rot Q_vib) + (level-independent mass terms), Q_rot ∝ (I_A I_B I_C)^½ and
    Q_vib = Π k_BT/(hν_i), so ΔA = ΔE_min − ½ k_BT ln(ΠI_b/ΠI_a) + k_BT Σ ln(ν_b,i/ν_a,i).
    Its anharmonic uncertainty: the leading classical correction of a Morse stretch is −½ (k_BT)²/D
    (quartic minus cubic perturbation), 0.006 kJ/mol per O–H bond for D ≈ 500 kJ/mol, and rotation–vibration
    coupling changes ⟨(ΠI)^½⟩ by ~k_BT/(k r²) ≈ 5e-4 relative; 0.05 kJ/mol bounds both levels' corrections
    and their difference."""
    from pyscf import gto, scf
    from pyscf.hessian import thermo
    from scipy.optimize import minimize

    from bioqmmm.qm import PySCFEngine
    from bioqmmm.qmmm.system import QMMMSystem

    hartree, bohr = 2625.499639, 0.529177210903  # kJ/mol, Å
    masses = np.array([15.999, 1.008, 1.008])
    start = np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])  # Å

    def molecule(x, basis):
        return gto.M(atom=[(s, tuple(r)) for s, r in zip("OHH", x, strict=True)], basis=basis, unit="Angstrom",
                     verbose=0)

    def minimum(basis):
        def energy_gradient(flat):
            mf = scf.RHF(molecule(flat.reshape(3, 3), basis))
            mf.conv_tol = 1e-12
            energy = mf.kernel()
            return energy, mf.nuc_grad_method().kernel().ravel() / bohr
        x = minimize(energy_gradient, start.ravel(), jac=True, method="BFGS", options={"gtol": 1e-7}).x.reshape(3, 3)
        mf = scf.RHF(molecule(x, basis))
        mf.conv_tol = 1e-12
        energy = mf.kernel()
        frequencies = thermo.harmonic_analysis(mf.mol, mf.Hessian().kernel(), mass=masses)["freq_wavenumber"]
        y = x - masses @ x / masses.sum()
        inertia = np.einsum("i,ij,ik->jk", masses, y, y)
        inertia = np.trace(inertia) * np.eye(3) - inertia
        return energy * hartree, np.sort(np.real(frequencies)), np.linalg.eigvalsh(inertia), x

    e_a, nu_a, i_a, x_a = minimum("sto-3g")
    e_b, nu_b, i_b, _ = minimum("cc-pvdz")
    reference = e_b - e_a - 0.5 * KT * np.log(np.prod(i_b) / np.prod(i_a)) + KT * np.sum(np.log(nu_b / nu_a))

    topology = app.Topology()
    residue = topology.addResidue("HOH", topology.addChain())
    for name, element in (("O", "O"), ("H1", "H"), ("H2", "H")):
        topology.addAtom(name, app.Element.getBySymbol(element), residue)

    def model(basis):
        system = openmm.System()
        for mass in masses:
            system.addParticle(mass)
        return QMMMSystem(topology, system, [0, 1, 2], charge=0, multiplicity=1,
                          engine=PySCFEngine(method="hf", basis=basis, conv_tol=1e-10))

    hamiltonian = MixedHamiltonian(model("sto-3g"), model("cc-pvdz"), 0.0)
    settings = SamplingSettings(samples=40, sample_interval=40, equilibration_steps=400, timestep_fs=0.5,
                                friction_per_ps=5.0, seed=7, checkpoint_interval=40)
    samples = sample(hamiltonian.system, x_a / 10, settings, tempfile.mkdtemp(dir=tmp_path), lambda c, s: {},
                     qmmm=hamiltonian)
    switches = [switch(hamiltonian, x.astype(float), None, forward=True, steps=40, timestep_fs=0.5,
                       temperature_k=300.0, friction_per_ps=5.0, seed=i + 1)
                for i, x in enumerate(samples["positions"])]
    result = analyse_switching(np.array([s.work for s in switches]), None, KT, thresholds=Thresholds(),
                               end_state_delta_u=np.array([s.start_delta_u for s in switches]))
    assert result.estimate.method == "Jarzynski" and result.trusted, result.problems
    assert within(result.estimate.value, reference, result.estimate.uncertainty, allowance=0.05), (
        result.estimate, reference)
    assert not next(c for c in result.checks if c.name == "zwanzig_ess").passed  # one-sided EXP is flagged here


def test_cycle_combines_two_legs_with_propagated_errors():
    complex_leg = {"value": -12.0, "uncertainty": 0.3, "trusted": True}
    solvent_leg = {"value": -9.5, "uncertainty": 0.4, "trusted": True}
    result = combine("binding", -30.0, complex_leg, solvent_leg)
    assert result["value"] == pytest.approx(-32.5) and result["uncertainty"] == pytest.approx(0.5)
    assert result["trusted"]
    assert not combine("binding", 0.0, complex_leg, {**solvent_leg, "trusted": False})["trusted"]


def test_bad_fep_settings_are_named(tmp_path):
    path = _region_file(tmp_path, "bad", {"low": "mm"})
    with pytest.raises(ProtocolError, match="low"):
        run_protocol(path, progress=False)
    path = _region_file(tmp_path, "bad", {"lambdas": [0.0, 0.7, 0.5, 1.0]})
    with pytest.raises(ProtocolError, match="lambdas"):
        run_protocol(path, progress=False)
    config = yaml.safe_load(_region_file(tmp_path, "outside", {}).read_text())
    config["protocol"]["low_region"]["atoms"] = "resid 5"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(InputError, match="not in the qm block's region"):
        run_protocol(path, progress=False)
    config = yaml.safe_load(_region_file(tmp_path, "self", {}).read_text())
    config["protocol"]["cycle"] = {"kind": "binding", "leg": "complex", "other_leg": config["output"]}
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(InputError, match="this run's own output folder"):
        run_protocol(path, progress=False)


def test_shipped_fep_files_run_and_legs_join_into_a_cycle(tmp_path):
    """protocols/fep_levels.yaml (switching, xTB/MM → B3LYP/MM) and protocols/fep_region.yaml (windows, region
    change), cut down, write result.json with ΔA, σ, the verdict, the diagnostics and the plots; two legs that
    name each other report the cycle once both are done (the first one waits for the second)."""
    levels = run_protocol(shipped_protocol(tmp_path, "fep_levels.yaml", "levels", sample_interval=20,
                                           equilibration_steps=20, switching={"trajectories": 2, "steps": 2},
                                           bootstraps=0), progress=False)
    assert levels["free_energy"]["estimator"] == "Jarzynski" and levels["energy_evaluations"]["high"] == 4
    assert {d["name"] for d in levels["diagnostics"]} >= {"jarzynski_ess", "time_convergence", "zwanzig_ess"}
    assert levels["trusted"] is False  # two trajectories are not enough to check anything, and it says so
    assert (tmp_path / "levels" / "works.png").stat().st_size > 0

    small = {"samples": 20, "equilibration_steps": 20, "max_windows": 0, "bootstraps": 5}
    first = run_protocol(shipped_protocol(tmp_path, "fep_region.yaml", "complex", **small, cycle={
        "kind": "binding", "leg": "complex", "other_leg": str(tmp_path / "solvent"), "low_free_energy_kjmol": -20.0}),
        progress=False)
    assert "waiting for the solvent leg" in first["cycle"]["status"]
    second = run_protocol(shipped_protocol(tmp_path, "fep_region.yaml", "solvent", **{**small, "seed": 7}, cycle={
        "kind": "binding", "leg": "solvent", "other_leg": str(tmp_path / "complex"), "low_free_energy_kjmol": -20.0}),
        progress=False)
    cycle = second["cycle"]
    assert cycle["value"] == pytest.approx(-20.0 + first["free_energy"]["value"] - second["free_energy"]["value"])
    assert cycle["uncertainty"] == pytest.approx(np.hypot(first["free_energy"]["uncertainty"],
                                                          second["free_energy"]["uncertainty"]))
    assert "ΔG(high)" in (tmp_path / "solvent" / "summary.txt").read_text()


def test_fep_windows_under_mpirun_equal_the_serial_run(tmp_path):
    """The region-change windows shared over mpirun -n 2 give the serial run's ΔA and window table exactly."""
    from conftest import mpirun

    small = {"samples": 30, "equilibration_steps": 20, "max_windows": 0, "bootstraps": 0}
    serial = run_protocol(shipped_protocol(tmp_path, "fep_region.yaml", "serial", **small), progress=False)
    parallel = mpirun(sys.executable, "-m", "bioqmmm.cli", "run",
                      str(shipped_protocol(tmp_path, "fep_region.yaml", "mpi", **small)), "--no-progress",
                      timeout=600)
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    assert (tmp_path / "serial" / "windows.csv").read_text() == (tmp_path / "mpi" / "windows.csv").read_text()
    mpi = json.loads((tmp_path / "mpi" / "result.json").read_text())
    assert mpi["free_energy"]["value"] == serial["free_energy"]["value"]
    record = json.loads((tmp_path / "mpi" / "windows" / "replicas.json").read_text())
    assert {r["rank"] for r in record["replicas"].values()} == {0, 1}
