"""Steered MD (bioqmmm.sampling.steering, protocol: steer): the work of a slow pull against the exact free
energy of a harmonic bond under the moving umbrella, the work formula against the stored frames, bit-for-bit
resumption, and the protocol's files."""

from __future__ import annotations

import math

import numpy as np
import openmm
import pytest
from scipy.integrate import quad

from bioqmmm.errors import InputError, ReplicaAbortedError
from bioqmmm.run.runner import run_protocol
from bioqmmm.sampling.coordinates import distance
from bioqmmm.sampling.starts import coordinate_values, read_models
from bioqmmm.sampling.steering import centre_at, steered_run
from bioqmmm.sampling.windows import SamplingSettings
from bioqmmm.units import kt_kjmol

T = 300.0
KB, R0, KS = 2000.0, 0.30, 20000.0  # bond (kJ/mol/nm²), its length (nm), steering spring (kJ/mol/nm²)


def _bond() -> tuple[openmm.System, np.ndarray]:
    """Two carbon-mass particles joined by a harmonic bond, in vacuum."""
    system = openmm.System()
    for _ in range(2):
        system.addParticle(12.0)
    bond = openmm.HarmonicBondForce()
    bond.addBond(0, 1, R0, KB)
    system.addForce(bond)
    return system, np.array([[0.0, 0.0, 0.0], [R0, 0.0, 0.0]])


def _free_energy(centre: float) -> float:
    """F(c) = −kT ln ∫ r² exp(−β[½k_b(r − r0)² + ½k_s(r − c)²]) dr (kJ/mol): the bond plus the umbrella at c."""
    beta = 1.0 / kt_kjmol(T)
    integral, _ = quad(lambda r: r * r * math.exp(-beta * (0.5 * KB * (r - R0) ** 2 + 0.5 * KS * (r - centre) ** 2)),
                       0.0, 2.0, points=[R0, centre])
    return -math.log(integral) / beta


def _settings(samples: int, interval: int, **extra) -> SamplingSettings:
    return SamplingSettings(samples=samples, sample_interval=interval, equilibration_steps=2000, timestep_fs=2.0,
                            temperature_k=T, friction_per_ps=10.0, seed=5, **extra)


def test_slow_pull_work_equals_the_free_energy_change(tmp_path):
    """A 40 ps pull of a harmonic bond from 0.30 to 0.45 nm: the mean work of three pulls is the exact ΔF
    of the bond + umbrella within 1.5 kJ/mol (and not below it by more than the noise: W ≥ ΔF on average);
    the centres follow the linear schedule; each work increment is the jump of the umbrella at the stored
    frame's s."""
    start, end = 0.30, 0.45
    exact = _free_energy(end) - _free_energy(start)
    works = []
    for seed in (5, 6, 7):
        system, x = _bond()
        settings = _settings(2000, 10, checkpoint_interval=2000)
        settings = SamplingSettings(**{**settings.__dict__, "seed": seed})
        run = steered_run(system, distance(0, 1), start, end, KS, settings, tmp_path / str(seed), positions=x,
                          platform="Reference")
        works.append(run["work"].sum())
    expected_centres = [centre_at(2000 + 10 * j, start, end, 2000, 20000) for j in range(2000)]
    assert run["center"] == pytest.approx(expected_centres, abs=1e-12)
    frames = [run["positions"][j] for j in range(0, 2000, 97)]
    s = coordinate_values(distance(0, 1), frames)
    assert s == pytest.approx(run["s"][::97], abs=1e-6)  # float32 frames
    moved = np.append(run["center"][1:], end)[::97]
    jump = 0.5 * KS * ((s - moved) ** 2 - (s - run["center"][::97]) ** 2)
    assert jump == pytest.approx(run["work"][::97], abs=1e-3)
    assert np.mean(works) == pytest.approx(exact, abs=0.6), (works, exact)
    assert exact == pytest.approx(0.5 * KB * KS / (KB + KS) * (end - R0) ** 2 - 2 * kt_kjmol(T) * math.log(
        (KB * R0 + KS * end) / (KB + KS) / R0), abs=0.5)  # the harmonic estimate, Jacobian included


def test_interrupted_pull_resumes_bit_for_bit(tmp_path):
    """Stopped after 30 of 60 samples, a rerun continues with the centre where the checkpoint left it: the
    same s, centres and work as an uninterrupted pull."""
    settings = _settings(60, 5, checkpoint_interval=15)
    system, x = _bond()
    whole = steered_run(system, distance(0, 1), 0.3, 0.4, KS, settings, tmp_path / "whole", positions=x,
                        platform="Reference")
    calls = 0

    def stop() -> None:
        nonlocal calls
        calls += 1
        if calls == 30:
            raise ReplicaAbortedError("stop")

    system, x = _bond()
    with pytest.raises(ReplicaAbortedError):
        steered_run(system, distance(0, 1), 0.3, 0.4, KS, settings, tmp_path / "parts", positions=x,
                    platform="Reference", poll=stop)
    system, x = _bond()
    parts = steered_run(system, distance(0, 1), 0.3, 0.4, KS, settings, tmp_path / "parts", positions=x,
                        platform="Reference")
    for key in ("s", "center", "work"):
        assert np.array_equal(parts[key], whole[key]), key


def test_steer_protocol_writes_a_path_of_models(tmp_path):
    """protocol: steer at GFN2-xTB (alanine dipeptide in vacuum, every atom QM) pulls the end-to-end distance
    down; path.pdb holds ``models`` frames whose s (measured again) are the ones reported; a dihedral is refused."""
    text = """
system:
  example: alanine_dipeptide
qm: {atoms: all, charge: 0, multiplicity: 1, engine: xtb, method: gfn2}
protocol:
  type: steer
  coordinate: {kind: distance, atoms: ["resname ACE and name CH3", "resname NME and name C"]}
  end: 0.60
  force_constant: 20000
  steps: 150
  sample_interval: 10
  models: 4
resources: {platform: Reference}
output: out
"""
    path = tmp_path / "steer.yaml"
    path.write_text(text)
    result = run_protocol(path, progress=False)
    assert result["final_s"]["value"] < result["start_structure_s"]["value"] - 0.05
    topology = openmm.app.PDBFile(str(tmp_path / "out" / "path.pdb")).topology
    models = read_models(tmp_path / "out" / "path.pdb", topology)
    assert len(models) == 4
    ace = [a.index for a in topology.atoms() if a.residue.name == "ACE" and a.name == "CH3"][0]
    nme = [a.index for a in topology.atoms() if a.residue.name == "NME" and a.name == "C"][0]
    measured = coordinate_values(distance(ace, nme), models)
    assert measured == pytest.approx(result["path_models_s"]["value"], abs=2e-4)  # PDB precision
    assert (tmp_path / "out" / "steer.png").exists() and (tmp_path / "out" / "steer.csv").exists()
    dihedral = 'kind: dihedral, atoms: ["resid 0 and name C", "resid 1 and name N", "resid 1 and name CA", ' \
        '"resid 1 and name C"]'
    text = text.replace('kind: distance, atoms: ["resname ACE and name CH3", "resname NME and name C"]', dihedral)
    path.write_text(text.replace("output: out", "output: bad"))
    with pytest.raises(InputError, match="dihedral"):
        run_protocol(path, progress=False)
