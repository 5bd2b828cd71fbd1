"""Transition-state searches: bioqmmm's microiterative P-RFO against Sella on the same surfaces.

    python benchmarks/ts_search.py [--write docs/performance/ts_search.md] [--figures docs/figures/vibrations]
                                   [--work DIR]

Two cases, both from the midpoint of the shipped reactant and product (formamide → formamidic acid,
HF/3-21G): the gas phase (every atom QM) and ``protocols/ts.yaml`` (the solute in flexible TIP3P, water
within 0.5 nm relaxed after every step). bioqmmm: the ``ts`` protocol's search (P-RFO, Bofill updates,
environment-condensed Hessian at the start). Sella 2.6 (Hermes et al., J. Chem. Theory Comput. 18, 6974
(2022); its own iterative Hessian estimate and internal coordinates in the gas phase, Cartesian steps in
water) on the same microiterative surface: every energy/force request relaxes the water first. Both stop
at the same largest QM force (10 kJ/mol/nm). Counted: QM/MM energy-and-force calls up to convergence (the
start Hessian's included), steps; then the condensed-Hessian frequencies at each saddle. Also runs
``protocols/ts.yaml`` as shipped (search, IRC, minimised ends) and copies its IRC plot to ``--figures``.
Needs Sella (``pip install sella``; it brings JAX), which bioqmmm itself does not depend on.
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
import pyscf
import yaml
from report import protocol_benchmark_arguments, work_folder, write_section

from bioqmmm.paths.solvated_ts import Microiterations, refine_in_environment
from bioqmmm.protocols.neb import read_endpoint
from bioqmmm.run.build import build_qmmm
from bioqmmm.run.protocol import load_protocol
from bioqmmm.run.runner import run_protocol
from bioqmmm.vibrations.active import active_hessian, analyse, environment_atoms

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "protocols" / "ts.yaml"
EV_KJMOL = 96.485332
FMAX = 10.0


def _case_file(work: Path, name: str, gas: bool) -> Path:
    config = yaml.safe_load(SHIPPED.read_text())
    if gas:
        config["system"] = {"example": "formamide", "constraints": "none"}
        config["qm"]["atoms"] = "all"
    config["protocol"]["product"] = str(SHIPPED.parent / config["protocol"]["product"])
    config["protocol"]["irc"] = False
    config["output"] = str(work / name)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _midpoint(path: Path):
    config = load_protocol(path)
    qmmm, reactant, box = build_qmmm(config)
    product = read_endpoint(Path(config.protocol.product), qmmm.topology, reactant)
    start = reactant.copy()
    qm = np.asarray(qmmm.qm_atoms)
    start[qm] = 0.5 * (reactant[qm] + product[qm])
    return qmmm, start, box, config.protocol


def ours(path: Path) -> dict:
    qmmm, start, box, settings = _midpoint(path)
    began = time.perf_counter()
    saddle = refine_in_environment(qmmm, start, environment_radius=settings.environment_radius_nm, fmax=FMAX,
                                   max_steps=300, trust=settings.trust_nm, mm_tolerance=settings.mm_tolerance_kjmol_nm,
                                   box=box)
    seconds = time.perf_counter() - began
    calls = saddle.ts.gradient_calls + saddle.analysis.hessian.qmmm_evaluations  # + the start Hessian's
    return {"converged": saddle.ts.converged, "steps": saddle.ts.iterations, "calls": calls,
            "seconds": seconds, "frequencies": saddle.analysis.modes.frequencies, "positions": saddle.ts.positions,
            "energy": saddle.ts.energy}


def sella(path: Path, internal: bool) -> dict:
    from ase import Atoms
    from ase.calculators.calculator import Calculator, all_changes
    from sella import Sella

    qmmm, start, box, settings = _midpoint(path)
    qm = np.asarray(qmmm.qm_atoms, dtype=int)
    environment = environment_atoms(qmmm, start, qm, settings.environment_radius_nm)
    micro = Microiterations(qmmm, environment, box=box, mm_tolerance=settings.mm_tolerance_kjmol_nm)
    state = {"x": micro.relax(start), "calls": 0, "energy": 0.0}

    class Microiterative(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            x = state["x"].copy()
            x[qm] = self.atoms.positions / 10.0
            x = micro.relax(x)
            energy, forces = micro.evaluate(x)
            state.update(x=x, calls=state["calls"] + 1, energy=energy)
            self.results = {"energy": energy / EV_KJMOL, "forces": forces[qm] / (10.0 * EV_KJMOL)}

    elements = [atom.element.symbol for atom in qmmm.topology.atoms()]
    symbols = [elements[i] for i in qm]
    atoms = Atoms(symbols, positions=state["x"][qm] * 10.0, calculator=Microiterative())
    began = time.perf_counter()
    optimiser = Sella(atoms, order=1, internal=internal, logfile=None)
    converged = optimiser.run(fmax=FMAX / (10.0 * EV_KJMOL), steps=300)
    seconds = time.perf_counter() - began
    calls = state["calls"]
    hessian = active_hessian(qmmm, state["x"], qm, environment, method="condensed", box=box)
    modes = analyse(qmmm, state["x"], hessian).modes
    return {"converged": bool(converged), "steps": optimiser.nsteps, "calls": calls, "seconds": seconds,
            "frequencies": modes.frequencies, "positions": state["x"], "energy": state["energy"]}


def _row(case: str, method: str, result: dict, reference: dict) -> str:
    from bioqmmm.protocols.ts import kabsch_rmsd

    imaginary = result["frequencies"][result["frequencies"] < 0]
    qm_rmsd = kabsch_rmsd(result["positions"][: len(reference["positions"])], reference["positions"])
    return (f"| {case} | {method} | {'yes' if result['converged'] else 'no'} | {result['steps']} | {result['calls']} | "
            f"{result['seconds']:.0f} | {', '.join(f'{v:.0f}' for v in imaginary)} | "
            f"{result['energy'] - reference['energy']:+.2f} | {qm_rmsd:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    protocol_benchmark_arguments(parser, "irc.png of protocols/ts.yaml")
    args = parser.parse_args()
    work = work_folder(args.work, "ts_search_")
    load = os.getloadavg()[0]
    rows = []
    for case, gas in (("gas phase", True), ("in water (ts.yaml)", False)):
        path = _case_file(work, case.split()[0] + ("_gas" if gas else "_water"), gas)
        mine = ours(path)
        theirs = sella(path, internal=gas)
        qm = slice(None) if gas else slice(0, 6)
        mine["positions"], theirs["positions"] = mine["positions"][qm], theirs["positions"][qm]
        rows += [_row(case, "bioqmmm P-RFO", mine, mine), _row(case, "Sella", theirs, mine)]

    config = yaml.safe_load(SHIPPED.read_text())
    config["protocol"]["product"] = str(SHIPPED.parent / config["protocol"]["product"])
    config["output"] = str(work / "shipped")
    shipped_path = work / "shipped.yaml"
    shipped_path.write_text(yaml.safe_dump(config, sort_keys=False))
    began = time.perf_counter()
    shipped = run_protocol(shipped_path, progress=True)
    shipped_minutes = (time.perf_counter() - began) / 60
    if args.figures is not None:
        args.figures.mkdir(parents=True, exist_ok=True)
        shutil.copy(work / "shipped" / "irc.png", args.figures / "ts_water_irc.png")
    irc = shipped["irc"]
    ends = "; ".join(
        f"{name}: {end['ends_at']} (QM RMSD {end['rmsd_to'][end['ends_at']]['value']:.4f} nm, "
        f"{end['minimised']['energy_below_ts']['value']:.1f} kJ/mol below the TS)"
        for name, end in ((name, irc[name]) for name in ("forward", "backward")))
    lines = [
        "## Transition states: bioqmmm's P-RFO against Sella, and the shipped TS in water (`benchmarks/ts_search.py`)",
        "",
        "`python benchmarks/ts_search.py --write docs/performance/ts_search.md --figures docs/figures/vibrations`, "
        f"{time.strftime('%Y-%m-%d')} on {platform.node()} ({os.cpu_count()} cores, load average {load:.2f} at "
        f"start), Python {platform.python_version()}, OpenMM {openmm.__version__}, PySCF {pyscf.__version__}.",
        "",
        "Formamide → formamidic acid (HF/3-21G) from the midpoint of reactant and product, to a largest QM force "
        f"of {FMAX:g} kJ/mol/nm; in water the water within 0.5 nm is relaxed before every QM/MM call (both "
        "methods). Calls: QM/MM energy+force evaluations to convergence (bioqmmm's include the 6 n_QM of its "
        "start Hessian). Frequencies: the environment-condensed Hessian at each saddle. ΔE and RMSD: against "
        "bioqmmm's saddle (QM atoms).",
        "",
        "| case | search | converged | steps | calls | seconds | imaginary (cm⁻¹) | ΔE (kJ/mol) | QM RMSD (nm) |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"`protocols/ts.yaml` as shipped ({shipped_minutes:.1f} min here): converged {shipped['converged']} in "
        f"{shipped['steps']} steps, largest QM force {shipped['max_force_qm']['value']:.1f} kJ/mol/nm, imaginary "
        f"frequencies {shipped['imaginary_frequencies']['value']} cm⁻¹, {shipped['environment_atoms']} flexible "
        f"water atoms; IRC ends, minimised: {ends}.",
    ]
    write_section(args.write, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
