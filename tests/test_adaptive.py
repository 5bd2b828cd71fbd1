"""Adaptive QM/MM: buffered partition, permuted (Hamiltonian) and force-interpolation schemes."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import openmm
import pytest
from conftest import _cluster, directional_derivative
from openmm import app, unit

from bioqmmm.adaptive.hamiltonian import AdaptiveHamiltonian
from bioqmmm.adaptive.models import group_offsets, mm_builder, qmmm_builder
from bioqmmm.adaptive.partition import BufferedPartition
from bioqmmm.adaptive.schemes import pap_derivatives, pap_weights
from bioqmmm.errors import InputError
from bioqmmm.qmmm.embedding import quintic_switch
from bioqmmm.simulation.composite import particle_masses

#: SPC/E charges (Berendsen, Grigera & Straatsma, J. Phys. Chem. 1987, 91, 6269) on TIP3P geometry: the
#: "other level" of the two-MM-model tests.
SPCE_CHARGES = {"O": -0.8476, "H": 0.4238}


@pytest.fixture(scope="module")
def cluster():
    """20 TIP3P waters (rigid), no cutoff: topology, system, positions (nm), water groups."""
    topology, system, positions = _cluster(20)
    groups = [[a.index for a in r.atoms()] for r in topology.residues()]
    return topology, system, positions, groups


def recharged(system: openmm.System, topology: app.Topology) -> openmm.System:
    """``system`` with SPC/E charges on every water."""
    other = copy.deepcopy(system)
    nonbonded = next(f for f in other.getForces() if isinstance(f, openmm.NonbondedForce))
    for atom in topology.atoms():
        _, sigma, epsilon = nonbonded.getParticleParameters(atom.index)
        nonbonded.setParticleParameters(atom.index, SPCE_CHARGES[atom.element.symbol], sigma, epsilon)
    return other


def radii_around(partition_distances: np.ndarray, n_inner: int, n_buffer: int) -> tuple[float, float]:
    """r_inner and r_outer (nm) putting the ``n_inner`` nearest groups in QM and the next ``n_buffer`` in
    the buffer, each well inside its zone."""
    d = np.sort(partition_distances)
    if n_buffer == 0:  # an empty buffer in the gap between the last inner group and the next one
        gap = d[n_inner] - d[n_inner - 1]
        return d[n_inner - 1] + 0.25 * gap, d[n_inner - 1] + 0.75 * gap
    return 0.5 * (d[n_inner - 1] + d[n_inner]), 0.5 * (d[n_inner + n_buffer - 1] + d[n_inner + n_buffer])


def mm_adaptive(cluster, n_inner=1, n_buffer=3, scheme="pap", high=None, max_buffer_groups=4):
    topology, system, positions, groups = cluster
    core, others = groups[0], groups[1:]
    probe = BufferedPartition(core, others, particle_masses(system), 0.1, 0.2)
    r_inner, r_outer = radii_around(probe.distances(positions)[0], n_inner, n_buffer)
    partition = BufferedPartition(core, others, particle_masses(system), r_inner, r_outer, max_buffer_groups)
    build = mm_builder(system, high or recharged(system, topology), core, others, platform="Reference")
    return AdaptiveHamiltonian(partition, build, system, core=core, scheme=scheme, free_core=False,
                               platform="Reference")


def test_weights_are_a_c2_smoothstep_with_exact_gradients(cluster):
    """λ is 1 inside r_inner, 0 beyond r_outer, ½ half way, with vanishing first and second derivatives at
    both radii; ∇λ of each buffer group on its atoms and the centre's is the central difference of λ."""
    topology, system, positions, groups = cluster
    lam, slope = quintic_switch(np.array([0.3, 0.4, 0.5]), 0.3, 0.5)
    assert lam == pytest.approx([1.0, 0.5, 0.0], abs=1e-15) and slope[0] == slope[2] == 0.0

    def curvature(r: float, h: float) -> float:
        return float((quintic_switch(np.array(r + h), 0.3, 0.5)[1] - quintic_switch(np.array(r - h), 0.3, 0.5)[1])
                     / (2 * h))

    for edge, side in ((0.3, 1.0), (0.5, -1.0)):  # λ'' → 0 linearly at both radii: C², no kink in the force
        near, nearer = curvature(edge + side * 1e-3, 1e-4), curvature(edge + side * 1e-4, 1e-5)
        assert abs(nearer) < 0.15 * abs(near)

    probe = BufferedPartition(groups[0], groups[1:], particle_masses(system), 0.3, 0.5)
    r_inner, r_outer = radii_around(probe.distances(positions)[0], 1, 3)
    partition = BufferedPartition(groups[0], groups[1:], particle_masses(system), r_inner, r_outer)
    weights = partition.weights(positions)
    assert len(weights.inner) == 1 and len(weights.buffer) == 3
    rng = np.random.default_rng(3)
    for g, (atoms, gradient) in zip(weights.buffer, weights.gradients, strict=True):
        for atom, analytic in zip(atoms, gradient, strict=True):
            direction = rng.normal(size=3)
            shifted = [positions.copy(), positions.copy()]
            shifted[0][atom] += 1e-7 * direction  # the buffer is 0.03 nm wide here: small steps
            shifted[1][atom] -= 1e-7 * direction
            numeric = (partition.weights(shifted[0]).lam[g] - partition.weights(shifted[1]).lam[g]) / 2e-7
            assert numeric == pytest.approx(analytic @ direction, rel=1e-6, abs=1e-8)


def test_permuted_weights_sum_to_one_and_differentiate_exactly():
    """Σ_S w_S = 1; at λ ∈ {0, 1} only that partition counts; ∂E/∂λ_b of E = Σ w_S E_S is its central
    difference for an arbitrary table of partition energies."""
    rng = np.random.default_rng(7)
    lam = rng.uniform(0.05, 0.95, size=4)
    energies = rng.normal(scale=50.0, size=16)
    assert pap_weights(lam).sum() == pytest.approx(1.0, abs=1e-14)
    assert pap_weights(np.array([1.0, 0.0, 1.0, 0.0])) @ energies == energies[0b0101]
    analytic = pap_derivatives(lam, energies)
    for b in range(4):
        step = np.zeros(4)
        step[b] = 1e-6
        numeric = (pap_weights(lam + step) @ energies - pap_weights(lam - step) @ energies) / 2e-6
        assert numeric == pytest.approx(analytic[b], rel=1e-7, abs=1e-7)


def test_permuted_forces_are_the_gradient_with_groups_in_the_buffer(cluster):
    """Two MM water models (TIP3P as the high level, SPC/E charges as the low): forces of the permuted
    scheme, transition forces included, are central differences of its energy on the centre, on buffer
    groups and on the environment, with three groups inside the buffer."""
    hamiltonian = mm_adaptive(cluster)
    positions = cluster[2]
    energy, forces = hamiltonian.evaluate(positions)
    weights = hamiltonian.last
    assert len(weights.buffer) == 3 and not weights.dropped
    assert hamiltonian.evaluations == 8  # 2^3 partitions
    groups = hamiltonian.partition.groups
    atoms = [int(hamiltonian.core[0]), *[int(groups[g][0]) for g in weights.buffer], int(groups[-1][1])]
    rng = np.random.default_rng(11)
    transition = weights.transition_forces(np.ones(3), len(positions))
    assert np.abs(transition).max() > 1.0  # the buffer gradients are not negligible here
    for atom in atoms:
        direction = np.zeros_like(positions)
        direction[atom] = rng.normal(size=3)
        numeric = directional_derivative(lambda x: hamiltonian.evaluate(x)[0], positions, direction, h=1e-5)
        assert numeric == pytest.approx(float(np.sum(forces * direction)), abs=2e-5 * max(1.0, abs(numeric)))


def test_force_interpolation_uses_two_evaluations_and_is_not_a_gradient(cluster):
    """Force interpolation: two partitions per step, forces λ-interpolated per atom, and (as documented)
    not the gradient of its monitoring energy — the missing transition force shows on a buffer group."""
    hamiltonian = mm_adaptive(cluster, scheme="interpolation")
    positions = cluster[2]
    _, forces = hamiltonian.evaluate(positions)
    assert hamiltonian.evaluations == 2 and not hamiltonian.hamiltonian
    weights = hamiltonian.last
    k = int(np.argmin(np.abs(weights.lam[list(weights.buffer)] - 0.5)))  # the group half way through the buffer
    g = weights.buffer[k]
    small = hamiltonian.models.get(frozenset(weights.inner)).evaluate(positions, None, 0)[1]
    large = hamiltonian.models.get(frozenset(weights.inner) | frozenset(weights.buffer)).evaluate(positions, None, 0)[1]
    atom = hamiltonian.partition.groups[g][0]
    lam = weights.lam[g]
    assert forces[atom] == pytest.approx(lam * large[atom] + (1 - lam) * small[atom], abs=1e-9)
    direction = np.zeros_like(positions)
    direction[atom] = weights.gradients[k][1][0] / np.linalg.norm(weights.gradients[k][1][0])
    numeric = directional_derivative(lambda x: hamiltonian.evaluate(x)[0], positions, direction, h=1e-5)
    assert abs(numeric - float(np.sum(forces * direction))) > 1e-2


def test_identical_levels_reproduce_the_plain_run_step_for_step(cluster):
    """Limit check: when both levels are the same Hamiltonian, adaptive Verlet dynamics (groups crossing
    the buffer) follows the plain MM run to round-off."""
    topology, system, positions, _ = cluster
    hamiltonian = mm_adaptive(cluster, high=system)
    platform = openmm.Platform.getPlatformByName("Reference")
    masses = particle_masses(system)
    velocities = np.random.default_rng(5).normal(size=positions.shape) * np.sqrt(2.494 / masses)[:, None]
    velocities -= masses @ velocities / masses.sum()  # no centre-of-mass motion for the plain run's remover
    runs = []
    for model in (system, hamiltonian.system):
        context = openmm.Context(model, openmm.VerletIntegrator(0.001), platform)
        context.setPositions(positions)
        context.setVelocities(velocities)
        context.applyVelocityConstraints(1e-12)
        context.getIntegrator().step(200)
        runs.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    assert hamiltonian.evaluations > 200 and hamiltonian.exchanges  # groups did cross the buffer
    assert np.abs(runs[0] - runs[1]).max() < 1e-9


def test_buffer_cap_drops_the_outermost_groups(cluster):
    """With more groups in the buffer than the cap, those of smallest λ count as MM and are reported."""
    hamiltonian = mm_adaptive(cluster, max_buffer_groups=2)
    hamiltonian.evaluate(cluster[2])
    weights = hamiltonian.last
    assert len(weights.buffer) == 2 and len(weights.dropped) == 1
    assert weights.lam[weights.dropped[0]] == 0.0 and hamiltonian.capped_steps == 1
    assert hamiltonian.evaluations == 4


def test_bad_adaptive_input_is_refused_before_any_evaluation(cluster):
    topology, system, positions, groups = cluster
    masses = particle_masses(system)
    with pytest.raises(InputError, match="r_inner < r_outer"):
        BufferedPartition(groups[0], groups[1:], masses, 0.5, 0.4)
    with pytest.raises(InputError, match="two groups"):
        BufferedPartition(groups[0], groups[:3], masses, 0.3, 0.5)
    partition = BufferedPartition(groups[0], groups[1:], masses, 0.3, 0.5)
    with pytest.raises(InputError, match="unknown adaptive scheme 'sorted'"):
        AdaptiveHamiltonian(partition, mm_builder(system, system, groups[0], groups[1:]), system,
                            core=groups[0], scheme="sorted")
    split = [[g[0]] for g in groups[1:]]  # an oxygen without its hydrogens
    with pytest.raises(InputError, match="not a whole molecule"):
        qmmm_builder(topology, system, None, split, lambda region: None)


def xtb_adaptive(cluster, n_inner: int, n_buffer: int, scheme: str = "pap", engine=None) -> AdaptiveHamiltonian:
    """Adaptive QM/MM model of the cluster (GFN2-xTB/MM unless ``engine()`` makes another engine): water 0 the QM
    core, the others adaptive groups."""
    from bioqmmm.qm.xtb_engine import XTBEngine
    from bioqmmm.qmmm.system import QMMMSystem
    from bioqmmm.region.region import QMRegion

    topology, system, positions, groups = cluster
    core = QMRegion.select(topology, groups[0], charge=0, multiplicity=1)
    probe = BufferedPartition(groups[0], groups[1:], particle_masses(system), 0.1, 0.2)
    r_inner, r_outer = radii_around(probe.distances(positions)[0], n_inner, n_buffer)
    partition = BufferedPartition(groups[0], groups[1:], particle_masses(system), r_inner, r_outer)
    make = engine or (lambda: XTBEngine("gfn2", accuracy=1e-4))
    build = qmmm_builder(topology, system, core, groups[1:],
                         lambda region: QMMMSystem(topology, system, region, engine=make()))
    engine = make()
    empty = np.zeros((0, 3)), np.zeros(0)
    offsets = group_offsets(topology, system, groups[1:], positions,
                            lambda symbols, x, q: engine.compute(symbols, x, q, 1, *empty).energy)
    return AdaptiveHamiltonian(partition, build, system, core=groups[0], scheme=scheme, platform="Reference",
                               offsets=offsets)


def test_empty_buffer_is_the_fixed_qmmm_model_of_the_inner_region(cluster):
    """With no group in the buffer, the adaptive GFN2-xTB/MM energy and forces are those of a plain QMMMSystem
    whose QM region is the core plus the inner groups."""
    from bioqmmm.qm.xtb_engine import XTBEngine
    from bioqmmm.qmmm.system import QMMMSystem

    topology, system, positions, groups = cluster
    hamiltonian = xtb_adaptive(cluster, 2, 0)
    energy, forces = hamiltonian.evaluate(positions)
    inner = hamiltonian.last.inner
    energy += hamiltonian.offsets[list(inner)].sum()
    assert len(inner) == 2 and not hamiltonian.last.buffer and hamiltonian.evaluations == 1
    atoms = sorted(groups[0] + [i for g in inner for i in groups[1 + g]])
    plain = QMMMSystem(topology, system, atoms, charge=0, multiplicity=1, engine=XTBEngine("gfn2", accuracy=1e-4),
                       platform="Reference")
    reference_energy, reference_forces = plain.energy_and_forces(positions)
    assert energy == pytest.approx(reference_energy, abs=1e-6)
    assert np.abs(forces - reference_forces).max() < 1e-5


@pytest.mark.parametrize("engine", ["xtb", "pyscf"])
def test_permuted_qmmm_forces_are_the_gradient_with_groups_in_the_buffer(cluster, engine):
    """GFN2-xTB/MM and HF/STO-3G/MM (PySCF), a QM water with two neighbours in the buffer (4 QM/MM evaluations
    per call): forces of the permuted scheme are central differences of its energy, transition forces
    included."""
    from bioqmmm.qm.pyscf_engine import PySCFEngine

    make = (lambda: PySCFEngine("hf", "sto-3g", conv_tol=1e-11)) if engine == "pyscf" else None
    hamiltonian = xtb_adaptive(cluster, 1, 2, engine=make)
    positions = cluster[2]
    _, forces = hamiltonian.evaluate(positions)
    weights = hamiltonian.last
    assert len(weights.buffer) == 2 and hamiltonian.evaluations == 4
    groups = hamiltonian.partition.groups
    rng = np.random.default_rng(13)
    for atom in (int(hamiltonian.core[0]), *[int(groups[g][0]) for g in weights.buffer], int(groups[-1][0])):
        direction = np.zeros_like(positions)
        direction[atom] = rng.normal(size=3)
        numeric = directional_derivative(lambda x: hamiltonian.evaluate(x)[0], positions, direction, h=1e-5)
        assert numeric == pytest.approx(float(np.sum(forces * direction)), abs=2e-3 + 1e-4 * abs(numeric))


def _rows(path) -> list[dict]:
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_shipped_adaptive_md_runs_conserves_energy_and_resumes_bit_for_bit(tmp_path):
    """protocols/adaptive_md.yaml cut to 300 steps: groups in the buffer, the NVE drift within the TESTING.md
    bound, result.json and plots written; the same run stopped at step 150 and resumed sees the same exchanges
    at the same steps and the same energies to xtb's SCC tolerance (libxtb keeps its SCC guess to itself, so
    the first SCC after a resume starts afresh; PySCF guesses are checkpointed)."""
    from conftest import shipped_protocol

    from bioqmmm.run.runner import run_protocol

    short = {"steps": 300, "report_interval": 5, "checkpoint_interval": 50}
    straight = run_protocol(shipped_protocol(tmp_path, "adaptive_md.yaml", "straight", **short), progress=False)
    assert straight["hamiltonian"] is True and straight["max_buffer_groups_seen"] >= 1
    assert abs(straight["energy_drift"]["value"]) < 1.7  # kJ/mol/ns/dof (TESTING.md NVE bound)
    assert straight["evaluations_per_step"]["value"] > 1.0
    for name in ("region.png", "energy.png", "exchanges.csv", "trajectory.dcd"):
        assert (tmp_path / "straight" / name).stat().st_size > 0

    run_protocol(shipped_protocol(tmp_path, "adaptive_md.yaml", "resumed", **{**short, "steps": 150}), progress=False)
    resumed = run_protocol(shipped_protocol(tmp_path, "adaptive_md.yaml", "resumed", **short), progress=False)
    assert resumed["resumed_from_step"] == 150
    rows = [_rows(tmp_path / name / "adaptive.csv") for name in ("straight", "resumed")]
    assert [r["step"] for r in rows[0]] == [r["step"] for r in rows[1]]
    for a, b in zip(*rows, strict=True):
        assert (a["qm_groups"], a["buffer_groups"]) == (b["qm_groups"], b["buffer_groups"])
        assert float(a["total_kjmol"]) == pytest.approx(float(b["total_kjmol"]), abs=1e-3)
    exchanges = [[(e["step"], e["group"], e["before"], e["after"]) for e in _rows(tmp_path / name / "exchanges.csv")]
                 for name in ("straight", "resumed")]
    assert exchanges[0] == exchanges[1] and exchanges[0]  # groups did change state in these 300 steps


def test_adaptive_md_refuses_groups_inside_the_qm_region_and_an_inverted_buffer(tmp_path):
    from conftest import shipped_protocol

    from bioqmmm.run.runner import run_protocol
    from bioqmmm.run.schema import ProtocolError

    with pytest.raises(InputError, match="in the QM region already"):
        run_protocol(shipped_protocol(tmp_path, "adaptive_md.yaml", "overlap", groups="water", steps=10),
                     progress=False)
    with pytest.raises(ProtocolError, match="r_outer_nm"):
        run_protocol(shipped_protocol(tmp_path, "adaptive_md.yaml", "inverted", r_outer_nm=0.2, steps=10),
                     progress=False)


@pytest.mark.slow
def test_two_water_models_adaptive_nve_conserves_energy_without_layering():
    """Two MM water models (TIP3P inside, SPC/E charges outside) in a periodic 1.9 nm box, the buffer
    0.36–0.38 nm around a central TIP3P water, 20 ps NVE at 2 fs with the permuted scheme: the drift is no
    worse than the fixed partition's (core TIP3P, every other water SPC/E-charged) from the same start, and
    the density of waters in shells around the centre and the O–O g(r) near it agree with the fixed
    partition's within 4 block-average errors in every bin — no spurious layer at the buffer."""
    from conftest import water_box

    from bioqmmm.adaptive.validation import two_model_nve

    topology, system, positions = water_box(1.9)
    positions = np.array(positions.value_in_unit(unit.nanometer))
    box = np.array([v.value_in_unit(unit.nanometer) for v in system.getDefaultPeriodicBoxVectors()])
    groups = [[a.index for a in r.atoms()] for r in topology.residues()]
    centre = int(np.argmin([np.linalg.norm(positions[g[0]] - box.diagonal() / 2) for g in groups]))
    others = [g for k, g in enumerate(groups) if k != centre]
    adaptive, fixed = two_model_nve(recharged(system, topology), system, positions, box, groups[centre], others,
                                    [g[0] for g in others], r_inner=0.36, r_outer=0.38, picoseconds=20.0)
    print(f"drift adaptive {adaptive.drift:+.4f} fixed {fixed.drift:+.4f} kJ/mol/ns/dof; fluctuation "
          f"{adaptive.fluctuation:.3f} / {fixed.fluctuation:.3f} kJ/mol; {adaptive.exchanges} exchanges, "
          f"{adaptive.evaluations_per_step:.2f} evaluations per step, {adaptive.capped_steps} steps over the cap")
    assert adaptive.exchanges > 50 and adaptive.capped_steps < 0.01 * 10000
    assert abs(adaptive.drift) <= max(2.0 * abs(fixed.drift), 0.05)
    assert adaptive.fluctuation <= 2.0 * fixed.fluctuation
    for ours, theirs in ((adaptive.density, fixed.density), (adaptive.rdf, fixed.rdf)):
        z = np.abs(ours.mean - theirs.mean) / np.sqrt(ours.error**2 + theirs.error**2 + 1e-12)
        assert z.max() < 4.0, (ours.edges, ours.mean, theirs.mean, z)


@pytest.fixture(scope="module")
def dipeptide_trigger():
    """Alanine dipeptide in vacuum at GFN2-xTB/MM: the Ala side chain is QM (Cα–Cβ link atom); the candidate
    is Cα with Hα (joining it cuts N–Cα, a polar single bond the region allows)."""
    from bioqmmm.adaptive.trigger import RegionTrigger, TriggerRule
    from bioqmmm.examples import alanine_dipeptide
    from bioqmmm.qm.xtb_engine import XTBEngine
    from bioqmmm.qmmm.system import QMMMSystem
    from bioqmmm.region.protein import sidechain
    from bioqmmm.region.region import QMRegion

    topology, system, positions = alanine_dipeptide()
    positions = np.array(positions.value_in_unit(unit.nanometer))
    region = QMRegion.select(topology, sidechain(topology, "ALA2"), charge=0, multiplicity=1, allow_polar_cut=True)
    qmmm = QMMMSystem(topology, system, region, engine=XTBEngine("gfn2"))
    candidates = RegionTrigger.candidates(topology, system, region, ["resid 1 and name CA HA"])
    trigger = RegionTrigger(topology, system, region, candidates, TriggerRule(), 300.0, XTBEngine("gfn2"),
                            allow_polar_cut=True)
    return topology, qmmm, positions, trigger


def test_condensed_fukui_indices_sum_to_one_electron(dipeptide_trigger):
    """f⁺ and f⁻ of the QM atoms (links on their hosts) each sum to one electron: the N ± 1 single points add or
    remove exactly one; the largest of the two per atom lies in [0, 1] for this closed-shell fragment."""
    _, qmmm, positions, trigger = dipeptide_trigger
    fukui = trigger.fukui(qmmm, positions, None)
    assert set(fukui) == set(qmmm.region.atoms)
    values = np.array(list(fukui.values()))
    assert np.all(values > -0.2) and np.all(values < 1.0) and values.sum() > 0.5


def test_stretching_the_edge_bond_brings_its_neighbour_into_qm_before_it_breaks(dipeptide_trigger):
    """The Cα–Cβ bond (the cut bond at the edge of the side-chain region) pulled apart in steps of 0.002 nm:
    at the start structure, checked repeatedly, the region does not change (a boring region stays as it is);
    stretched, Cα joins the QM region while the bond is still under 1.3 times its length — long before a C–C
    bond breaks — and the grown region passes the boundary rules."""
    topology, qmmm, positions, trigger = dipeptide_trigger
    atoms = {a.name: a.index for a in topology.atoms() if a.residue.index == 1}
    side = [atoms[name] for name in ("CB", "HB1", "HB2", "HB3")]
    bond = positions[atoms["CB"]] - positions[atoms["CA"]]
    r0 = float(np.linalg.norm(bond))
    added = frozenset()
    for _ in range(3):
        added = trigger.decide(added, trigger.scores(qmmm, positions))
    assert added == frozenset()
    for delta in np.arange(0.002, 0.08, 0.002):
        stretched = positions.copy()
        stretched[side] += delta * bond / r0
        scores = trigger.scores(qmmm, stretched)
        added = trigger.decide(added, scores)
        if added:
            break
    assert added == {"resid 1 and name CA HA"}
    assert r0 + delta < 1.3 * r0, (r0, delta, scores)
    assert scores[0].stress > 1.0 and scores[0].score > trigger.rule.threshold
    grown = trigger.region(added)
    assert set(grown.atoms) == set(qmmm.region.atoms) | {atoms["CA"], atoms["HA"]}


def test_adaptive_md_trigger_grows_the_region_logs_it_and_resumes(tmp_path):
    """adaptive_md with only a trigger on alanine dipeptide (vacuum, GFN2-xTB/MM): with the default threshold
    the side-chain region stays as it is over 60 steps; with a threshold below every score, Cα joins at the
    first check, the Hamiltonian and dynamics carry on (trigger.csv says grow), and a run stopped at step 40
    and resumed ends with the same region and the same decisions."""
    import yaml

    from bioqmmm.run.runner import run_protocol

    def protocol(name: str, **changes) -> Path:
        config = {"system": {"example": "alanine_dipeptide"},
                  "qm": {"sidechains": ["ALA2"], "charge": 0, "multiplicity": 1, "engine": "xtb", "method": "gfn2",
                         "allow_polar_cut": True},
                  "protocol": {"type": "adaptive_md", "steps": 60, "timestep_fs": 0.5, "seed": 3,
                               "report_interval": 5, "checkpoint_interval": 20,
                               "trigger": {"candidates": ["resid 1 and name CA HA"], "interval": 20}, **changes},
                  "resources": {"threads": 1}, "output": str(tmp_path / name)}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    quiet = run_protocol(protocol("quiet"), progress=False)
    assert quiet["region_changes"] == 0 and quiet["candidates_in_region"] == [] and quiet["trigger_checks"] == 3
    low = {"trigger": {"candidates": ["resid 1 and name CA HA"], "interval": 20, "threshold": 1e-3,
                       "hysteresis": 0.0}}
    grown = run_protocol(protocol("grown", **low), progress=False)
    assert grown["region_changes"] == 1 and grown["candidates_in_region"] == ["resid 1 and name CA HA"]
    assert grown["qm_atoms_at_end"] == quiet["n_qm_atoms"] + 2
    assert (tmp_path / "grown" / "trigger.png").stat().st_size > 0
    rows = _rows(tmp_path / "grown" / "trigger.csv")
    assert [(r["step"], r["action"]) for r in rows] == [("20", "grow"), ("40", ""), ("60", "")]

    run_protocol(protocol("resumed", **{**low, "steps": 40}), progress=False)
    resumed = run_protocol(protocol("resumed", **low), progress=False)
    assert resumed["resumed_from_step"] == 40 and resumed["candidates_in_region"] == grown["candidates_in_region"]
    assert [(r["step"], r["in_region"], r["action"]) for r in _rows(tmp_path / "resumed" / "trigger.csv")] == \
        [(r["step"], r["in_region"], r["action"]) for r in rows]


@pytest.mark.slow
def test_xtb_first_shell_nve_drift_is_of_the_fixed_partitions_order_and_interpolation_heats(tmp_path):
    """Acceptance (QM): a GFN2-xTB/MM water with an adaptive first shell (protocols/adaptive_md.yaml), 1 ps of
    NVE at 0.5 fs from the same start: the permuted scheme's drift (kJ/mol/ns/dof) is of the order of the fixed
    partition's (within 5 times, or under 0.5) with groups exchanging; force interpolation, not Hamiltonian,
    drifts at least ten times more."""
    import yaml
    from conftest import shipped_protocol

    from bioqmmm.run.runner import run_protocol
    from bioqmmm.simulation.reporters import energy_drift, read_rows

    steps = {"steps": 2000, "checkpoint_interval": 2000}
    pap = run_protocol(shipped_protocol(tmp_path, "adaptive_md.yaml", "pap", **steps), progress=False)
    interpolation = run_protocol(shipped_protocol(tmp_path, "adaptive_md.yaml", "interpolation", **steps,
                                                  scheme="interpolation"), progress=False)
    config = yaml.safe_load(shipped_protocol(tmp_path, "adaptive_md.yaml", "fixed").read_text())
    shipped = config["protocol"]
    config["protocol"] = {"type": "md", **steps, "minimize_mm_first": False, **{
        key: shipped[key] for key in ("timestep_fs", "integrator", "temperature_k", "seed", "report_interval")}}
    (tmp_path / "fixed.yaml").write_text(yaml.safe_dump(config))
    run_protocol(tmp_path / "fixed.yaml", progress=False)
    rows = read_rows(tmp_path / "fixed" / "energies.csv")
    fixed, _ = energy_drift([r["time_ps"] for r in rows], [r["potential_kjmol"] + r["kinetic_kjmol"] for r in rows],
                            pap["degrees_of_freedom"])
    drift = pap["energy_drift"]["value"]
    print(f"drift fixed {fixed:+.3f}, pap {drift:+.3f}, interpolation {interpolation['energy_drift']['value']:+.3f}"
          f" kJ/mol/ns/dof; {pap['exchanges']} exchanges, {pap['evaluations_per_step']['value']:.2f} evaluations/step")
    assert pap["exchanges"] > 0 and pap["steps_over_buffer_cap"] == 0
    assert abs(drift) <= max(5.0 * abs(fixed), 0.5)
    assert abs(interpolation["energy_drift"]["value"]) > 10.0 * max(abs(drift), abs(fixed))
