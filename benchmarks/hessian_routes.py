"""Cost and agreement of the QM/MM Hessian routes: partial, condensed (MM or QM/MM products) and full.

    python benchmarks/hessian_routes.py [--write docs/performance/hessian_routes.md]
                                        [--figures docs/figures/vibrations] [--work DIR]

Runs protocols/vibrations.yaml (one QM water, HF/STO-3G, in flexible TIP3P; the nearest water flexible)
with ``hessians: [partial, condensed, full]``, then once more with the condensed route's environment
products taken from full QM/MM forces (``environment_hessian: qmmm``, the exact Schur complement of the
QM/MM Hessian). For each route: QM/MM force calls, environment products, wall seconds, and the seconds in
units of the floor = 6 n_A bare PySCF gradients of the QM water in the same MM point charges (the cost of
the QM part of a difference Hessian, timed here on the optimised structure); and the three modes most
localised on the QM water. Copies the runs' spectrum plot to ``--figures``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import openmm
import pyscf
from report import protocol_benchmark_arguments, run_variant, work_folder, write_section

from bioqmmm.vibrations.active import monoisotopic_masses
from bioqmmm.vibrations.analysis import normal_modes

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "protocols" / "vibrations.yaml"


def bare_pyscf_gradient_seconds(work: Path, repeats: int = 3) -> tuple[float, int]:
    """Seconds of one HF/STO-3G energy + gradient of the QM water (resid 0) of the optimised structure in
    the point charges of every other atom (minimum image), by PySCF alone; and the QM atom count."""
    from openmm import app
    from pyscf import gto, qmmm, scf

    pdb = app.PDBFile(str(work / "routes" / "optimized.pdb"))
    x = pdb.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer)
    box = np.diag(pdb.topology.getPeriodicBoxVectors().value_in_unit(openmm.unit.nanometer))
    from bioqmmm.examples import forcefield

    system = forcefield().createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None,
                                       rigidWater=False)
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    charges = np.array([nonbonded.getParticleParameters(i)[0].value_in_unit(openmm.unit.elementary_charge)
                        for i in range(system.getNumParticles())])
    qm = [a.index for a in next(pdb.topology.residues()).atoms()]
    mm = np.setdiff1d(np.arange(len(x)), qm)
    shift = x[mm] - x[qm[0]]
    shift -= box * np.round(shift / box)
    mm_xyz = (x[qm[0]] + shift) * 10  # Å
    elements = [atom.element.symbol for atom in pdb.topology.atoms()]
    symbols = [elements[i] for i in qm]
    mol = gto.M(atom=[(s, xyz * 10) for s, xyz in zip(symbols, x[qm], strict=True)], basis="sto-3g", unit="Angstrom",
                verbose=0)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        mf = qmmm.mm_charge(scf.RHF(mol), mm_xyz, charges[mm], unit="Angstrom").run(conv_tol=1e-11)
        mf.nuc_grad_method().kernel()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds)), len(qm)


def water_modes(run: Path, method: str, qm_count: int) -> np.ndarray:
    """The three modes (cm⁻¹) with the largest weight on the QM atoms (the first ``qm_count`` of the block)."""
    with open(run / f"hessian_{method}.pkl", "rb") as handle:
        _, hessian = pickle.load(handle)
    from openmm import app

    topology = app.PDBFile(str(run / "optimized.pdb")).topology
    masses = monoisotopic_masses(topology, hessian.atoms)
    modes = normal_modes(hessian.hessian, masses)
    weight = (modes.modes[:, :qm_count] ** 2).sum(axis=(1, 2)) / (modes.modes ** 2).sum(axis=(1, 2))
    return np.sort(modes.frequencies[np.argsort(weight)[-3:]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    protocol_benchmark_arguments(parser, "spectrum.png")
    args = parser.parse_args()
    work = work_folder(args.work, "hessian_routes_")
    load = os.getloadavg()[0]
    routes, _ = run_variant(SOURCE, work, "routes", {"hessians": ["partial", "condensed", "full"]})
    exact, _ = run_variant(SOURCE, work, "exact", {"hessians": ["condensed"], "environment_hessian": "qmmm"})
    floor, n_qm = bare_pyscf_gradient_seconds(work)
    floor_hessian = 6 * n_qm * floor
    if args.figures is not None:
        args.figures.mkdir(parents=True, exist_ok=True)
        shutil.copy(work / "routes" / "spectrum.png", args.figures / "water_routes_spectrum.png")

    rows = []
    for label, record, run, method in (("partial (PHVA)", routes, "routes", "partial"),
                                       ("condensed, MM products", routes, "routes", "condensed"),
                                       ("condensed, QM/MM products (exact)", exact, "exact", "condensed"),
                                       ("full", routes, "routes", "full")):
        figures = record[method]
        seconds = figures["seconds"]["value"]
        modes = ", ".join(f"{nu:.1f}" for nu in water_modes(work / run, method, n_qm))
        rows.append(f"| {label} | {figures['modes']} | {figures['qmmm_evaluations']} | "
                    f"{figures['environment_products']} | {seconds:.1f} | {seconds / floor_hessian:.1f} | {modes} |")
    lines = [
        "## QM/MM Hessian routes: cost and agreement (`benchmarks/hessian_routes.py`)",
        "",
        "`python benchmarks/hessian_routes.py --write docs/performance/hessian_routes.md --figures "
        f"docs/figures/vibrations`, {time.strftime('%Y-%m-%d')} on {platform.node()} ({os.cpu_count()} cores, "
        f"load average {load:.2f} at start), Python {platform.python_version()}, OpenMM {openmm.__version__}, "
        f"PySCF {pyscf.__version__}.",
        "",
        f"`protocols/vibrations.yaml`: one QM water (HF/STO-3G) in flexible TIP3P (PME), "
        f"{routes['environment_atoms']} flexible environment atoms, minimised first. Floor: "
        f"6 n_A = {6 * n_qm} bare PySCF energy+gradient calls of the QM water in the MM point charges, "
        f"{floor:.3f} s each ({floor_hessian:.1f} s). An environment product is one H_EE v (four MM force calls "
        "for the MM model, two QM/MM calls for the exact one).",
        "",
        "| route | modes | QM/MM calls | environment products | seconds | ÷ floor | QM-water modes (cm⁻¹) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "The condensed route costs the partial one's QM/MM calls plus MM work; the exact (QM/MM-product) "
        "condensation and the full Hessian scale with the environment's size in QM/MM calls.",
    ]
    write_section(args.write, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
