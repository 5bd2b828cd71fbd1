"""Peak resident memory of a 100k-atom DFT/MM step and of a 36-window free-energy profile.

    python benchmarks/memory.py [--atoms 100000] [--method b3lyp --basis 6-31g*] [--samples 40 160]
                                [--write docs/performance/memory.md]

Every measurement runs in a process of its own and reports that process's peak resident set size
(``os.wait4``'s ``ru_maxrss``), so no measurement inherits another's peak:

* *step*: the alanine dipeptide (22 QM atoms) in a TIP3P box of ``--atoms`` atoms, one cold
  ``QMMMSystem.energy_and_forces`` (periodic embedding, OpenMM CPU platform);
* *MM only*: the same model and Context, the MM energy and forces alone (no QM force evaluated);
* *floor*: the bare PySCF energy + gradient of the same QM atoms (no MM anywhere);
* *pmf*: ``bioqmmm run`` of a 36-window umbrella profile of the dipeptide in a 2.4 nm TIP3P box (MM
  sampling, HF/STO-3G side chain reweighting target) with each of ``--samples`` samples per window.
  The samples' positions stay in their chunk files and are read one chunk at a time
  (``bioqmmm.sampling.windows.ChunkedFrames``), so the peak should not grow with the samples; the
  table gives what holding every window's frames would take for comparison.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from report import write_section

ROOT = Path(__file__).resolve().parents[1]

PMF_FILE = """\
system:
  example: alanine_dipeptide
  box_size_nm: 2.4
qm:
  sidechains: [ALA2]
  charge: 0
  multiplicity: 1
  method: hf
  basis: sto-3g
protocol:
  type: pmf
  coordinate:
    kind: dihedral
    atoms: ["resid 0 and name C", "resid 1 and name N", "resid 1 and name CA", "resid 1 and name C"]
  cheap: mm
  windows:
    range: [-3.14159265, 3.14159265]
    count: 36
    force_constant: 300
    samples: {samples}
    sample_interval: 10
    equilibration_steps: 100
  seed: 2026
  checkpoint_interval: 20
output: out
"""


def child(kind: str, args) -> None:
    """One measurement, in this (child) process."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from qmmm_step import build_model, make_engine, make_qmmm, qm_coordinates_bohr, run_floor

    model = build_model(args.atoms)
    if kind == "floor":
        run_floor(model.symbols, qm_coordinates_bohr(model), args.method, args.basis)
        return
    qmmm = make_qmmm(model, make_engine(args.method, args.basis))
    if kind == "mm":
        import openmm

        context = openmm.Context(qmmm.system, openmm.VerletIntegrator(0.001),
                                 openmm.Platform.getPlatformByName("CPU"))
        context.setPositions(model.positions)
        groups = {f.getForceGroup() for f in qmmm.system.getForces()} - {qmmm.qm_force_group}
        context.getState(getEnergy=True, getForces=True, groups=groups)
        return
    qmmm.energy_and_forces(model.positions)


def measure(command: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of ``command`` run to completion in a child process."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a chatty child cannot fill it and block
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            errors.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed: {errors.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024.0, wall  # Linux: KiB


def pmf_frames(folder: Path) -> tuple[int, int]:
    """(samples recorded over all windows, atoms per frame) of a pmf run folder."""
    import numpy as np

    total, atoms = 0, 0
    for chunk in folder.glob("windows/*/samples_*.npz"):
        with np.load(chunk) as data:
            total += len(data["s"])
            atoms = data["positions"].shape[1]
    return total, atoms


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--atoms", type=int, default=100000)
    parser.add_argument("--method", default="b3lyp")
    parser.add_argument("--basis", default="6-31g*")
    parser.add_argument("--samples", type=int, nargs="+", default=[40, 160])
    parser.add_argument("--write", type=Path)
    parser.add_argument("--child", choices=["step", "mm", "floor"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args)
        return 0
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    me = [sys.executable, str(Path(__file__).resolve()), "--atoms", str(args.atoms), "--method", args.method,
          "--basis", args.basis]
    step = {kind: measure([*me, "--child", kind]) for kind in ("mm", "floor", "step")}
    for kind, (rss, wall) in step.items():
        print(f"{kind}: {rss:.0f} MiB, {wall:.0f} s", flush=True)
    pmf = []
    with tempfile.TemporaryDirectory() as work:
        for samples in args.samples:
            folder = Path(work) / f"pmf_{samples}"
            folder.mkdir()
            (folder / "pmf.yaml").write_text(PMF_FILE.format(samples=samples))
            rss, wall = measure([sys.executable, "-m", "bioqmmm.cli", "run", "pmf.yaml", "--no-progress"], folder)
            frames, atoms = pmf_frames(folder / "out")
            pmf.append((samples, frames, atoms, rss, wall))
            print(pmf[-1], flush=True)
    lines = section(args, step, pmf, load)
    print("\n".join(lines))
    write_section(args.write, lines)
    return 0


def section(args, step: dict[str, tuple[float, float]], pmf: list[tuple], load: str) -> list[str]:
    import openmm
    import pyscf

    level = f"{args.method.upper()}/{args.basis}"
    mm, floor, full = (step[k][0] for k in ("mm", "floor", "step"))
    lines = [
        "## Peak memory: a 100k-atom DFT/MM step and a 36-window profile",
        "",
        f"Generated by `python benchmarks/memory.py {' '.join(sys.argv[1:])}` on "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC} ({platform.machine()}, "
        f"{os.cpu_count()} cores, load average {load} at start), Python {platform.python_version()}, "
        f"OpenMM {openmm.__version__}, PySCF {pyscf.__version__}. Peak resident set size of one process per "
        "measurement (`ru_maxrss`).",
        "",
        f"### One cold {level} QM/MM energy + forces, alanine dipeptide (22 QM atoms) in TIP3P, {args.atoms} "
        "target atoms",
        "",
        "| process | peak RSS (MiB) | wall (s) |",
        "|---|---:|---:|",
        f"| model + OpenMM Context, MM energy and forces only | {mm:.0f} | {step['mm'][1]:.0f} |",
        f"| floor: bare PySCF energy + gradient of the QM atoms | {floor:.0f} | {step['floor'][1]:.0f} |",
        f"| QM/MM step (model, Context, embedding, engine) | {full:.0f} | {step['step'][1]:.0f} |",
        "",
        f"The QM/MM step's peak is {full - mm:.0f} MiB above the MM-only process's; the bare QM calculation "
        f"peaks at {floor:.0f} MiB on its own (the Python interpreter and the libraries counted in both).",
        "",
        "### 36-window umbrella profile (MM sampling, HF/STO-3G side chain reweighting, 2.4 nm TIP3P box)",
        "",
        "| samples per window | frames recorded | atoms | peak RSS (MiB) | all frames held in memory would add "
        "(MiB) | wall (s) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for samples, frames, atoms, rss, wall in pmf:
        lines.append(f"| {samples} | {frames} | {atoms} | {rss:.0f} | {frames * atoms * 12 / 2**20:.0f} "
                     f"| {wall:.0f} |")
    growth = pmf[-1][3] - pmf[0][3]
    lines += [
        "",
        textwrap.fill(
            f"From {pmf[0][1]} to {pmf[-1][1]} frames the peak changes by {growth:+.0f} MiB: the positions of the "
            "samples stay in their chunk files and the reweighting reads them one chunk at a time, so memory "
            "does not grow with the number of frames (what still grows is a few numbers per frame: s, the "
            "energies of each level).", width=110),
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
