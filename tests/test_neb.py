"""Nudged elastic band: analytic surface, gas-phase barrier against an independent TS search, restart,
endpoint files, failures; the solvated protocol under mpirun lives in test_neb_mpi.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mdtraj
import numpy as np
import pytest
from conftest import mpirun, shared_pdb
from openmm import app, unit

from bioqmmm.errors import CalculationError, InputError, SCFConvergenceError
from bioqmmm.examples import formamide
from bioqmmm.paths.band import band_forces, relax_band, tangents
from bioqmmm.paths.models import FunctionModel
from bioqmmm.paths.neb import NEB, _nearest_copy
from bioqmmm.paths.surfaces import muller_brown
from bioqmmm.paths.tsopt import refine_transition_state
from bioqmmm.protocols.drive import distances, drive
from bioqmmm.protocols.neb import read_endpoint
from bioqmmm.protocols.optimize import OptimizeSettings, run_optimization
from bioqmmm.qm import PySCFEngine
from bioqmmm.qmmm.system import QMMMSystem
from bioqmmm.run.protocol import load_protocol

# Müller & Brown, Theor. Chim. Acta 53, 75 (1979): minima A and B, and the saddle between A and the
# intermediate minimum, the highest point on the A -> B path (coordinates as tabulated in the NEB
# literature, e.g. Henkelman et al. 2000, to 6 decimals).
MB_A = np.array([[-0.558224, 1.441726, 0.0]])
MB_B = np.array([[0.623499, 0.028038, 0.0]])
MB_SADDLE = np.array([-0.822002, 0.624313])
PRODUCT_PDB = Path(__file__).resolve().parents[1] / "protocols" / "formamide_product.pdb"


def _mb_saddle() -> np.ndarray:
    """The saddle by Newton's method on the analytic gradient (Hessian by central differences)."""
    x = MB_SADDLE.copy()
    for _ in range(20):
        g = -muller_brown(np.array([[*x, 0.0]]))[1][0, :2]
        h = np.empty((2, 2))
        for k in range(2):
            d = np.zeros(2)
            d[k] = 1e-6
            plus = -muller_brown(np.array([[*(x + d), 0.0]]))[1][0, :2]
            minus = -muller_brown(np.array([[*(x - d), 0.0]]))[1][0, :2]
            h[:, k] = (plus - minus) / 2e-6
        x = x - np.linalg.solve(h, g)
    return x


def _mb_neb(**kwargs) -> NEB:
    return NEB(FunctionModel(muller_brown, 1), MB_A, MB_B, n_images=9, climb=True, spring_constant=10.0,
               max_step=0.05, interpolation="linear", **kwargs)


def test_muller_brown_climbing_image_reaches_the_saddle():
    saddle = _mb_saddle()
    assert np.allclose(saddle, MB_SADDLE, atol=2e-6)  # the tabulated value, independently
    result = _mb_neb().run(fmax=1e-3, max_iterations=3000)
    assert result.converged
    assert np.abs(result.ts_positions[0, :2] - saddle).max() < 1e-3
    e_a, e_saddle = muller_brown(MB_A)[0], muller_brown(np.array([[*saddle, 0.0]]))[0]
    assert result.barrier == pytest.approx(e_saddle - e_a, abs=1e-5)
    assert np.all(np.diff(result.path_length) > 0)


def test_band_forces_spring_and_climbing_image():
    path = np.array([[0.0, 0.0], [1.0, 0.5], [3.0, 0.0]])  # uneven spacing: the spring pulls image 1 forward
    energies = np.array([0.0, 1.0, 0.0])
    true = np.array([[0.3, -2.0]])
    plain = band_forces(path, energies, true, spring=2.0, climbing=None)
    tau = (path[2] - path[0]) / np.linalg.norm(path[2] - path[0])  # at a maximum with equal ΔV: τ⁺ + τ⁻
    lengths = np.linalg.norm(np.diff(path, axis=0), axis=1)
    expected = true[0] - (true[0] @ tau) * tau + 2.0 * (lengths[1] - lengths[0]) * tau
    assert np.allclose(plain[0], expected)
    climbing = band_forces(path, energies, true, spring=2.0, climbing=1)
    assert np.allclose(climbing[0], true[0] - 2 * (true[0] @ tau) * tau)
    # uphill and downhill images take the tangent towards their higher neighbour only
    plus = (path[2] - path[1]) / np.linalg.norm(path[2] - path[1])
    minus = (path[1] - path[0]) / np.linalg.norm(path[1] - path[0])
    assert np.allclose(tangents(path, np.array([0.0, 1.0, 2.0]))[0], plus)
    assert np.allclose(tangents(path, np.array([2.0, 1.0, 0.0]))[0], minus)


class _RelaxingSurface(FunctionModel):
    """Müller–Brown with a make-believe environment: records when the band asks for a relaxation."""

    relaxes = True

    def __init__(self) -> None:
        super().__init__(muller_brown, 1)
        self.relaxed_at: list[int] = []
        self.evaluations = 0

    def evaluate(self, positions, images):
        self.evaluations += 1
        return super().evaluate(positions, images)

    def relax(self, positions, images):
        self.relaxed_at.append(self.evaluations)
        return positions


def test_environment_relaxed_at_start_every_n_iterations_and_before_convergence():
    model = _RelaxingSurface()
    rows = []
    result = NEB(model, MB_A, MB_B, n_images=9, spring_constant=10.0, max_step=0.05, interpolation="linear",
                 relax_every=40).run(fmax=1e-3, max_iterations=3000, callback=lambda i, r: rows.append(i))
    assert result.converged
    # evaluation 1 is the endpoints; then one evaluation of the interior per iteration
    iterations_at_relaxation = [n - 1 for n in model.relaxed_at]
    assert iterations_at_relaxation[0] == 0
    gaps = np.diff(iterations_at_relaxation)
    assert np.all(gaps[:-1] == 41) and gaps[-1] <= 41  # 40 steps, then an iteration that only relaxes
    assert rows[-1] == iterations_at_relaxation[-1]  # converged on the evaluation right after a relaxation


class _InterruptedError(Exception):
    pass


def test_restart_continues_from_the_last_iteration(tmp_path):
    checkpoint = tmp_path / "band.npz"
    reference = _mb_neb().run(fmax=1e-3, max_iterations=3000)

    def interrupt(iteration, row):
        if iteration == 57:
            raise _InterruptedError

    with pytest.raises(_InterruptedError):
        _mb_neb().run(fmax=1e-3, max_iterations=3000, checkpoint=checkpoint, identity="mb", callback=interrupt)
    seen = []
    resumed = _mb_neb().run(fmax=1e-3, max_iterations=3000, checkpoint=checkpoint, identity="mb",
                            callback=lambda i, row: seen.append(i))
    assert resumed.resumed_from == 57 and seen[0] == 57
    assert resumed.iterations == reference.iterations
    assert np.array_equal(resumed.positions, reference.positions)
    assert len(resumed.history) == len(reference.history)
    with pytest.raises(InputError, match="band checkpoint of a different run"):
        _mb_neb().run(fmax=1e-3, checkpoint=checkpoint, identity="another run")
    rerun = _mb_neb().run(fmax=1e-3, max_iterations=3000, checkpoint=checkpoint, identity="mb")
    assert rerun.iterations == reference.iterations and len(rerun.history) == len(reference.history)
    default = tmp_path / "default.npz"
    _mb_neb().run(fmax=1e-3, max_iterations=5, checkpoint=default)
    with pytest.raises(InputError, match="band checkpoint of a different run"):  # the default identity knows settings
        NEB(FunctionModel(muller_brown, 1), MB_A, MB_B, n_images=9, spring_constant=500.0, max_step=0.05,
            interpolation="linear").run(fmax=1e-3, checkpoint=default)


def test_ts_refinement_on_muller_brown():
    start = np.array([[-0.80, 0.60, 0.0]])

    def planar(x):  # the surface in the plane, z held by a harmonic well (the search needs curvature there)
        energy, forces = muller_brown(x)
        forces[0, 2] = -100.0 * x[0, 2]
        return energy + 50.0 * x[0, 2] ** 2, forces

    result = refine_transition_state(planar, start, np.array([0]), np.array([1.0]), direction=np.array([1.0, -1, 0]),
                                     fmax=1e-6, max_steps=50, trust=0.05)
    assert result.converged
    assert np.abs(result.positions[0, :2] - _mb_saddle()).max() < 1e-6
    assert len(result.imaginary_frequencies) == 1


@pytest.fixture(scope="module")
def gas_formamide():
    """Formamide, every atom QM (no MM atoms), HF/3-21G; reactant and product as shipped (HF/3-21G minima)."""
    top, system, positions = formamide()
    qmmm = QMMMSystem(top, system, "all", charge=0, multiplicity=1, engine=PySCFEngine("hf", "3-21g", conv_tol=1e-10))
    reactant = np.array(positions.value_in_unit(unit.nanometer))
    product = app.PDBFile(str(PRODUCT_PDB)).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return qmmm, reactant, np.array(product)


def _pyscf_energy(symbols, x_nm) -> float:
    from pyscf import gto, scf

    mol = gto.M(atom=[(s, xyz * 10) for s, xyz in zip(symbols, x_nm, strict=True)], basis="3-21g", unit="Angstrom",
                verbose=0)
    return scf.RHF(mol).run(conv_tol=1e-10).e_tot


@pytest.mark.slow
def test_gas_phase_barrier_matches_an_independent_ts_search(gas_formamide):
    """NEB barrier within 1 kJ/mol of geomeTRIC's transition-state optimisation with PySCF directly."""
    from pyscf import gto, scf
    from pyscf.geomopt.geometric_solver import optimize
    from pyscf.hessian import thermo

    qmmm, reactant, product = gas_formamide
    result = NEB(qmmm, reactant, product, n_images=7, climb=True).run(fmax=20.0, max_iterations=300)
    assert result.converged
    symbols = qmmm.symbols
    # independent: geomeTRIC's TS search (PySCF, no bioqmmm code) from the midpoint of the straight line
    midpoint = 0.5 * (reactant + product)
    mol = gto.M(atom=[(s, x * 10) for s, x in zip(symbols, midpoint, strict=True)], basis="3-21g", unit="Angstrom",
                verbose=0)
    ts_mol = optimize(scf.RHF(mol), transition=True, maxsteps=100)
    hartree = 2625.499639  # kJ/mol
    e_reactant = _pyscf_energy(symbols, reactant)
    reference = (scf.RHF(ts_mol).run(conv_tol=1e-10).e_tot - e_reactant) * hartree
    assert 150 < reference < 400  # a 1,3-proton shift through a four-membered ring
    assert result.barrier == pytest.approx(reference, abs=1.0)
    assert result.reaction_energy == pytest.approx((_pyscf_energy(symbols, product) - e_reactant) * hartree, abs=0.01)
    # refinement from the climbing image: same saddle, one imaginary frequency equal to PySCF's analytic one
    masses = np.array([qmmm.system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(len(symbols))])
    ts = refine_transition_state(qmmm.energy_and_forces, result.ts_positions, np.arange(len(symbols)), masses,
                                 direction=product - reactant, whole_system=True, fmax=1.0)
    assert ts.converged
    assert ts.energy - result.total_energies[0] == pytest.approx(reference, abs=0.1)
    mol_ts = gto.M(atom=[(s, x * 10) for s, x in zip(symbols, ts.positions, strict=True)], basis="3-21g",
                   unit="Angstrom", verbose=0)
    mf = scf.RHF(mol_ts).run(conv_tol=1e-11)
    analytic = thermo.harmonic_analysis(mol_ts, mf.Hessian().kernel())["freq_wavenumber"]
    imaginary = -abs(analytic[np.iscomplex(analytic)][0])
    assert len(ts.imaginary_frequencies) == 1
    assert ts.imaginary_frequencies[0] == pytest.approx(imaginary, rel=0.005)


def test_failed_scf_names_the_image(gas_formamide, monkeypatch):
    qmmm, reactant, product = gas_formamide
    neb = NEB(qmmm, reactant, product, n_images=5, climb=True, interpolation="linear")
    bad = neb.initial_path[2]
    original = qmmm.energy_and_forces

    def failing(positions, box=None):
        if np.array_equal(positions, bad):
            raise SCFConvergenceError(step=None, attempts=[])
        return original(positions, box)

    monkeypatch.setattr(qmmm, "energy_and_forces", failing)
    with pytest.raises(CalculationError, match="NEB image 2: SCF did not converge"):
        neb.run(fmax=20.0, max_iterations=2)


def test_endpoints_must_differ_and_match(gas_formamide):
    qmmm, reactant, product = gas_formamide
    with pytest.raises(InputError, match="same structure"):
        NEB(qmmm, reactant, reactant.copy())
    with pytest.raises(InputError, match=r"\(N, 3\)"):
        NEB(qmmm, reactant, product[:4])
    with pytest.raises(InputError, match="at least 3"):
        NEB(qmmm, reactant, product, n_images=2)


def test_read_endpoint_whole_or_by_residue(tmp_path):
    top, _, positions = formamide(box_size=2.0)
    start = np.array(positions.value_in_unit(unit.nanometer))
    solute = read_endpoint(PRODUCT_PDB, top, start)
    product = app.PDBFile(str(PRODUCT_PDB)).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    assert np.allclose(solute[:6], product) and np.array_equal(solute[6:], start[6:])
    whole = tmp_path / "whole.pdb"
    with open(whole, "w") as handle:
        app.PDBFile.writeFile(top, solute * unit.nanometer, handle)
    assert np.allclose(read_endpoint(whole, top, start), solute, atol=1e-4)
    stranger = tmp_path / "stranger.pdb"
    stranger.write_text(PRODUCT_PDB.read_text().replace(" H1  FMD", " HX  FMD"))
    with pytest.raises(InputError, match="HX of FMD 1"):
        read_endpoint(stranger, top, start)
    with pytest.raises(InputError, match="does not exist"):
        read_endpoint(tmp_path / "missing.pdb", top, start)


def test_relax_band_needs_three_images():
    with pytest.raises(InputError, match="at least 3"):
        relax_band(FunctionModel(muller_brown, 1), np.array([MB_A, MB_B]), fmax=1.0, spring=1.0)


SOLVATED = """
system: {{example: formamide, box_size_nm: 2.0}}
qm: {{atoms: resname FMD, charge: 0, multiplicity: 1, method: hf, basis: 3-21g, options: {{conv_tol: 1e-8}}}}
protocol:
  type: neb
  product: {product}
  n_images: 5
  environment: restrained
  freeze_beyond_nm: 0.5
  endpoint_fmax_kjmol_nm: 300
  fmax_kjmol_nm: 50
  max_iterations: {iterations}
  ts_refine: true
  ts_max_steps: 1
output: out
"""


@pytest.mark.slow
def test_solvated_neb_under_mpirun_runs_end_to_end_and_resumes(tmp_path):
    """The same reaction in TIP3P water (QM/MM), mpirun -n 2: endpoints one per rank, images shared,
    files written; a rerun with more iterations continues from the last one."""
    protocol = tmp_path / "neb.yaml"
    for iterations, resumed in ((4, 0), (7, 4)):
        protocol.write_text(SOLVATED.format(product=PRODUCT_PDB, iterations=iterations))
        run = mpirun(sys.executable, "-m", "bioqmmm.cli", "run", str(protocol), "--no-progress", timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        result = json.loads((tmp_path / "out" / "result.json").read_text())
        assert result["protocol"] == "neb" and result["n_atoms"] > 600 and result["n_qm_atoms"] == 6
        assert result["iterations"] == iterations and result["resumed_from_iteration"] == resumed
        assert len(result["energies"]["value"]) == 5 and result["energies"]["value"][0] == 0.0
        assert 100 < result["barrier_forward"]["value"] < 600
        assert len(result["ts_refinement"]["lowest_frequencies"]["value"]) == 6  # Hessians shared by the ranks
        if not resumed:  # the endpoints ran one per rank (a rerun finds them done)
            endpoints = json.loads((tmp_path / "out" / "endpoints" / "replicas.json").read_text())
            assert endpoints["ranks"] == 2 and {r["rank"] for r in endpoints["replicas"].values()} == {0, 1}
    assert (tmp_path / "out" / "images.pdb").read_text().count("MODEL") == 5
    for name in ("images.dcd", "ts.pdb", "profile.png", "profile.csv", "neb_history.csv", "summary.txt"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_failure_on_one_rank_stops_every_rank_naming_the_image():
    run = mpirun(sys.executable, str(Path(__file__).parent / "mpi_neb_failure.py"), str(PRODUCT_PDB))
    assert run.returncode != 0
    lines = [line for line in run.stdout.splitlines() if "SCF did not converge" in line]
    assert {line.split(" of ")[0] for line in lines} == {"rank 0", "rank 1"}
    for line in lines:  # both ranks name the image that failed on rank 1
        image = line.split("image ")[1].split(" ")[0]
        assert f"NEB image {image}: SCF did not converge" in line


def test_product_driven_from_the_reactant_is_the_shipped_product(gas_formamide, tmp_path):
    """Restrained stages O–H1 → 0.097 nm, N–H1 → 0.235 nm, then an unrestrained optimisation, land in
    the same minimum as the shipped formamidic acid (HF/3-21G)."""

    qmmm, reactant, product = gas_formamide
    pairs, targets = [(1, 4), (2, 4)], [0.097, 0.235]
    settings = OptimizeSettings(fmax_kjmol_nm=10.0)
    driven = drive(qmmm, reactant, pairs, targets, 5e4, settings, tmp_path / "drive")
    assert np.allclose(distances(driven, np.array(pairs)), targets, atol=0.01)
    final = run_optimization(qmmm, driven, settings, tmp_path / "opt", progress=False)
    assert final.converged
    shipped, _ = qmmm.energy_and_forces(product)
    assert final.final_energy == pytest.approx(shipped, abs=0.05)
    assert np.abs(_nearest_copy(product, final.positions, None) - product).max() < 0.003
    with pytest.raises(InputError, match="must be QM atoms"):
        drive(qmmm, reactant, [(1, 9)], [0.1], 5e4, settings, tmp_path / "bad")


@pytest.mark.shared_data
def test_chorismate_protocol_names_real_atoms():
    """The shipped real example validates, and its product distances select one CHO atom each in the
    chorismate mutase snapshot (the reaction coordinate atoms of the classic studies)."""
    config = load_protocol(Path(__file__).resolve().parents[1] / "protocols" / "neb_chorismate.yaml")
    assert config.qm.charge == -2 and config.protocol.n_images == 9
    topology = mdtraj.load(str(shared_pdb("cm_md_ccpbiosim.pdb"))).topology
    for distance in config.protocol.product_distances:
        assert [len(topology.select(selection)) for selection in distance.atoms] == [1, 1]


@pytest.mark.slow
def test_relaxed_environment_moves_only_the_environment_of_interior_images():
    top, system, positions = formamide(box_size=2.0)
    box = np.array(top.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
    reactant = np.array(positions.value_in_unit(unit.nanometer))
    product = read_endpoint(PRODUCT_PDB, top, reactant)
    qmmm = QMMMSystem(top, system, "resname FMD", charge=0, multiplicity=1, engine=PySCFEngine("hf", "sto-3g"))
    neb = NEB(qmmm, reactant, product, n_images=5, interpolation="linear", environment="relaxed",
              freeze_beyond=0.6, relax_every=2, box=box)
    start = neb.initial_path.copy()
    result = neb.run(fmax=1.0, max_iterations=3)
    model = neb.model
    moved = np.linalg.norm(result.positions - start, axis=2)
    assert np.all(moved[[0, -1]] == 0)  # endpoints fixed
    frozen = np.setdiff1d(np.arange(len(reactant)), np.union1d(model.path_atoms, model.environment))
    assert len(frozen) > 100 and np.all(moved[:, frozen] == 0)
    assert np.all(moved[1:-1][:, model.environment].max(axis=1) > 1e-3)  # each interior environment relaxed
    assert np.all(np.isfinite(result.total_energies))


def test_protocol_drives_the_product_and_refines_the_ts(tmp_path):
    """``product_distances`` and ``ts_refine`` through a protocol file (gas phase, HF/STO-3G, short)."""
    protocol = tmp_path / "drive.yaml"
    protocol.write_text("""
system: {example: formamide}
qm: {atoms: all, charge: 0, multiplicity: 1, method: hf, basis: sto-3g}
protocol:
  type: neb
  product_distances:
    - {atoms: ["name O", "name H1"], distance_nm: 0.099}
    - {atoms: ["name N", "name H1"], distance_nm: 0.235}
  n_images: 5
  max_iterations: 2
  ts_refine: true
  ts_max_steps: 2
output: out
""")
    from bioqmmm.run.runner import run_protocol

    record = run_protocol(protocol, progress=False)
    assert (tmp_path / "out" / "endpoints" / "product_drive" / "stage_01").is_dir()
    assert record["iterations"] == 2 and 0 < record["reaction_energy"]["value"] < 200
    refinement = record["ts_refinement"]
    assert refinement["steps"] <= 2 and len(refinement["lowest_frequencies"]["value"]) == 6
    assert (tmp_path / "out" / "ts_climbing_image.pdb").exists()
    protocol.write_text(protocol.read_text().replace("type: neb", "type: neb\n  reactant: missing.pdb"))
    with pytest.raises(InputError, match="missing.pdb does not exist"):
        run_protocol(protocol, progress=False)


def test_unconverged_endpoint_stops_the_run_and_a_longer_rerun_continues_it(tmp_path):
    protocol = tmp_path / "neb.yaml"
    text = f"""
system: {{example: formamide}}
qm: {{atoms: all, charge: 0, multiplicity: 1, method: hf, basis: sto-3g}}
protocol: {{type: neb, product: {PRODUCT_PDB}, n_images: 5, max_iterations: 1, endpoint_max_steps: STEPS}}
output: out
"""
    from bioqmmm.run.runner import run_protocol

    protocol.write_text(text.replace("STEPS", "2"))
    with pytest.raises(InputError, match="did not converge in 2 steps"):
        run_protocol(protocol, progress=False)
    protocol.write_text(text.replace("STEPS", "200"))
    record = run_protocol(protocol, progress=False)
    assert record["iterations"] == 1
    rows = (tmp_path / "out" / "endpoints" / "reactant" / "optimization.csv").read_text().splitlines()
    iterations = [int(float(row.split(",")[0])) for row in rows[1:]]
    assert len(iterations) > 3 and iterations == list(range(len(iterations)))  # one history, continued


def test_endpoints_share_one_partition_and_frozen_atoms_must_coincide():
    from bioqmmm.paths.qmmm_images import partition
    from bioqmmm.protocols.neb import _same_frozen_atoms

    top, system, positions = formamide(box_size=2.0)
    reactant = np.array(positions.value_in_unit(unit.nanometer))
    qmmm = QMMMSystem(top, system, "resname FMD", charge=0, multiplicity=1, engine=PySCFEngine("hf", "sto-3g"))
    path, environment, frozen = partition(qmmm, reactant, 0.0, 0.35)
    assert set(path) == set(range(6)) and len(environment) % 3 == 0 and len(frozen) % 3 == 0  # whole waters
    assert len(path) + len(environment) + len(frozen) == len(reactant)
    moved = reactant.copy()
    moved[frozen[-1], 0] += 0.01
    with pytest.raises(InputError, match=f"frozen atom {frozen[-1]} is 0.0100 nm"):
        _same_frozen_atoms(reactant, moved, frozen, "product.pdb")
