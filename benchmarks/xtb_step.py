"""Cost of a GFN2-xTB/MM MD step against its floor, and the far-field error of the xTB path.

For alanine dipeptide (22 QM atoms, GFN2-xTB) in cubic TIP3P boxes of increasing size this measures, in
one process:

(a) the floor: a bare gas-phase xtb energy + gradient of the QM atoms (xtb-python, warm-started along
    small displacements, as in MD) plus a bare OpenMM MD step of the whole box (no QM force);
(b) a QM/MM MD step (Langevin, 0.5 fs, CPU platform, periodic embedding), warm;
(c) the ratio (b)/(a) and the simulated ps per day of (b);
(d) with ``--far-field``: on the ~20k system, the error of the default embedding (1.2 nm switched near
    field + icosahedral far field) against the reference with every MM charge of the minimum-image cell
    exact (cutoff L/2).

    python benchmarks/xtb_step.py --sizes 2000                    # quick check
    python benchmarks/report.py --only xtb_step                   # docs/performance.md
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import openmm
from openmm import unit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qmmm_step import Model, build_model, log, machine_info, qm_coordinates_bohr  # noqa: E402
from report import write_section  # noqa: E402

from bioqmmm import QMMMSystem  # noqa: E402
from bioqmmm.qm import XTBEngine  # noqa: E402
from bioqmmm.qm.base import atomic_number  # noqa: E402
from bioqmmm.qmmm.embedding import PeriodicEmbedding  # noqa: E402
from bioqmmm.qmmm.surgery import mm_charges  # noqa: E402

TIMESTEP_PS = 0.0005
#: A published GFN2-xTB/MM peer: 0.55 s per MD step for a 25,800-atom lysozyme system (issue 19's figure).
PEER_S_PER_STEP = 0.55
TARGET_RATIO = 1.3


def _integrator() -> openmm.Integrator:
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1.0 / unit.picosecond, TIMESTEP_PS)
    integrator.setRandomNumberSeed(2026)
    return integrator


def _time_steps(system: openmm.System, positions: np.ndarray, steps: int, warmup: int) -> float:
    """Seconds per MD step of ``system`` on the CPU platform after ``warmup`` steps."""
    context = openmm.Context(system, _integrator(), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 2026)
    context.getIntegrator().step(warmup)
    start = time.perf_counter()
    context.getIntegrator().step(steps)
    return (time.perf_counter() - start) / steps


def bare_xtb(model: Model, calls: int) -> float:
    """Seconds per gas-phase GFN2-xTB energy + gradient of the QM atoms, warm-started like MD."""
    from xtb.interface import Calculator, Param
    from xtb.libxtb import VERBOSITY_MUTED

    numbers = np.array([atomic_number(s) for s in model.symbols])
    xyz = qm_coordinates_bohr(model)
    rng = np.random.default_rng(1)
    calc = Calculator(Param.GFN2xTB, numbers, xyz)
    calc.set_verbosity(VERBOSITY_MUTED)
    res = calc.singlepoint()
    start = time.perf_counter()
    for _ in range(calls):
        calc.update(xyz + rng.normal(scale=2e-3, size=xyz.shape))
        res = calc.singlepoint(res)
        res.get_gradient()
    return (time.perf_counter() - start) / calls


def measure(model: Model, steps: int) -> dict[str, float]:
    log(f"{model.n_atoms} atoms (box {model.box} nm)")
    floor_xtb = bare_xtb(model, 4 * steps)
    mm_step = _time_steps(model.system, model.positions, steps, warmup=5)
    qmmm = QMMMSystem(model.topology, model.system, model.qm_atoms, charge=0, multiplicity=1,
                      engine=XTBEngine("gfn2"), embedding=PeriodicEmbedding())
    qmmm_step = _time_steps(qmmm.system, model.positions, steps, warmup=5)
    result = {"atoms": model.n_atoms, "exact": qmmm.last_qm.n_exact_charges, "xtb": floor_xtb, "mm": mm_step,
              "qmmm": qmmm_step, "engine": qmmm.last_qm.qm.info.wall_time}
    log(f"  bare xtb {floor_xtb:.4f} s, MM step {mm_step:.4f} s, xTB/MM step {qmmm_step:.4f} s")
    return result


def far_field_error(model: Model) -> dict[str, float]:
    """Default embedding against every MM charge of the minimum-image cell exact (cutoff L/2)."""
    results = {}
    for name, embedding in (("default", PeriodicEmbedding()), ("reference", PeriodicEmbedding(cutoff=0.5 * model.box))):
        qmmm = QMMMSystem(model.topology, model.system, model.qm_atoms, charge=0, multiplicity=1,
                          engine=XTBEngine("gfn2", accuracy=1e-4), embedding=embedding, platform="Reference")
        energy, forces = qmmm.energy_and_forces(model.positions)
        results[name] = (energy, forces, qmmm.last_qm.n_exact_charges, qmmm.last_qm.far_field_energy)
    (e0, f0, n0, far0), (e1, f1, n1, _) = results["default"], results["reference"]
    qm = np.array(model.qm_atoms)
    charged = np.setdiff1d(np.flatnonzero(mm_charges(model.system)), qm)
    diff = np.linalg.norm(f0 - f1, axis=1)
    return {"atoms": model.n_atoms, "n_default": n0, "n_reference": n1, "cutoff": 0.5 * model.box, "dE": e0 - e1,
            "far": far0, "rms_qm": float(np.sqrt(np.mean(diff[qm] ** 2))),
            "rms_mm": float(np.sqrt(np.mean(diff[charged] ** 2))), "max_mm": float(diff[charged].max())}


def report(args, info: dict[str, str], rows: list[dict[str, float]], far: dict[str, float] | None) -> list[str]:
    from importlib.metadata import version

    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## GFN2-xTB/MM MD step",
        "",
        f"Generated by `python benchmarks/xtb_step.py {shlex.join(sys.argv[1:])}` on {when}: "
        f"{info['cpu model']}, {info['nproc']} cores, Python {info['Python']}, OpenMM {info['OpenMM']}, "
        f"xtb-python {version('xtb')} (libxtb 6.5.1). Alanine dipeptide, all 22 atoms GFN2-xTB "
        "(xtb defaults: accuracy 1, 300 K), in TIP3P; periodic embedding (1.2 nm switched near field, receding "
        f"switched charges, icosahedral far field); Langevin, {TIMESTEP_PS * 1000:g} fs, OpenMM CPU platform; "
        f"{args.steps} timed steps after 5. The floor is a bare gas-phase xtb energy + gradient of the region "
        "(warm-started) plus a bare OpenMM MD step of the whole box.",
        "",
        "| atoms | near-field charges | bare xtb (s) | bare MM step (s) | xTB/MM step (s) | of which the xtb call (s) "
        "| ratio to floor | ps/day |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["qmmm"] / (r["xtb"] + r["mm"])
        ps_day = TIMESTEP_PS * 86400.0 / r["qmmm"]
        lines.append(f"| {r['atoms']} | {r['exact']} | {r['xtb']:.4f} | {r['mm']:.4f} | {r['qmmm']:.4f} | "
                     f"{r['engine']:.4f} | {ratio:.2f} | {ps_day:.0f} |")
    big = [r for r in rows if r["atoms"] >= 15000]
    if big:
        r = big[0]
        ratio = r["qmmm"] / (r["xtb"] + r["mm"])
        rest = r["qmmm"] - r["engine"] - r["mm"]
        lines += ["", f"Target at ~20k atoms: ratio <= {TARGET_RATIO}; measured {ratio:.2f} "
                  f"({'met' if ratio <= TARGET_RATIO else 'not met'}). Beyond the xtb call and the MM step, "
                  f"{rest:.3f} s of the step is the embedding outside the engine (near-field selection and "
                  "switching, the far field's particle-mesh Ewald sums and their gradients, force assembly)."]
        speedup = PEER_S_PER_STEP / r["qmmm"]
        lines += ["", f"At {r['atoms']} atoms a step takes {r['qmmm']:.3f} s: {speedup:.1f}x faster "
                  f"than the {PEER_S_PER_STEP} s per GFN2-xTB/MM step a published peer reports for a 25,800-atom "
                  "lysozyme system (different QM region and machine; indicative only)."]
    if far is not None:
        lines += [
            "",
            f"Far-field error on the {far['atoms']}-atom box (GFN2-xTB, accuracy 1e-4): default embedding "
            f"({far['n_default']} exact charges) against every MM charge of the minimum-image cell exact (cutoff "
            f"{far['cutoff']:.2f} nm, {far['n_reference']} charges): energy {far['dE']:+.4f} kJ/mol (far-field term "
            f"{far['far']:+.4f} kJ/mol); RMS force error {far['rms_qm']:.4f} kJ/mol/nm on QM atoms, "
            f"{far['rms_mm']:.5f} on MM atoms (largest {far['max_mm']:.4f}).",
        ]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 100000])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--far-field", action="store_true")
    parser.add_argument("--write", type=Path, default=None, help="markdown section to (re)write")
    args = parser.parse_args(argv)
    info = machine_info()
    models = {size: build_model(size) for size in args.sizes}
    rows = [measure(models[size], args.steps) for size in args.sizes]
    far = None
    if args.far_field:
        size = min(args.sizes, key=lambda s: abs(s - 20000))
        far = far_field_error(models[size])
    lines = report(args, info, rows, far)
    print("\n".join(lines))
    write_section(args.write, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
