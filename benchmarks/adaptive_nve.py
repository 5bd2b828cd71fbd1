"""Adaptive QM/MM in NVE: energy drift and cost of permuted adaptive partitioning, force interpolation and a
fixed partition on the shipped example.

    python benchmarks/adaptive_nve.py [--ps 2] [--write docs/performance/adaptive_nve.md]
                                      [--figures docs/figures/adaptive]

Runs protocols/adaptive_md.yaml (a GFN2-xTB/MM water in a 20-water cluster, its neighbours adaptive between
0.30 and 0.40 nm) for ``--ps`` picoseconds of Verlet dynamics at 0.5 fs from the same start and velocities
with: the fixed partition (the QM water alone, protocol ``md``), the permuted scheme (as shipped) and force
interpolation; then force interpolation under the Langevin thermostat (1/ps), which is how it must be run.
Drift = slope of a straight line through the total energy, per degree of freedom; evaluations = QM/MM
evaluations per step; cost = wall time per step relative to the fixed partition in this run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import openmm
import xtb
import yaml
from report import protocol_benchmark_arguments, run_variant, work_folder, write_section

from bioqmmm.simulation.reporters import energy_drift, read_rows

ROOT = Path(__file__).resolve().parents[1]


def _fixed_drift(result_dir: Path, dof: int) -> tuple[float, float]:
    rows = read_rows(result_dir / "energies.csv")
    return energy_drift([r["time_ps"] for r in rows], [r["potential_kjmol"] + r["kinetic_kjmol"] for r in rows], dof)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ps", type=float, default=2.0, help="simulated time of each run")
    protocol_benchmark_arguments(parser, "the permuted run's plots")
    args = parser.parse_args()
    work = work_folder(args.work, "adaptive_nve_")
    load = os.getloadavg()[0]
    source = ROOT / "protocols" / "adaptive_md.yaml"
    shipped = yaml.safe_load(source.read_text())["protocol"]
    steps = int(round(args.ps * 1000 / shipped["timestep_fs"]))
    common = {"steps": steps, "checkpoint_interval": steps}
    md = {key: shipped[key] for key in ("timestep_fs", "integrator", "temperature_k", "seed", "report_interval",
                                          "trajectory_interval")}
    fixed, t_fixed = run_variant(source, work, "fixed", protocol={
        "type": "md", **md, **common, "minimize_mm_first": False})
    runs = [("permuted (pap)", "Verlet", *run_variant(source, work, "pap", common)),
            ("interpolation", "Verlet", *run_variant(source, work, "interpolation",
                                                     {**common, "scheme": "interpolation"})),
            ("interpolation", "Langevin 1/ps", *run_variant(source, work, "interpolation_langevin", {
                **common, "scheme": "interpolation", "integrator": "langevin", "friction_per_ps": 1.0}))]
    if args.figures is not None:
        args.figures.mkdir(parents=True, exist_ok=True)
        for name in ("region.png", "energy.png"):
            shutil.copy(work / "pap" / name, args.figures / f"pap_{name}")
        shutil.copy(work / "interpolation" / "energy.png", args.figures / "interpolation_energy.png")

    dof = runs[0][2]["degrees_of_freedom"]
    fixed_drift, fixed_fluctuation = _fixed_drift(work / "fixed", dof)
    fixed_step = fixed["wall_time_per_step"]["value"]
    lines = [
        "## Adaptive QM/MM: NVE drift and cost per step (`benchmarks/adaptive_nve.py`)",
        "",
        f"`python benchmarks/adaptive_nve.py --ps {args.ps:g} --write docs/performance/adaptive_nve.md "
        "--figures docs/figures/adaptive`, "
        f"{time.strftime('%Y-%m-%d')} on {platform.node()} ({os.cpu_count()} cores, load average {load:.2f} at "
        f"start), Python {platform.python_version()}, OpenMM {openmm.__version__}, xtb-python {xtb.__version__}.",
        "",
        f"`protocols/adaptive_md.yaml`: GFN2-xTB/MM water in a 20-water TIP3P cluster, neighbours QM within "
        f"{shipped['r_inner_nm']} nm and MM beyond {shipped['r_outer_nm']} nm of its centre of mass, at most "
        f"{shipped['max_buffer_groups']} groups in the buffer; {args.ps:g} ps at {shipped['timestep_fs']} fs from the "
        f"same start and {shipped['temperature_k']:g} K velocities; {dof} degrees of freedom. Drift: slope of the "
        "total energy; cost: wall time per step relative to the fixed partition in this run.",
        "",
        "| scheme | dynamics | drift (kJ/mol/ns/dof) | RMS fluctuation (kJ/mol) | mean QM + buffer groups | "
        "exchanges | QM/MM evaluations per step | cost |",
        "|---|---|---|---|---|---|---|---|",
        f"| fixed partition (QM water only) | Verlet | {fixed_drift:+.3f} | {fixed_fluctuation:.3f} | 0 | 0 | 1 | "
        "1.0 |",
    ]
    for scheme, dynamics, result, _ in runs:
        drift = result["energy_drift"]["value"]
        fluctuation = result["energy_fluctuation"]["value"]
        drift_text = f"{drift:+.3f}" if dynamics == "Verlet" else "(thermostat)"
        fluctuation_text = f"{fluctuation:.3f}" if dynamics == "Verlet" else "–"
        lines.append(
            f"| {scheme} | {dynamics} | {drift_text} | {fluctuation_text} | "
            f"{result['mean_qm_groups']:.2f} + {result['mean_buffer_groups']:.2f} | {result['exchanges']} | "
            f"{result['evaluations_per_step']['value']:.2f} | "
            f"{result['wall_time_per_step']['value'] / fixed_step:.1f} |")
    langevin = runs[2][2]
    temperatures = np.array([r["temperature_k"] for r in read_rows(work / "interpolation_langevin" / "adaptive.csv")])
    lines += [
        "",
        f"Force interpolation under the thermostat: mean temperature {temperatures.mean():.0f} K "
        f"(target {shipped['temperature_k']:g} K, standard deviation {temperatures.std():.0f} K over "
        f"{len(temperatures)} reports), {langevin['exchanges']} exchanges. Its forces are not the gradient of any "
        "energy, so its NVE drift above is the scheme's, not the integrator's; the permuted scheme's drift is "
        f"to be read against the fixed partition's ({fixed_drift:+.3f}). Wall times: fixed "
        f"{fixed_step * 1e3:.1f} ms per step, {t_fixed:.0f} s for the run.",
        "",
    ]
    write_section(args.write, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
