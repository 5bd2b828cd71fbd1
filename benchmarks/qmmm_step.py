"""Cost of one QM/MM energy+force evaluation relative to the bare QM calculation.

For alanine dipeptide (QM) in cubic TIP3P boxes of increasing size this measures, in one
process and interleaved so machine noise hits both alike:

(a) the floor: a bare gas-phase PySCF energy + nuclear gradient of the QM atoms at the
    engine's settings (cold start);
(b) one cold ``QMMMSystem.energy_and_forces`` call (fresh engine, no warm start);
(c) the ratios (b)/(a) and (engine time)/(a);
(d) SCF cycles per MD step (~2k system) with the engine's extrapolated SCF guess, the previous
    density alone and a cold start.

The far field's error against every charge exact is ``far_field_accuracy.py``'s.

Optionally (``--naive``) the naive approach on the ~20k system: ``pyscf.qmmm.mm_charge``
with every MM charge of the box. ``--write docs/performance.md`` (re)writes the report.

    python benchmarks/qmmm_step.py --method hf --basis sto-3g --sizes 2000      # quick check
    python benchmarks/report.py                                                 # docs/performance.md
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import os
import platform
import pstats
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import openmm
import pyscf
from openmm import app, unit
from pyscf import dft, gto, lib, scf
from pyscf import qmmm as pyscf_qmmm
from report import write_section

from bioqmmm import QMMMSystem
from bioqmmm.examples import alanine_dipeptide
from bioqmmm.qm import PySCFEngine
from bioqmmm.qmmm.embedding import whole_region
from bioqmmm.qmmm.surgery import mm_charges
from bioqmmm.units import BOHR_NM, minimum_image

QM_RESIDUES = ("ACE", "ALA", "NME")
CONV_TOL = 1e-8
GRID_LEVEL = 3
MAX_MEMORY = 4000  # MB, PySCFEngine's default
#: TIP3P waters per nm^3 as packed by ``Modeller.addSolvent`` (measured for 6-8 nm boxes).
WATER_DENSITY = 32.8
NAIVE_TARGET = 20000
MD_TARGET = 2000


# --------------------------------------------------------------------------- systems
def box_edge(target_atoms: int) -> float:
    """Box edge (nm, rounded to 0.1) whose solvated dipeptide has about ``target_atoms`` atoms."""
    n_water = max(target_atoms - 22, 30) / 3.0
    return round((n_water / WATER_DENSITY) ** (1.0 / 3.0), 1)


@dataclass
class Model:
    target: int
    box: float
    topology: app.Topology
    system: openmm.System
    positions: np.ndarray  # nm
    qm_atoms: list[int]
    symbols: list[str]

    @property
    def n_atoms(self) -> int:
        return self.topology.getNumAtoms()


def build_model(target: int) -> Model:
    edge = box_edge(target)
    topology, system, positions = alanine_dipeptide(box_size=edge)
    qm_atoms = [a.index for a in topology.atoms() if a.residue.name in QM_RESIDUES]
    atoms = list(topology.atoms())
    symbols = [atoms[i].element.symbol for i in qm_atoms]
    xyz = np.array(positions.value_in_unit(unit.nanometer))
    return Model(target, edge, topology, system, xyz, qm_atoms, symbols)


def qm_coordinates_bohr(model: Model) -> np.ndarray:
    box = np.array(model.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
    return whole_region(model.positions[model.qm_atoms], box) / BOHR_NM


# --------------------------------------------------------------------------- bare PySCF
def _is_hf(method: str) -> bool:
    return method.lower() in ("hf", "rhf")


def bare_scf(mol: gto.Mole, method: str):
    """The SCF object PySCFEngine builds for a closed-shell molecule, without MM charges."""
    if _is_hf(method):
        return scf.RHF(mol)
    mf = dft.RKS(mol)
    mf.xc = method
    mf.grids.level = GRID_LEVEL
    return mf.density_fit()


def make_mol(symbols: list[str], coords_bohr: np.ndarray, basis: str) -> gto.Mole:
    return gto.M(atom=[(s, tuple(x)) for s, x in zip(symbols, coords_bohr, strict=True)], unit="Bohr",
                 basis=basis, charge=0, spin=0, verbose=0, max_memory=MAX_MEMORY)


def _energy_and_gradient(mf, method: str):
    """Converge ``mf`` at CONV_TOL and compute its nuclear gradient (DFT grid response on); return the gradient."""
    mf.conv_tol = CONV_TOL
    mf.kernel()
    if not mf.converged:
        raise RuntimeError("benchmark SCF did not converge")
    grad = mf.nuc_grad_method()
    if not _is_hf(method):
        grad.grid_response = True
    grad.kernel()
    return grad


def run_floor(symbols, coords_bohr, method: str, basis: str) -> tuple[float, int]:
    """Gas-phase energy + nuclear gradient, cold start. Returns (seconds, SCF cycles)."""
    start = time.perf_counter()
    mol = make_mol(symbols, coords_bohr, basis)
    mf = bare_scf(mol, method)
    _energy_and_gradient(mf, method)
    return time.perf_counter() - start, int(mf.cycles)


def run_naive(model: Model, method: str, basis: str) -> tuple[float, int, int]:
    """``pyscf.qmmm.mm_charge`` with every MM charge (minimum image about the QM centroid).

    Energy + QM gradient + MM-charge gradient. Returns (seconds, SCF cycles, n charges).
    """
    charges = mm_charges(model.system)
    qm = set(model.qm_atoms)
    mm_idx = np.array([i for i in np.flatnonzero(charges) if i not in qm])
    box = np.array(model.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
    coords = qm_coordinates_bohr(model)
    center_nm = coords.mean(axis=0) * BOHR_NM
    mm_nm = center_nm + minimum_image(model.positions[mm_idx] - center_nm, box)
    start = time.perf_counter()
    mol = make_mol(model.symbols, coords, basis)
    mf = pyscf_qmmm.mm_charge(bare_scf(mol, method), mm_nm / BOHR_NM, charges[mm_idx], unit="Bohr")
    grad = _energy_and_gradient(mf, method)
    dm = mf.make_rdm1()
    grad.grad_hcore_mm(dm) + grad.grad_nuc_mm()
    return time.perf_counter() - start, int(mf.cycles), len(mm_idx)


# --------------------------------------------------------------------------- QM/MM
@dataclass
class QMMMSample:
    total: float  # energy_and_forces wall time, s
    engine: float  # engine wall time (QMInfo.wall_time), s
    embedding: float  # kernel time outside the engine (embedding layer), s
    cycles: int
    n_exact: int
    setup: float  # QMMMSystem + Context construction, s (not part of the step)


def make_engine(method: str, basis: str, **options) -> PySCFEngine:
    return PySCFEngine(method, basis, conv_tol=CONV_TOL, **options)


def make_qmmm(model: Model, engine: PySCFEngine) -> QMMMSystem:
    return QMMMSystem(model.topology, model.system, model.qm_atoms, charge=0, multiplicity=1, engine=engine)


def run_qmmm(model: Model, method: str, basis: str, profile: cProfile.Profile | None = None) -> QMMMSample:
    """One cold QMMMSystem.energy_and_forces call (fresh engine and system)."""
    start = time.perf_counter()
    qmmm = make_qmmm(model, make_engine(method, basis))
    # The OpenMM Context is built lazily by the first call; build it here so that the timed
    # call is one MD-step's worth of work (a one-off setup cost is not a per-step cost).
    qmmm._get_context()
    setup = time.perf_counter() - start
    if profile is not None:
        profile.enable()
    start = time.perf_counter()
    qmmm.energy_and_forces(model.positions)
    total = time.perf_counter() - start
    if profile is not None:
        profile.disable()
    last = qmmm.last_qm
    return QMMMSample(total, last.qm.info.wall_time, qmmm.kernel.overhead, last.qm.info.scf_cycles,
                      last.n_exact_charges, setup)


@dataclass
class SizeResult:
    target: int
    box: float
    n_atoms: int
    n_qm: int
    n_mm_charges: int
    floor: list[tuple[float, int]] = field(default_factory=list)
    qmmm: list[QMMMSample] = field(default_factory=list)

    @property
    def floor_s(self) -> float:
        return min(t for t, _ in self.floor)

    @property
    def qmmm_s(self) -> float:
        return min(s.total for s in self.qmmm)

    @property
    def engine_s(self) -> float:
        return min(s.engine for s in self.qmmm)

    @property
    def overhead_s(self) -> float:
        return min(s.total - s.engine for s in self.qmmm)

    @property
    def overhead_fraction(self) -> float:
        """Coupling overhead (wall time outside the engine) as a fraction of the step, best repeat."""
        return min((s.total - s.engine) / s.total for s in self.qmmm)

    @property
    def embedding_s(self) -> float:
        return min(s.embedding for s in self.qmmm)

    @property
    def n_exact(self) -> int:
        return self.qmmm[-1].n_exact

    @property
    def ratio(self) -> float:
        return self.qmmm_s / self.floor_s

    @property
    def engine_ratio(self) -> float:
        return self.engine_s / self.floor_s


def measure_size(model: Model, args, profile_dir: Path | None) -> SizeResult:
    charges = mm_charges(model.system)
    qm = set(model.qm_atoms)
    n_mm = sum(1 for i in np.flatnonzero(charges) if i not in qm)
    result = SizeResult(model.target, model.box, model.n_atoms, len(model.qm_atoms), n_mm)
    coords = qm_coordinates_bohr(model)
    for repeat in range(args.repeats):
        result.floor.append(run_floor(model.symbols, coords, args.method, args.basis))
        result.qmmm.append(run_qmmm(model, args.method, args.basis))
        f, s = result.floor[-1], result.qmmm[-1]
        log(f"  repeat {repeat + 1}: floor {f[0]:.2f} s ({f[1]} cycles), QM/MM {s.total:.2f} s "
            f"(engine {s.engine:.2f} s, embedding {s.embedding:.3f} s, {s.cycles} cycles, "
            f"{s.n_exact} exact charges; setup {s.setup:.1f} s untimed)")
    if profile_dir is not None:
        profile = cProfile.Profile()
        run_qmmm(model, args.method, args.basis, profile)
        profile_dir.mkdir(parents=True, exist_ok=True)
        path = profile_dir / f"qmmm_{model.target}.prof"
        profile.dump_stats(path)
        log(f"  profile written to {path}")
        log(_profile_summary(profile))
    return result


def _profile_summary(profile: cProfile.Profile, limit: int = 25) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).sort_stats("cumulative")
    stats.print_stats("bioqmmm", limit)
    stats.sort_stats("tottime").print_stats(limit)
    return out.getvalue()


# --------------------------------------------------------------------------- MD warm start
@dataclass
class MDRun:
    setup_cycles: int | None  # SCF cycles of the evaluation setVelocitiesToTemperature triggers, if any
    steps: list[tuple[int, float]]  # (SCF cycles, wall s) per step
    engine_calls: int


#: SCF guess modes of the MD test: engine options and the label in the report.
GUESS_MODES = {
    "extrapolated": ({}, "always-stable predictor, 4 past densities (default)"),
    "previous": ({"density_history": 1}, "previous density only"),
    "cold": ({"warm_start": False}, "cold start every step"),
}


def md_cycles(model: Model, method: str, basis: str, mode: str, steps: int) -> MDRun:
    """SCF cycles and wall time of each of ``steps`` Langevin steps with the stock Simulation."""
    engine = make_engine(method, basis, **GUESS_MODES[mode][0])
    qmmm = make_qmmm(model, engine)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtosecond)
    integrator.setRandomNumberSeed(2024)
    simulation = app.Simulation(qmmm.topology, qmmm.system, integrator, openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(model.positions)
    with qmmm.typed_errors():
        # OpenMM 8.6 evaluates the forces in here: one (cold) QM evaluation before the first step.
        simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 2024)
    setup = qmmm.last_qm.qm.info.scf_cycles if engine.calls else None
    calls0 = engine.calls
    out = []
    for _ in range(steps):
        start = time.perf_counter()
        with qmmm.typed_errors():
            simulation.step(1)
        out.append((qmmm.last_qm.qm.info.scf_cycles, time.perf_counter() - start))
    return MDRun(setup, out, engine.calls - calls0)


# --------------------------------------------------------------------------- reporting
def log(message: str) -> None:
    print(message, flush=True)


def machine_info() -> dict[str, str]:
    model = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        names = [line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")]
        model = names[0] if names else ""
    except OSError:
        pass
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "processor": platform.processor() or platform.machine(),
        "cpu model": model or "unknown",
        "nproc": str(nproc),
        "PySCF threads": str(lib.num_threads()),
        "OS": platform.platform(),
        "load average at start": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "Python": platform.python_version(),
        "OpenMM": openmm.__version__,
        "PySCF": pyscf.__version__,
        "numpy": np.__version__,
    }


def size_table(results: list[SizeResult]) -> list[str]:
    rows = [
        "| atoms | box (nm) | MM charges | seen exactly | floor (s) | QM/MM (s) | ratio | engine-only ratio "
        "| overhead (s) | overhead, % of step | of which embedding (s) | SCF cycles floor / QM/MM |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r.n_atoms} | {r.box:.1f} | {r.n_mm_charges} | {r.n_exact} | {r.floor_s:.2f} | {r.qmmm_s:.2f} "
            f"| {r.ratio:.2f} | {r.engine_ratio:.2f} | {r.overhead_s:.3f} | {100 * r.overhead_fraction:.1f} "
            f"| {r.embedding_s:.3f} "
            f"| {r.floor[-1][1]} / {r.qmmm[-1].cycles} |"
        )
    return rows


def md_table(md: dict[str, MDRun]) -> list[str]:
    rows = [
        "| SCF guess | setup evaluation | SCF cycles per step | mean cycles/step | mean cycles, steps 2+ "
        "| engine calls | mean s/step |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for mode, run in md.items():
        cycles = [c for c, _ in run.steps]
        later = f"{np.mean(cycles[1:]):.1f}" if len(cycles) > 1 else "-"
        setup = "-" if run.setup_cycles is None else str(run.setup_cycles)
        rows.append(f"| {GUESS_MODES[mode][1]} | {setup} | {' '.join(map(str, cycles))} | {np.mean(cycles):.1f} "
                    f"| {later} | {run.engine_calls} | {np.mean([t for _, t in run.steps]):.2f} |")
    return rows


EXPLANATION = """\
### What the numbers mean

The **floor** is what the QM part costs with no MM environment at all: a bare, cold-start
PySCF energy + nuclear gradient of the same QM atoms, at the engine's settings (same
functional, basis, grid level 3, density fitting for DFT, `conv_tol` 1e-8, grid response
in the gradient), built directly with `pyscf.gto`/`pyscf.dft`. No QM/MM code can beat it.

**QM/MM** is one cold `QMMMSystem.energy_and_forces(positions)` call: fresh engine (no
density guess), the OpenMM Context already built. It includes the MM force field (PME) on
the whole box, the embedding layer (minimum-image QM region, selection of the exactly
treated charges, switching, the Ewald far field and its gradients) and the engine call
(SCF in the field of the near charges and the far-field polynomial, QM and MM-charge
gradients, potentials at switched charges, multipoles).

* **ratio** = QM/MM / floor: the price of the environment, per step. The targets are
  **<= 1.15 at ~20k atoms and <= 1.25 at ~100k**. For comparison, the naive approach -- handing every MM charge
  of the box to `pyscf.qmmm.mm_charge` (energy, QM gradient and MM-charge gradient) -- costs
  {naive}; its extra cost is proportional to the number of charges, so it grows with the box,
  while the embedding keeps the exactly treated charges at those within 1.2 nm.
* **engine-only ratio** = engine wall time / floor: the QM side of the coupling (one-electron
  integrals over the exact charges, their gradients, and any change in SCF cycle count).
* **overhead** = QM/MM wall time - engine wall time: everything outside PySCF (OpenMM MM
  forces, PythonForce transfer, embedding); *of which embedding* is the part spent in
  bioqmmm's embedding layer (`QMForceKernel.overhead`). Target: **< 2 % of the step at ~20k atoms**.
* **SCF cycles per MD step**: target **<= 5 on average** at `conv_tol` 1e-8 with the default
  (extrapolated) guess; the cold-start count is the reference. The first entry of each row is
  the setup evaluation's (the first step reuses it); *mean s/step* is wall time and moves with
  the machine's load, the cycle counts do not.

Timings are the minimum over the repeats; floor and QM/MM were measured alternately in the
same process. The machine is shared and small, so absolute times are noisy and machine
dependent: **compare ratios, not absolute seconds**, and only ratios from the same run.
Run on an otherwise idle machine (see the load average above): with other jobs sharing the
cores, the same work can take twice as long from one call to the next.
"""


def write_report(path: Path, args, info: dict[str, str], results: list[SizeResult],
                 naive: tuple[SizeResult, tuple[float, int, int]] | None,
                 md: dict[str, MDRun] | None, md_model: Model | None, elapsed: float) -> None:
    """Write this benchmark's section of docs/performance.md (``benchmarks/report.py`` assembles it)."""
    command = "python benchmarks/qmmm_step.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        "## QM/MM step cost against the bare QM calculation",
        "",
        f"* date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"* command: `{command.strip()}` ({elapsed / 60:.1f} min)",
        f"* level of theory: {args.method.upper()}/{args.basis}, conv_tol {CONV_TOL:g}"
        f"{'' if _is_hf(args.method) else f', grid level {GRID_LEVEL}, density fitting, grid response'}",
        f"* system: alanine dipeptide (QM: residues {'/'.join(QM_RESIDUES)}, {results[0].n_qm} atoms, "
        "charge 0, singlet) in a cubic TIP3P box (amber14, PME 0.9 nm), default `PeriodicEmbedding` "
        "(exact charges within 1.2 nm)",
    ]
    lines += [f"* {k}: {v}" for k, v in info.items()]
    lines += ["", f"### Cost of one energy+force evaluation (minimum over {args.repeats} repeats)", ""]
    lines += size_table(results)
    if naive is not None:
        res, (seconds, cycles, n_charges) = naive
        lines += [
            "",
            f"Naive comparison ({res.n_atoms} atoms, one run): `pyscf.qmmm.mm_charge` with all {n_charges} MM "
            f"charges: {seconds:.2f} s ({cycles} SCF cycles) = **{seconds / res.floor_s:.2f}x** the floor, "
            f"against {res.ratio:.2f}x for bioqmmm.",
        ]
    if md is not None and md_model is not None:
        lines += [
            "",
            f"### SCF cycles per MD step ({md_model.n_atoms} atoms)",
            "",
            "`LangevinMiddleIntegrator` (300 K, 1/ps, 0.5 fs) with the stock `openmm.app.Simulation` on the "
            "QMMMSystem's `.system` (CPU platform), velocities from `setVelocitiesToTemperature`; cycles read "
            "from `qmmm.last_qm.qm.info.scf_cycles` after each step, `conv_tol` 1e-8.",
            "",
            "*Setup evaluation*: `setVelocitiesToTemperature` evaluates the forces (observed with OpenMM "
            f"{openmm.__version__}), so one cold QM evaluation can happen before the first step. "
            "*Mean cycles, steps 2+* is the steady-state figure: every one of those steps is a new geometry.",
            "",
        ]
        lines += md_table(md)
    naive_text = ("the ratio given below the table (`--naive`)" if naive is None else
                  f"**{naive[1][0] / naive[0].floor_s:.2f}x** the floor at {naive[0].n_atoms} atoms in this run")
    lines += ["", EXPLANATION.format(naive=naive_text)]
    write_section(path, lines)


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 100000], help="target atom counts")
    parser.add_argument("--method", default="b3lyp", help="hf or a DFT functional (default b3lyp)")
    parser.add_argument("--basis", default="6-31g*")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per size; the minimum is reported")
    parser.add_argument("--md-steps", type=int, nargs=3, default=[50, 10, 5],
                        metavar=("EXTRAPOLATED", "PREVIOUS", "COLD"), help="MD steps with each SCF guess (0 skips one)")
    parser.add_argument("--naive", action="store_true",
                        help=f"also time pyscf.qmmm.mm_charge with all MM charges on the ~{NAIVE_TARGET}-atom box")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="cProfile one extra QM/MM call per size, write DIR/qmmm_<size>.prof and print a summary")
    parser.add_argument("--write", type=Path, metavar="FILE", help="write the markdown report (docs/performance.md)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    info = machine_info()
    log("  ".join(f"{k}: {v}" for k, v in info.items()))
    log(f"level: {args.method}/{args.basis}, conv_tol {CONV_TOL:g}, repeats {args.repeats}")
    models: dict[int, Model] = {}

    def model_for(target: int) -> Model:
        if target not in models:
            models[target] = build_model(target)
            m = models[target]
            log(f"built ~{target}: box {m.box:.1f} nm, {m.n_atoms} atoms, {len(m.qm_atoms)} QM atoms")
        return models[target]

    results = []
    for target in args.sizes:
        model = model_for(target)
        log(f"size ~{target} ({model.n_atoms} atoms)")
        results.append(measure_size(model, args, args.profile))
        if target not in (MD_TARGET, NAIVE_TARGET):
            models.pop(target)  # free the memory of boxes not needed again

    naive = None
    if args.naive:
        target = min(args.sizes, key=lambda s: abs(s - NAIVE_TARGET))
        res = next(r for r in results if r.target == target)
        log(f"naive mm_charge, all charges (~{target}, {res.n_atoms} atoms)")
        naive = (res, run_naive(model_for(target), args.method, args.basis))
        log(f"  {naive[1][0]:.2f} s, {naive[1][1]} cycles, {naive[1][2]} charges: "
            f"{naive[1][0] / res.floor_s:.2f}x the floor")

    md = md_model = None
    if any(args.md_steps):
        md_model = model_for(MD_TARGET)
        md = {}
        for mode, steps in zip(GUESS_MODES, args.md_steps, strict=True):
            if steps:
                log(f"MD, {steps} steps, SCF guess {mode} ({md_model.n_atoms} atoms)")
                md[mode] = md_cycles(md_model, args.method, args.basis, mode, steps)
                log(f"  setup evaluation {md[mode].setup_cycles} cycles; per step {[c for c, _ in md[mode].steps]} "
                    f"({md[mode].engine_calls} engine calls)")

    elapsed = time.perf_counter() - t0
    log("")
    log("\n".join(size_table(results)))
    if naive is not None:
        log(f"naive all-charges mm_charge at {naive[0].n_atoms} atoms: {naive[1][0] / naive[0].floor_s:.2f}x the floor")
    if md is not None:
        log("\n".join(md_table(md)))
    log(f"total {elapsed / 60:.1f} min")
    if args.write:
        write_report(args.write, args, info, results, naive, md, md_model, elapsed)
        log(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
