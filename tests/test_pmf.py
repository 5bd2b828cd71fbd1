"""Free-energy profiles: umbrella windows at a cheap level, MBAR reweighting to a target level.

The estimator is checked against analytic profiles (|z| < 4 with fixed seeds) and against BAR; the
protocol runs the shipped alanine dipeptide file and a reduced copy under mpirun -n 2.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path

import mdtraj
import numpy as np
import openmm
import pytest
from conftest import mm_energy, mpirun
from openmm import app, unit
from scipy.integrate import quad

from bioqmmm.errors import CalculationError, InputError, ReplicaAbortedError, ReplicaFailedError
from bioqmmm.examples import alanine_dipeptide
from bioqmmm.protocols.pmf import _checked_range, _window_identity, reaction_coordinate, window_plans
from bioqmmm.protocols.pmf_settings import LevelSection
from bioqmmm.run import docs_numbers
from bioqmmm.run.build import build_qmmm
from bioqmmm.run.protocol import load_protocol
from bioqmmm.run.runner import run_protocol
from bioqmmm.sampling.coordinates import Umbrella, dihedral, distance, distance_difference, umbrella_windows
from bioqmmm.sampling.metadynamics import MetadynamicsSettings, TabulatedBias, build_bias
from bioqmmm.sampling.reweighting import Window, kish_ess, reweight
from bioqmmm.sampling.starts import coordinate_values, nearest_frames, read_models
from bioqmmm.sampling.windows import (
    ChunkedFrames,
    SamplingSettings,
    pulled_start,
    retained_window,
    sample_window,
    system_energy,
)
from bioqmmm.units import kt_kjmol

PROTOCOLS = Path(__file__).resolve().parents[1] / "protocols"
T = 300.0
KT = kt_kjmol(T)

# A particle at distance r from a fixed one: cheap U_c(r) = h ((r − r0)²/w² − 1)² (double well),
# target U_t = U_c + a (r − r0). Sampled in 3-D, so the exact profile is F(r) = U(r) − 2 k_BT ln r.
H, R0, W, TILT = 5.0, 0.3, 0.05, 40.0


def cheap_u(r):
    return H * ((r - R0) ** 2 / W**2 - 1) ** 2


def target_u(r):
    return cheap_u(r) + TILT * (r - R0)


def pair_system(expression: str) -> openmm.System:
    system = openmm.System()
    system.addParticle(0.0)  # fixed
    system.addParticle(12.0)
    force = openmm.CustomBondForce(expression)
    force.addBond(0, 1, [])
    system.addForce(force)
    return system


CHEAP = f"{H}*((r-{R0})^2/{W}^2-1)^2"
TARGET = f"{CHEAP} + {TILT}*(r-{R0})"
START = np.array([[0.0, 0.0, 0.0], [R0, 0.0, 0.0]])


def target_energy(positions, box=None) -> float:
    """The target as a plain Python callable (any user function of positions can be a target)."""
    return float(target_u(np.linalg.norm(positions[1] - positions[0])))


def pair_windows(folder: Path, centres_level: list[tuple[str, str, Umbrella]], samples: int = 300) -> list[Window]:
    windows = []
    energies = {"cheap": system_energy(pair_system(CHEAP), "Reference"), "target": target_energy}
    for i, (name, level, bias) in enumerate(centres_level):
        settings = SamplingSettings(samples=samples, sample_interval=20, equilibration_steps=500, timestep_fs=2.0,
                                    temperature_k=T, friction_per_ps=10.0, seed=11 + i)
        system = pair_system(CHEAP if level == "cheap" else TARGET)
        x = START.copy()
        x[1, 0] = bias.center
        found = sample_window(system, distance(0, 1), bias, x, settings, folder / name, platform="Reference")
        windows.append(retained_window(name, level, bias, found, energies, T))
    return windows


def exact_bins(profile, width: float, potential=target_u) -> np.ndarray:
    """−k_BT ln ∫_bin exp(−F/k_BT) dr of the exact profile of ``potential``, relative to the reference bin."""
    def free(r):
        return potential(r) - 2 * KT * np.log(r)

    values = np.array([-KT * np.log(quad(lambda r: np.exp(-free(r) / KT), c - width / 2, c + width / 2)[0])
                       for c in profile.centers])
    return values - values[np.argmin(np.abs(profile.centers - profile.reference))]


def assert_matches_exact(profile, width: float) -> None:
    exact = exact_bins(profile, width)
    sigma = np.where(profile.uncertainty > 0, profile.uncertainty, np.inf)
    z = (profile.free_energy - exact) / sigma
    assert np.all(np.abs(z) < 4), np.round(z, 2)
    low = exact < 15.0  # away from the walls, where σ is small: a wrong profile cannot hide in the error bars
    assert np.max(np.abs(profile.free_energy - exact)[low]) < 3.0


def test_reweighted_profile_matches_the_exact_one(tmp_path):
    """Acceptance: cheap double well sampled by OpenMM in 11 umbrella windows, reweighted to the tilted
    target (a Python callable); every bin within |z| < 4 of the exact profile (fixed seeds)."""
    biases = umbrella_windows(0.2, 0.4, 11, T)
    windows = pair_windows(tmp_path, [(f"c{i:02d}", "cheap", b) for i, b in enumerate(biases)])
    edges = np.linspace(0.2, 0.4, 21)
    profile = reweight(windows, T, edges, bootstraps=20, seed=3, reactant=(0.2, 0.3), product=(0.3, 0.4))
    assert len(profile.centers) >= 16 and profile.warnings == []  # the walls at 0.2 and 0.4 nm stay empty
    assert_matches_exact(profile, edges[1] - edges[0])
    # the tilt moves the barrier and the well depths; their numbers carry MBAR uncertainties
    exact = exact_bins(profile, edges[1] - edges[0])
    assert abs(profile.barrier[0] - exact[np.argmin(np.abs(profile.centers - profile.ts_position))]) < 4 * \
        profile.barrier[1]
    assert np.nanmax(np.abs(profile.bootstrap_uncertainty / np.where(profile.uncertainty > 0, profile.uncertainty,
                                                                    np.nan) - 1)) < 1.0
    # the cheap level's own profile would fail the comparison
    cheap_profile = exact_bins(profile, edges[1] - edges[0], cheap_u)
    assert np.max(np.abs(cheap_profile - exact)[exact < 15.0]) > 3.0  # > the tolerance of assert_matches_exact
    assert all(0 < ess <= len(w.s) for w, ess in zip(windows, profile.ess.values(), strict=True))


def test_multilevel_windows_merge_into_one_profile(tmp_path):
    """Cheap windows everywhere plus target-sampled windows around the barrier, in one MBAR: the profile is
    the exact one, and the bins near the target windows draw most of their weight from them."""
    cheap = [(f"c{i:02d}", "cheap", b) for i, b in enumerate(umbrella_windows(0.2, 0.4, 6, T))]
    target = [(f"t{i:02d}", "target", b) for i, b in enumerate(umbrella_windows(0.27, 0.33, 4, T))]
    windows = pair_windows(tmp_path, cheap + target, samples=250)
    edges = np.linspace(0.2, 0.4, 17)
    profile = reweight(windows, T, edges)
    assert_matches_exact(profile, edges[1] - edges[0])
    near = np.abs(profile.centers - R0) < 0.02
    far = np.abs(profile.centers - R0) > 0.06  # beyond the target windows' reach (σ = 0.01 nm)
    assert profile.target_share[near].min() > 0.5 and profile.target_share[far].max() < 0.05
    assert all(profile.ess[name] == len(w.s) for (name, _, _), w in zip(target, windows[6:], strict=True))


def pair_topology() -> app.Topology:
    topology = app.Topology()
    residue = topology.addResidue("PAIR", topology.addChain())
    for name in ("A", "B"):
        topology.addAtom(name, None, residue)
    return topology


def test_frozen_metadynamics_bias_gives_the_exact_profile(tmp_path):
    """Well-tempered metadynamics (OpenMM's) on the cheap double well, its bias frozen, one state sampled
    under it and reweighted to the target: every bin within |z| < 4 of the exact profile."""
    settings = MetadynamicsSettings(low=0.15, high=0.45, width=0.01, steps=50000, height=1.0, bias_factor=8,
                                    frequency=100, friction_per_ps=10.0, seed=3)
    bias, start = build_bias(pair_system(CHEAP), pair_topology(), distance(0, 1), START, settings,
                             platform="Reference")
    assert bias.energy(np.array([R0]))[0] > 15.0  # the barrier top got filled
    sampling = SamplingSettings(samples=3000, sample_interval=20, equilibration_steps=500, temperature_k=T,
                                friction_per_ps=10.0, seed=4)
    found = sample_window(pair_system(CHEAP), distance(0, 1), bias, start, sampling, tmp_path, platform="Reference")
    energies = {"cheap": system_energy(pair_system(CHEAP), "Reference"), "target": target_energy}
    window = retained_window("m00", "cheap", bias, found, energies, T)
    edges = np.linspace(0.2, 0.4, 21)
    profile = reweight([window], T, edges)
    assert len(profile.centers) == 20 and profile.warnings == []  # flattened: the walls are sampled too
    assert_matches_exact(profile, edges[1] - edges[0])


def bias_probe(coordinate, bias, n_particles: int) -> tuple[openmm.CustomCVForce, openmm.Context]:
    """A Reference Context holding only ``bias`` on ``coordinate`` (its energy is the bias, kJ/mol)."""
    probe = openmm.System()
    for _ in range(n_particles):
        probe.addParticle(1.0)
    force = coordinate.bias_force(bias, False)
    probe.addForce(force)
    return force, openmm.Context(probe, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))


def test_tabulated_bias_matches_openmm():
    """The frozen bias in NumPy (SciPy cubic spline) equals OpenMM's Continuous1DFunction: periodic over
    (−π, π] and over [0, 2π), and non-periodic, clamped to its end values outside the grid."""
    rng = np.random.default_rng(4)
    top, _, positions = alanine_dipeptide()
    x = np.array(positions.value_in_unit(unit.nanometer))

    def turn(low: float) -> TabulatedBias:
        values = tuple(rng.normal(0, 5, 40))
        return TabulatedBias(values + values[:1], low, low + 2 * math.pi, 2 * math.pi)

    cases = [(dihedral(4, 6, 8, 14), turn(-math.pi)), (dihedral(4, 6, 8, 14), turn(0.0)),
             (distance(0, 21), TabulatedBias(tuple(rng.normal(0, 5, 30)), 0.5, 0.8))]
    for coordinate, bias in cases:
        force, context = bias_probe(coordinate, bias, len(x))
        values = []
        for _ in range(20):
            context.setPositions(x + rng.normal(0, 0.08, x.shape))
            s = coordinate.value(force.getCollectiveVariableValues(context))
            energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            assert bias.energy(np.array([s]))[0] == pytest.approx(energy, abs=1e-8)
            values.append(s)
        if bias.period is None:  # some probes fell outside the grid, where both hold the end value
            assert min(values) < 0.5 or max(values) > 0.8
    with pytest.raises(ValueError, match="one period"):
        TabulatedBias((0.0, 1.0, 0.0), -2.0, 2.0, 2 * math.pi)


def test_samples_beyond_a_metadynamics_range_are_weighted_right(tmp_path):
    """A non-periodic metadynamics range narrower than the sampled coordinate: outside it the dynamics feels
    no bias force, so the bias there is the end value, not zero; the profile over a wider range is exact."""
    stiff = "1000*(r-0.3)^2"
    settings = MetadynamicsSettings(low=0.27, high=0.33, width=0.01, steps=20000, height=1.0, bias_factor=8,
                                    frequency=100, friction_per_ps=10.0, seed=5)
    bias, start = build_bias(pair_system(stiff), pair_topology(), distance(0, 1), START, settings,
                             platform="Reference")
    sampling = SamplingSettings(samples=3000, sample_interval=20, equilibration_steps=500, temperature_k=T,
                                friction_per_ps=10.0, seed=6)
    found = sample_window(pair_system(stiff), distance(0, 1), bias, start, sampling, tmp_path, platform="Reference")
    energies = {"cheap": system_energy(pair_system(stiff), "Reference"), "target": system_energy(pair_system(stiff))}
    window = retained_window("m", "cheap", bias, found, energies, T)
    assert np.mean((window.s < 0.27) | (window.s > 0.33)) > 0.1  # a good share lies beyond the range
    edges = np.linspace(0.22, 0.38, 17)
    profile = reweight([window], T, edges)

    def potential(r):
        return 1000 * (r - 0.3) ** 2

    exact = exact_bins(profile, edges[1] - edges[0], potential)
    sigma = np.where(profile.uncertainty > 0, profile.uncertainty, np.inf)
    assert np.all(np.abs((profile.free_energy - exact) / sigma) < 4)


def test_mbar_on_two_states_equals_bar():
    """Acceptance: a cheap and a target window at the same centre; MBAR's difference equals BAR to 1e-8 kT."""
    from pymbar.other_estimators import bar

    rng = np.random.default_rng(7)
    bias = Umbrella(0.5, KT / 0.05**2)

    def cheap_level(s):
        return 3.0 + 0 * s

    def target_level(s):
        return 0.3 * KT * (s - 0.5) ** 2 / 0.05**2 - 40.0

    s_a = rng.normal(0.5, 0.05, 800)                       # cheap + bias: σ = 0.05
    s_b = rng.normal(0.5, 0.05 / math.sqrt(1.6), 700)      # target + bias: (0.3 + 0.5) k_BT d²/0.05², σ² = 0.05²/1.6
    windows = [Window("a", "cheap", bias, s_a, {"cheap": cheap_level(s_a), "target": target_level(s_a)}),
               Window("b", "target", bias, s_b, {"cheap": cheap_level(s_b), "target": target_level(s_b)})]
    profile = reweight(windows, T, np.linspace(0.3, 0.7, 9))
    w_forward = (target_level(s_a) - cheap_level(s_a)) / KT
    w_reverse = (cheap_level(s_b) - target_level(s_b)) / KT
    reference = bar(w_forward, w_reverse, relative_tolerance=1e-14, maximum_iterations=100000)
    assert profile.state_free_energies[1] / KT == pytest.approx(reference["Delta_f"], abs=1e-8)
    assert profile.state_uncertainties[1] / KT == pytest.approx(reference["dDelta_f"], rel=0.02)  # two formulas
    assert profile.state_free_energies[1] == pytest.approx(-43.0 + KT * 0.5 * math.log(1.6), abs=0.1)  # analytic


def test_reweighting_takes_any_number_of_named_levels():
    """K named levels, not two: windows sampled at three levels (exact Boltzmann samples of level + umbrella);
    the profile of each level taken as the target matches its exact one (|z| < 4), and a window without the
    target's energies is refused."""
    rng = np.random.default_rng(5)
    levels = {"mm": (150.0, 0.05), "semi": (250.0, 0.0), "dft": (400.0, -0.04)}  # kappa kJ/mol/nm², centre nm

    def u(level, s):
        kappa, centre = levels[level]
        return 0.5 * kappa * (s - centre) ** 2

    k_bias = KT / 0.05**2
    windows = []
    for i, centre in enumerate(np.linspace(-0.2, 0.2, 9)):
        level = list(levels)[i % 3]
        kappa, c_level = levels[level]
        precision = (kappa + k_bias) / KT
        s = rng.normal((kappa * c_level + k_bias * centre) / (kappa + k_bias), 1 / math.sqrt(precision), 600)
        windows.append(Window(f"{level}{centre:+.2f}", level, Umbrella(centre, k_bias), s,
                              {name: u(name, s) for name in levels}))
    edges = np.linspace(-0.25, 0.25, 11)
    centres = 0.5 * (edges[1:] + edges[:-1])
    for target in levels:
        profile = reweight(windows, T, edges, target=target)
        exact = np.array([-KT * np.log(quad(lambda s, t=target: np.exp(-u(t, s) / KT), c - 0.025, c + 0.025)[0])
                          for c in profile.centers])
        exact -= exact[np.argmin(np.abs(profile.centers - profile.reference))]
        z = (profile.free_energy - exact) / np.where(profile.uncertainty > 0, profile.uncertainty, np.inf)
        assert len(profile.centers) == len(centres) and np.all(np.abs(z) < 4), (target, np.round(z, 2))
        assert profile.target_share.max() < 1  # every bin also draws on windows of the other levels
    with pytest.raises(ValueError, match="target level 'ccsd' is not among the windows' levels"):
        reweight(windows, T, edges, target="ccsd")
    partial = Window("x", "mm", Umbrella(0.0, k_bias), windows[0].s, {"mm": windows[0].energies["mm"]})
    with pytest.raises(ValueError, match="every window needs the same levels"):
        reweight([*windows, partial], T, edges, target="mm")


def test_diagnostics_name_the_windows():
    """Kish ESS and neighbour overlap warnings name the window; windows with no overlap are an error."""
    rng = np.random.default_rng(1)
    k = KT / 0.05**2

    def window(name, centre, spread=0.0):
        s = rng.normal(centre, 0.05, 400)
        return Window(name, "cheap", Umbrella(centre, k), s,
                      {"cheap": np.zeros_like(s), "target": spread * rng.normal(size=400)})

    assert kish_ess(np.zeros(50)) == pytest.approx(50)
    assert kish_ess(np.array([0.0] + [-50.0] * 49)) == pytest.approx(1.0)
    profile = reweight([window("a", 0.0), window("b", 0.05, spread=10 * KT), window("c", 0.1)], T,
                       np.linspace(-0.1, 0.2, 7))
    assert any("window b" in m and "Kish" in m and "target-level windows" in m for m in profile.warnings)
    assert not any("window a" in m or "window c" in m for m in profile.warnings)
    profile = reweight([window("a", 0.0), window("b", 0.22), window("c", 0.26)], T, np.linspace(-0.1, 0.35, 10))
    assert any(m.startswith("windows a (s = 0)") and " and b (s = 0.22)" in m for m in profile.warnings)
    with pytest.raises(CalculationError, match="no overlap.*a.*b, c|no overlap.*b, c.*a"):
        reweight([window("a", 0.0), window("b", 1.0), window("c", 1.05)], T, np.linspace(-0.1, 1.2, 10))


def test_bias_and_coordinate_match_openmm_and_mdtraj():
    """The umbrella energy in NumPy equals OpenMM's CustomCVForce (periodic wrap included); the dihedral
    coordinate equals mdtraj's φ."""
    top, system, positions = alanine_dipeptide()
    x = np.array(positions.value_in_unit(unit.nanometer))
    phi_atoms = mdtraj.compute_phi(mdtraj.Trajectory(x[None], mdtraj.Topology.from_openmm(top)))[0][0]
    phi = dihedral(*phi_atoms)
    cases = [(phi, Umbrella(3.0, 120.0, 2 * math.pi)), (phi, Umbrella(-2.9, 80.0, 2 * math.pi)),
             (distance_difference(4, 6, 6, 8), Umbrella(0.02, 5000.0)), (distance(0, 21), Umbrella(0.5, 900.0))]
    rng = np.random.default_rng(2)
    for coordinate, bias in cases:
        force, context = bias_probe(coordinate, bias, len(x))
        for _ in range(5):
            y = x + rng.normal(0, 0.03, x.shape)
            context.setPositions(y)
            s = coordinate.value(force.getCollectiveVariableValues(context))
            energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            assert bias.energy(s) == pytest.approx(energy, rel=1e-9, abs=1e-9)
            if coordinate is phi:
                traj = mdtraj.Trajectory(y[None], mdtraj.Topology.from_openmm(top))
                assert s == pytest.approx(float(mdtraj.compute_dihedrals(traj, [phi_atoms])[0, 0]), abs=1e-6)
    windows = umbrella_windows(-math.pi, math.pi, 12, T, period=2 * math.pi)
    assert len({round(w.center, 9) for w in windows}) == 12 and windows[-1].center < math.pi
    assert windows[0].force_constant == pytest.approx(4 * KT / (2 * math.pi / 12) ** 2)


def test_window_sampling_resumes_bit_for_bit(tmp_path):
    """A window stopped after 60 of 100 samples continues from its checkpoint to the uninterrupted samples."""
    settings = SamplingSettings(samples=100, sample_interval=10, equilibration_steps=50, checkpoint_interval=25,
                                seed=5)
    bias = Umbrella(0.25, 20000.0)
    whole = sample_window(pair_system(CHEAP), distance(0, 1), bias, START, settings, tmp_path / "a",
                          platform="Reference")
    count = {"n": 0}

    def stop_at_60():
        count["n"] += 1
        if count["n"] == 60:
            raise ReplicaAbortedError("stop")

    with pytest.raises(ReplicaAbortedError):
        sample_window(pair_system(CHEAP), distance(0, 1), bias, START, settings, tmp_path / "b",
                      platform="Reference", poll=stop_at_60)
    resumed = sample_window(pair_system(CHEAP), distance(0, 1), bias, START, settings, tmp_path / "b",
                            platform="Reference")
    assert np.array_equal(whole.s, resumed.s) and np.array_equal(whole.positions, resumed.positions)
    with pytest.raises(InputError, match="window.s samples of a different run"):
        sample_window(pair_system(CHEAP), distance(0, 1), bias, START, settings, tmp_path / "b",
                      platform="Reference", identity="other")


def test_window_frames_stay_on_disk_and_are_read_one_chunk_at_a_time(tmp_path):
    """The positions of a window are not held: frame i is read from its chunk file when asked for, one chunk
    in memory at a time, and equals the recorded frame."""
    settings = SamplingSettings(samples=50, sample_interval=5, checkpoint_interval=20, seed=3)
    found = sample_window(pair_system(CHEAP), distance(0, 1), Umbrella(0.25, 20000.0), START, settings, tmp_path,
                          platform="Reference")
    frames = found.positions
    assert isinstance(frames, ChunkedFrames) and len(frames) == 50
    stored = [np.load(tmp_path / f"samples_{k:04d}.npz")["positions"] for k in range(3)]  # 20 + 20 + 10
    assert [len(chunk) for chunk in stored] == [20, 20, 10]
    for i in (0, 19, 20, 45, 49, -1):
        np.testing.assert_array_equal(frames[i], np.concatenate(stored)[i])
        assert frames._held[0] == (i % 50) // 20  # only the chunk of the last frame asked for
    np.testing.assert_allclose(np.linalg.norm(np.asarray(frames)[:, 0] - np.asarray(frames)[:, 1], axis=1),
                               found.s, atol=1e-6)  # s is the distance of the recorded positions
    with pytest.raises(IndexError):
        frames[50]


def _reduced(tmp_path: Path, output: str, samples: int = 30, target: bool = True) -> Path:
    """The shipped alanine dipeptide file, cut down: 12 cheap windows over −π..π, and with ``target`` a short
    metadynamics state and a QM/MM window at φ = 0."""
    text = (PROTOCOLS / "pmf.yaml").read_text()
    text = text.replace("count: 36", "count: 12").replace("force_constant: 300", "force_constant: 100")
    text = text.replace("samples: 150", f"samples: {samples}").replace("equilibration_steps: 2000",
                                                                       "equilibration_steps: 200")
    text = text.replace("bootstraps: 50", "bootstraps: 5").replace("bins: 36", "bins: 12")
    if target:
        text = text.replace("  temperature_k: 300\n", "  target_windows:\n    centers: [0.0]\n    force_constant: 100\n"
                            "    samples: 8\n    sample_interval: 5\n    equilibration_steps: 10\n"
                            "    timestep_fs: 1.0\n  metadynamics:\n    range: [-3.14159265, 3.14159265]\n"
                            "    width: 0.3\n    build_steps: 20000\n    frequency: 200\n    samples: 100\n"
                            "  temperature_k: 300\n")
    text = text.replace("output: pmf_out", f"output: {output}")
    path = tmp_path / f"{output}.yaml"
    path.write_text(text)
    return path


def _check_shipped_pmf(result: dict, out) -> None:
    """protocols/pmf.yaml's record: the overlap matrix, per-window ESS and the barrier with its uncertainty."""
    assert result["windows"] == {"cheap": 36, "metadynamics": 0, "target": 0} and result["qm_level"] == "hf/sto-3g"
    overlap = np.loadtxt(out / "overlap.csv", delimiter=",", skiprows=1, usecols=range(1, 37))
    assert overlap.shape == (36, 36) and np.allclose(overlap.sum(axis=1), 1.0, atol=1e-6)
    assert result["lowest_neighbour_overlap"] == pytest.approx(min(overlap[i, (i + 1) % 36] for i in range(36)))
    rows = list(csv.DictReader(open(out / "windows.csv")))
    assert len(rows) == 36 and all(0 < float(r["kish_ess"]) <= int(r["retained"]) for r in rows)
    # MM -> QM/MM of a methyl group: the energy gap fluctuates by a few kJ/mol, reweighting keeps a fraction
    assert 0.02 < result["lowest_cheap_ess_fraction"] < 1.0
    barrier = result["free_energy_barrier"]
    assert barrier["unit"] == "kJ/mol" and 0 < barrier["uncertainty"] < 5
    assert -1.0 < result["barrier_position"]["value"] < 1.0  # the C7eq -> C7ax barrier near φ = 0
    assert (out / "pmf.png").stat().st_size > 0 and (out / "overlap.png").stat().st_size > 0


@pytest.mark.slow
def test_shipped_pmf_protocols_agree_with_each_other_and_with_the_docs(tmp_path):
    """Acceptance: protocols/pmf.yaml (φ of alanine dipeptide, MM umbrella windows reweighted to QM/MM) runs as
    shipped; protocols/pmf_metadynamics.yaml (one frozen-bias metadynamics state) gives its barrier and
    reaction free energy within 4σ combined; both agree with the numbers docs/ quotes (docs/numbers.json)."""
    results = {}
    for name in ("pmf.yaml", "pmf_metadynamics.yaml"):
        shutil.copy(PROTOCOLS / name, tmp_path / name)
        results[name] = run_protocol(tmp_path / name, progress=False)
    _check_shipped_pmf(results["pmf.yaml"], tmp_path / "pmf_out")
    metad = results["pmf_metadynamics.yaml"]
    assert metad["windows"] == {"cheap": 0, "metadynamics": 1, "target": 0} and metad["samples_retained"] > 50
    for key in ("free_energy_barrier", "reaction_free_energy"):
        a, b = results["pmf.yaml"][key], metad[key]
        assert abs(a["value"] - b["value"]) < 4 * math.hypot(a["uncertainty"], b["uncertainty"]), key
    assert docs_numbers.compare("pmf", results["pmf.yaml"]) == []
    assert docs_numbers.compare("pmf_metadynamics", metad) == []


@pytest.mark.slow
def test_pmf_windows_under_mpirun_equal_the_serial_run(tmp_path):
    """Acceptance: the same windows (cheap MM ones, a metadynamics state and a QM/MM-sampled window) under
    mpirun -n 2 give the serial run's profile and windows to the last digit; a rerun with more samples
    continues the windows (the first chunk stays as it was)."""
    serial = run_protocol(_reduced(tmp_path, "serial"), progress=False)
    parallel = mpirun(sys.executable, "-m", "bioqmmm.cli", "run", str(_reduced(tmp_path, "mpi")), "--no-progress",
                      timeout=600)
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    for name in ("pmf.csv", "windows.csv", "overlap.csv"):
        assert (tmp_path / "serial" / name).read_text() == (tmp_path / "mpi" / name).read_text(), name
    record = json.loads((tmp_path / "mpi" / "windows" / "replicas.json").read_text())
    assert {r["rank"] for r in record["replicas"].values()} == {0, 1}
    assert serial["windows"] == {"cheap": 12, "metadynamics": 1, "target": 1}
    rows = {r["window"]: r for r in csv.DictReader(open(tmp_path / "serial" / "windows.csv"))}
    assert rows["t+0.0000"]["level"] == "target"
    assert float(rows["t+0.0000"]["kish_ess"]) == int(rows["t+0.0000"]["retained"])
    # the QM/MM-sampled window kept the MM model's C–H constraints inside the QM region
    config = load_protocol(tmp_path / "serial.yaml")
    qmmm, _, _ = build_qmmm(config)
    reference = qmmm.reference_system
    inside = [reference.getConstraintParameters(k) for k in range(reference.getNumConstraints())]
    inside = [(i, j, d.value_in_unit(unit.nanometer)) for i, j, d in inside if {i, j} <= set(qmmm.qm_atoms)]
    with np.load(tmp_path / "serial" / "windows" / "t+0.0000" / "samples_0000.npz") as data:
        frames = data["positions"].astype(float)
    assert len(inside) == 3 and all(np.allclose(np.linalg.norm(frames[:, i] - frames[:, j], axis=1), d, atol=1e-5)
                                    for i, j, d in inside)
    first = (tmp_path / "serial" / "windows" / "c+0.0000" / "samples_0000.npz").read_bytes()
    longer = run_protocol(_reduced(tmp_path, "serial", samples=40), progress=False)
    rows = {r["window"]: r for r in csv.DictReader(open(tmp_path / "serial" / "windows.csv"))}
    assert rows["c+0.0000"]["samples"] == "40" and longer["samples_retained"] >= serial["samples_retained"]
    assert (tmp_path / "serial" / "windows" / "c+0.0000" / "samples_0000.npz").read_bytes() == first
    assert (tmp_path / "serial" / "windows" / "c+0.0000" / "samples_0001.npz").exists()


def _two_windows(tmp_path: Path, centers: str, samples: int = 20) -> Path:
    """A small MM-only variant of the shipped file: explicit centres, no target windows."""
    text = (PROTOCOLS / "pmf.yaml").read_text()
    text = text.replace("    range: [-3.14159265, 3.14159265]  # a whole turn: 36 centres 10 degrees apart\n"
                        "    count: 36\n", f"    centers: {centers}\n")
    text = text.replace("samples: 150", f"samples: {samples}").replace("equilibration_steps: 2000",
                                                                       "equilibration_steps: 100")
    text = text.replace("bootstraps: 50", "bootstraps: 0").replace("reactant_range: [-2.2, -0.9]", "")
    text = text.replace("product_range: [0.6, 1.5]", "")
    path = tmp_path / "few.yaml"
    path.write_text(text)
    return path


def test_added_window_and_fewer_samples_reuse_the_others(tmp_path):
    """Windows are named by centre: adding one samples only it; asking for fewer samples reuses the stored
    ones (cut to the request) and counts the windows as done."""
    run_protocol(_two_windows(tmp_path, "[-1.6, -1.4]"), progress=False)
    run_protocol(_two_windows(tmp_path, "[-1.6, -1.4, -1.2]"), progress=False)
    record = json.loads((tmp_path / "pmf_out" / "windows" / "replicas.json").read_text())["replicas"]
    assert {name: r.get("resumed", False) for name, r in record.items()} == {
        "c-1.6000": True, "c-1.4000": True, "c-1.2000": False}
    fewer = run_protocol(_two_windows(tmp_path, "[-1.6, -1.4, -1.2]", samples=12), progress=False)
    rows = list(csv.DictReader(open(tmp_path / "pmf_out" / "windows.csv")))
    assert [r["samples"] for r in rows] == ["12"] * 3 and fewer["windows"]["cheap"] == 3
    run_protocol(_two_windows(tmp_path, "[-1.6, -1.4, -1.2]", samples=12), progress=False)
    record = json.loads((tmp_path / "pmf_out" / "windows" / "replicas.json").read_text())["replicas"]
    assert all(r.get("resumed") for r in record.values())


def test_mbar_failure_on_rank_0_stops_every_rank(tmp_path):
    """Windows with no overlap: rank 0's MBAR step fails, and under mpirun -n 2 both ranks stop with the
    error naming the groups (no rank left waiting)."""
    path = _two_windows(tmp_path, "[-2.0, 1.5]", samples=10)
    run = mpirun(sys.executable, "-m", "bioqmmm.cli", "run", str(path), "--no-progress", timeout=240)
    assert run.returncode != 0
    assert "no overlap" in run.stderr and "c-2.0000" in run.stderr and "c+1.5000" in run.stderr


def test_barrier_goes_the_lower_way_round_a_circle():
    """A periodic profile with a 40 kJ/mol barrier at φ = 0 and a 20 kJ/mol one at ±π between minima at
    ±1.5 rad: the barrier reported is the lower one, at ±π; a path through unsampled bins is warned of."""
    rng = np.random.default_rng(3)
    grid = np.linspace(-math.pi, math.pi, 20001)[:-1]

    def free(s):
        wrapped = np.abs(s) - math.pi
        return 40 * np.exp(-s**2 / 0.2) + 20 * np.exp(-wrapped**2 / 0.2) - 5 * np.cos(2 * s)

    windows = []
    for bias in umbrella_windows(-math.pi, math.pi, 24, T, period=2 * math.pi):
        weights = np.exp(-(free(grid) + bias.energy(grid)) / KT)
        s = rng.choice(grid, 400, p=weights / weights.sum()) + rng.uniform(0, grid[1] - grid[0], 400)
        windows.append(Window(f"w{bias.center:+.3f}", "cheap", bias, s, {"cheap": free(s), "target": free(s)}))
    edges = np.linspace(-math.pi, math.pi, 37)
    profile = reweight(windows, T, edges, reactant=(-2.0, -1.0), product=(1.0, 2.0))
    assert abs(abs(profile.ts_position) - math.pi) < 0.2
    exact_top = free(np.array([math.pi]))[0] - free(np.array([profile.reference]))[0]
    assert abs(profile.barrier[0] - exact_top) < 4 * profile.barrier[1] + 1.0
    gapped = [w for w in windows if abs(abs(w.bias.center) - math.pi) > 0.6]  # nothing sampled near ±π
    profile = reweight(gapped, T, edges, reactant=(-2.0, -1.0), product=(1.0, 2.0))
    assert abs(profile.ts_position) < 0.2  # the gap does not pass for a low way, but it is named
    assert any("other way round" in m and "upper bound" in m for m in profile.warnings)
    coarse = [dataclasses.replace(w, s=np.round(w.s, 1),
                                  energies=dict.fromkeys(("cheap", "target"), free(np.round(w.s, 1))))
              for w in windows]  # samples on a 0.1 rad lattice, bins 0.05 rad wide: every other bin is empty
    profile = reweight(coarse, T, np.linspace(-math.pi, math.pi, 127), reactant=(-2.0, -1.0), product=(1.0, 2.0))
    assert any("unsampled bins" in m for m in profile.warnings)


def test_target_energies_are_the_qmmm_energies_of_the_retained_frames(tmp_path):
    """The reweighting's target energies are QMMMSystem energies of the recorded frames, its cheap
    energies the MM force field's, and its coordinate values those of the frames."""
    path = _reduced(tmp_path, "check", samples=10, target=False)
    run_protocol(path, progress=False)
    config = load_protocol(path)
    qmmm, _, _ = build_qmmm(config)
    folder = tmp_path / "check" / "windows" / "c-1.5708"
    with np.load(folder / "window.npz") as window, np.load(folder / "samples_0000.npz") as samples:
        frame = int(window["retained"][-1])
        x = samples["positions"][frame].astype(float)
        recorded = float(samples["s"][frame])
        assert window["s"][-1] == recorded
        assert window["target"][-1] == pytest.approx(qmmm.energy_and_forces(x)[0], abs=1e-6)
        assert window["cheap"][-1] == pytest.approx(mm_energy(qmmm.reference_system, x), abs=1e-6)
    phi = mdtraj.compute_phi(mdtraj.Trajectory(x[None], mdtraj.Topology.from_openmm(qmmm.topology)))[1][0, 0]
    assert recorded == pytest.approx(float(phi), abs=1e-5)  # the float32 frame vs the recorded s


@pytest.mark.parametrize(("change", "message"), [
    ('atoms: ["resid 0 and name C", "resid 1 and name N", "resid 1 and name CA", "resid 1 and name C"]',
     None),
    ('atoms: ["resid 0 and name C", "resid 1 and name N", "resid 1", "resid 1 and name C"]', "selects 10 atoms"),
    ('atoms: ["resid 0 and name C", "resid 1 and name N", "resid 1 and name CA"]', "needs 4 atom selections"),
    ('atoms: ["resid 0 and name C", "resid 0 and name C", "resid 1 and name CA", "resid 1 and name C"]',
     "4 different atoms"),
])
def test_coordinate_selections_are_checked_before_sampling(tmp_path, change, message):
    text = (PROTOCOLS / "pmf.yaml").read_text()
    original = [line for line in text.splitlines() if line.strip().startswith("atoms:")][0].strip()
    path = tmp_path / "p.yaml"
    path.write_text(text.replace(original, change).replace("reactant_range: [-2.2, -0.9]",
                                                           "reactant_range: [-180, 180]"))
    if message is None:  # a valid coordinate, but the reactant range is in degrees
        with pytest.raises(InputError, match="reactant_range.*whole turn"):
            run_protocol(path, progress=False)
        return
    with pytest.raises(InputError, match=message):
        load_protocol(path) if "needs" in message else run_protocol(path, progress=False)
    assert not (tmp_path / "pmf_out" / "windows").exists()


def test_cheap_qm_level_is_checked_before_sampling(tmp_path):
    """A cheap QM level whose basis PySCF does not know is refused before any window runs."""
    text = (PROTOCOLS / "pmf.yaml").read_text()
    text = text.replace("  cheap: mm                         # sampling level; the target is the qm block",
                        "  cheap: {method: hf, basis: no-such-basis}")
    assert "no-such-basis" in text
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(InputError, match="no-such-basis"):
        run_protocol(tmp_path / "p.yaml", progress=False)
    assert not (tmp_path / "pmf_out" / "windows").exists()


def test_window_identities_follow_what_each_window_samples():
    """An MM window does not depend on the QM block, a cheap QM window not on the target level, a target window
    not on the cheap level; each depends on its own Hamiltonian."""
    config = load_protocol(PROTOCOLS / "pmf.yaml")
    config_qm = dataclasses.replace(config, protocol=dataclasses.replace(
        config.protocol, cheap=LevelSection("hf", "sto-3g"), target_windows=config.protocol.windows))
    object.__setattr__(config_qm, "source", config.source)
    top, _, _ = alanine_dipeptide()
    coordinate = reaction_coordinate(config.protocol.coordinate, top)

    def identities(cfg):
        from types import SimpleNamespace

        from bioqmmm.run.build import qm_at

        context = SimpleNamespace(inputs_at=lambda level: (cfg.system, qm_at(cfg.qm, level)))  # as the runner's
        return {p.name: _window_identity(context, cfg.protocol, p, coordinate)
                for p in window_plans(cfg.protocol, coordinate)}

    def changed(cfg, **qm):
        new = dataclasses.replace(cfg, qm=dataclasses.replace(cfg.qm, **qm))
        object.__setattr__(new, "source", cfg.source)
        return new

    base, mm = identities(config_qm), identities(config)
    assert identities(changed(config, method="b3lyp")) == mm  # MM windows: no QM in them
    target_changed = identities(changed(config_qm, method="b3lyp"))
    assert all((target_changed[n] == base[n]) == n.startswith("c") for n in base)
    cheap_changed = dataclasses.replace(config_qm, protocol=dataclasses.replace(
        config_qm.protocol, cheap=LevelSection("hf", "3-21g")))
    cheap_changed = identities(cheap_changed)
    assert all((cheap_changed[n] == base[n]) == n.startswith("t") for n in base)


def test_energy_cache_evaluates_each_frame_once(tmp_path):
    """Energies saved per frame: a rerun evaluates nothing, a longer window only its new frames, another
    cache identity everything again."""
    settings = SamplingSettings(samples=200, sample_interval=5, seed=2)
    bias = Umbrella(0.3, 20000.0)
    calls = {"n": 0}

    def target(x, box=None):
        calls["n"] += 1
        return target_energy(x, box)

    energies = {"cheap": system_energy(pair_system(CHEAP), "Reference"), "target": target}
    cache = tmp_path / "energies.npz"

    def evaluate(samples: int, identity: str = "a") -> Window:
        found = sample_window(pair_system(CHEAP), distance(0, 1), bias, START,
                              dataclasses.replace(settings, samples=samples), tmp_path / "w", platform="Reference")
        return retained_window("w", "cheap", bias, found, energies, T, cache=cache, cache_identity=identity)

    first = evaluate(200)
    assert calls["n"] == len(first.s)
    again = evaluate(200)
    assert calls["n"] == len(first.s) and np.array_equal(again.energies["target"], first.energies["target"])
    longer = evaluate(400)
    new = len(set(longer.retained.tolist()) - set(first.retained.tolist()))
    assert calls["n"] == len(first.s) + new and new < len(longer.s)
    evaluate(400, identity="b")
    assert calls["n"] == len(first.s) + new + len(longer.s)


def test_metadynamics_bias_is_reused_and_foreign_samples_refused(tmp_path):
    """A rerun reuses the frozen bias (no new build); other metadynamics settings with samples already in the
    folder are refused before anything is built."""
    text = _two_windows(tmp_path, "[-1.5, -1.3]", samples=10).read_text()
    text = text.replace("  temperature_k: 300\n", "  metadynamics:\n    range: [-3.14159265, 3.14159265]\n"
                        "    width: 0.3\n    build_steps: 2000\n    frequency: 200\n    samples: 20\n"
                        "  temperature_k: 300\n")
    path = tmp_path / "metad.yaml"
    path.write_text(text)
    run_protocol(path, progress=False)
    bias_file = tmp_path / "pmf_out" / "windows" / "m" / "bias.npz"
    built = bias_file.read_bytes()
    path.write_text(text.replace("samples: 20", "samples: 30"))
    longer = run_protocol(path, progress=False)
    assert bias_file.read_bytes() == built and longer["windows"]["metadynamics"] == 1
    path.write_text(text.replace("build_steps: 2000", "build_steps: 4000"))
    with pytest.raises(ReplicaFailedError, match="metadynamics samples of other settings"):
        run_protocol(path, progress=False)
    assert bias_file.read_bytes() == built
    path.write_text(text.replace("range: [-3.14159265, 3.14159265]", "range: [-2.0, 2.0]"))
    with pytest.raises(InputError, match="one whole turn"):
        run_protocol(path, progress=False)


def test_periodic_ranges_are_taken_round_the_circle():
    edges = np.linspace(-math.pi, math.pi, 37)
    low, high = _checked_range((2.8, 3.6), edges, "product_range", 2 * math.pi)
    assert low == pytest.approx(2.8) and high == pytest.approx(3.6 - 2 * math.pi)
    with pytest.raises(InputError, match="whole turn"):
        _checked_range((-180.0, 180.0), edges, "reactant_range", 2 * math.pi)
    with pytest.raises(InputError, match="only wraps"):
        _checked_range((0.4, 0.3), np.linspace(0.2, 0.5, 10), "reactant_range", None)
    with pytest.raises(InputError, match="holds no bin centre"):
        _checked_range((0.31, 0.32), np.linspace(0.2, 0.5, 4), "product_range", None)


def test_xtb_sampled_dft_target_protocol_runs(tmp_path):
    """protocols/pmf_xtb.yaml (windows sampled at GFN2-xTB/MM, reweighted to B3LYP/MM), cut down to 4 windows
    in the C7eq basin: the cheap level is the xTB engine, the target PySCF DFT, the reweighting keeps an ESS."""
    text = (PROTOCOLS / "pmf_xtb.yaml").read_text()
    text = text.replace("range: [-3.14159265, 2.61799388]", "range: [-1.6, -0.8]").replace("count: 12", "count: 4")
    text = text.replace("samples: 40", "samples: 6").replace("  reactant_range: [-2.2, -0.9]\n", "")
    text = text.replace("  product_range: [0.6, 1.5]\n", "")
    text = text.replace("equilibration_steps: 500", "equilibration_steps: 50").replace("bins: 24", "bins: 8")
    text = text.replace("output: pmf_xtb_out", "output: out")
    path = tmp_path / "pmf_xtb.yaml"
    path.write_text(text)
    result = run_protocol(path, progress=False)
    assert result["cheap_level"] == "gfn2-xtb" and result["qm_level"] == "b3lyp/sto-3g"
    assert result["windows"] == {"cheap": 4, "metadynamics": 0, "target": 0} and result["samples_retained"] > 0
    assert 0.0 < result["lowest_cheap_ess_fraction"] <= 1.0
    rows = list(csv.DictReader(open(tmp_path / "out" / "windows.csv")))
    assert len(rows) == 4 and all(float(r["kish_ess"]) > 0 for r in rows)


def test_windows_start_from_the_given_model_nearest_their_centre(tmp_path, monkeypatch):
    """``starts``: the coordinate of each model is OpenMM's (= mdtraj's φ), each window takes the model
    nearest its centre (across ±π), nothing is pulled on the MM surface, and a file of other atoms is
    refused by name."""
    top, system, positions = alanine_dipeptide()
    x = np.array(positions.value_in_unit(unit.nanometer))
    phi_atoms = mdtraj.compute_phi(mdtraj.Trajectory(x[None], mdtraj.Topology.from_openmm(top)))[0][0]
    phi = dihedral(*phi_atoms)
    models = [pulled_start(system, phi, Umbrella(c, 300.0, 2 * math.pi), x) for c in (-1.6, -1.2, 3.0)]
    path = tmp_path / "models.pdb"
    with open(path, "w") as handle:
        app.PDBFile.writeHeader(top, handle)
        for k, model in enumerate(models):
            app.PDBFile.writeModel(top, model * unit.nanometer, handle, modelIndex=k + 1)
        app.PDBFile.writeFooter(top, handle)
    frames = read_models(path, top)
    values = coordinate_values(phi, frames)
    expected = mdtraj.compute_dihedrals(mdtraj.Trajectory(np.array(frames), mdtraj.Topology.from_openmm(top)),
                                        [phi_atoms])[:, 0]
    assert values == pytest.approx(expected, abs=1e-4)  # PDB coordinates carry 1e-4 nm
    assert nearest_frames(values, [Umbrella(c, 300.0, 2 * math.pi) for c in (-1.5, -1.25, -3.1)]) == [0, 1, 2]

    def no_pull(*args, **kwargs):
        raise AssertionError("a window with a given start was pulled")

    monkeypatch.setattr("bioqmmm.protocols.pmf.pulled_start", no_pull)
    protocol = _two_windows(tmp_path, "[-1.6, -1.2]", samples=6)
    protocol.write_text(protocol.read_text().replace("  seed: 2026\n", "  seed: 2026\n  starts: models.pdb\n"))
    result = run_protocol(protocol, progress=False)
    assert result["windows"]["cheap"] == 2
    shutil.copy(PROTOCOLS.parent / "bioqmmm" / "data" / "formamide.pdb", tmp_path / "models.pdb")
    with pytest.raises(InputError, match="models.pdb: 6 atoms per model, the system has 22"):
        run_protocol(protocol, progress=False)
