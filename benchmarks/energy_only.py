"""Energy-only evaluations (MBAR rows, FEP rows, rescoring) against energy + gradient, cold and warm.

    python benchmarks/energy_only.py [--method b3lyp] [--basis 6-31g*] [--frames 12] [--qm SEL ...] [--write F.md]

The model is protocols/pmf.yaml's (alanine dipeptide in vacuum; in QM the Ala side chain with a Cα–Cβ link
atom, or the atoms of ``--qm``, e.g. ``"resname ACE ALA NME"`` for the whole dipeptide) at the given level.
Frames are the retained samples of one MM umbrella window (φ ≈ −π, the protocol's sampling), in order, as a
PMF or FEP run evaluates them. Timed per frame: (a) the project's energy + gradient from a cold SCF guess
(what a reweighting paid before the energy-only path), (b) ``QMMMSystem.energy``, no gradient, each SCF
started from the previous frame's density, and the floor (c) bare gas-phase PySCF energy + gradient of the
same atoms, cold start, density fitting as the engine uses it. Reported: (b)/(a) and (b)/(c) in one run, the
SCF cycles, and the largest energy difference between (a) and (b). Compare ratios, not absolute seconds.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import openmm
import pyscf
from pmf_reweighting import PROTOCOL, floor_seconds
from report import write_section

from bioqmmm import QMMMSystem
from bioqmmm.protocols.pmf import reaction_coordinate
from bioqmmm.qm import PySCFEngine
from bioqmmm.region.region import QMRegion
from bioqmmm.run.build import build_qmmm
from bioqmmm.run.protocol import load_protocol
from bioqmmm.sampling.coordinates import umbrella_windows
from bioqmmm.sampling.windows import SamplingSettings, pulled_start, sample_window


def window_frames(config, count: int) -> tuple[QMMMSystem, list[np.ndarray]]:
    """The protocol's model and ``count`` consecutive samples of its first MM umbrella window (nm)."""
    qmmm, positions, box = build_qmmm(config)
    settings = config.protocol
    coordinate = reaction_coordinate(settings.coordinate, qmmm.topology)
    bias = umbrella_windows(-math.pi, math.pi, 6, settings.temperature_k, period=2 * math.pi)[0]
    start = pulled_start(qmmm.reference_system, coordinate, bias, positions, box)
    found = sample_window(openmm.XmlSerializer.clone(qmmm.reference_system), coordinate, bias, start,
                          SamplingSettings(samples=count, sample_interval=50, equilibration_steps=2000,
                                           friction_per_ps=5.0, seed=1),
                          Path(tempfile.mkdtemp(prefix="bioqmmm-energy-only-")), platform="Reference")
    return qmmm, [found.positions[i].astype(float) for i in range(count)]


#: ``--qm`` value that means the protocol file's own QM region.
PROTOCOL_REGION = "protocol"


def measure(model, region, frames: list[np.ndarray], method: str, basis: str) -> dict[str, float]:
    """Per-frame seconds of (a), (b), (c), SCF cycles of (a) and (b), and max |E(a) − E(b)| (kJ/mol)."""
    engine = PySCFEngine(method, basis)
    qmmm = QMMMSystem(model.topology, model.reference_system, region, engine=engine, platform="Reference")
    cold, cold_energies, cold_cycles = [], [], []
    for frame in frames:
        engine.set_state({})
        qmmm.kernel.clear_cache()
        start = time.perf_counter()
        cold_energies.append(qmmm.energy_and_forces(frame)[0])
        cold.append(time.perf_counter() - start)
        cold_cycles.append(qmmm.kernel.last.qm.info.scf_cycles)
    engine.set_state({})
    qmmm.kernel.clear_cache()
    warm, warm_energies, warm_cycles = [], [], []
    for frame in frames:
        start = time.perf_counter()
        warm_energies.append(qmmm.energy(frame))
        warm.append(time.perf_counter() - start)
        warm_cycles.append(qmmm.kernel.last.qm.info.scf_cycles)
    fitted = engine.options.density_fit if engine.options.density_fit is not None else method != "hf"
    floor = [floor_seconds(qmmm, frame, basis, method, fitted) for frame in frames]
    return {"cold": float(np.mean(cold)), "warm": float(np.mean(warm)), "floor": float(np.mean(floor)),
            "cold_cycles": float(np.mean(cold_cycles)), "warm_cycles": float(np.mean(warm_cycles)),
            "difference": float(np.max(np.abs(np.subtract(cold_energies, warm_energies)))),
            "atoms": len(region.atoms) + len(qmmm.links)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="b3lyp")
    parser.add_argument("--basis", default="6-31g*")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--qm", nargs="+", default=[PROTOCOL_REGION],
                        help=f"QM regions: selections, or {PROTOCOL_REGION!r} for the protocol's own")
    parser.add_argument("--write", type=Path, default=None, help="write the section to this markdown file")
    args = parser.parse_args()
    config = load_protocol(PROTOCOL)
    load = os.getloadavg()[0]
    model, frames = window_frames(config, args.frames)
    results = {}
    for selection in args.qm:
        region = model.region if selection == PROTOCOL_REGION else \
            QMRegion.select(model.topology, selection, charge=0, multiplicity=1)
        results["Ala side chain + link H" if selection == PROTOCOL_REGION else f"`{selection}`"] = \
            measure(model, region, frames, args.method, args.basis)
    level = f"{args.method.upper()}/{args.basis}"
    regions = " ".join(f'"{q}"' for q in args.qm)

    def row(label: str, cell) -> str:
        return f"| {label} | " + " | ".join(cell(r) for r in results.values()) + " |"

    lines = [
        "",
        f"## Energy-only evaluations ({level}, {args.frames} consecutive frames of one window)",
        "",
        f"Generated by `python benchmarks/energy_only.py --method {args.method} --basis {args.basis} --frames "
        f"{args.frames} --qm {regions}` on {platform.node()} ({os.cpu_count()} cores, load average {load:.2f} at "
        f"start), Python {platform.python_version()}, OpenMM {openmm.__version__}, PySCF {pyscf.__version__}. "
        f"protocols/pmf.yaml's model (alanine dipeptide in vacuum) at {level}; frames from its first MM umbrella "
        "window in sampling order. Means over the frames (the energy-only series includes its one cold start).",
        "",
        "| QM region | " + " | ".join(results) + " |",
        "|---|" + "---|" * len(results),
        row("QM atoms (link atoms included)", lambda r: f"{r['atoms']}"),
        row("(a) energy + gradient, cold SCF guess, per frame (s)", lambda r: f"{r['cold']:.3f}"),
        row("(b) energy only (`QMMMSystem.energy`), guess from the previous frame, per frame (s)",
            lambda r: f"{r['warm']:.3f}"),
        row("(c) floor: bare gas-phase PySCF energy + gradient, cold start, per frame (s)",
            lambda r: f"{r['floor']:.3f}"),
        row("SCF cycles per frame, (a) / (b)", lambda r: f"{r['cold_cycles']:.1f} / {r['warm_cycles']:.1f}"),
        row("(b) ÷ (a)", lambda r: f"{r['warm'] / r['cold']:.2f}"),
        row("(b) ÷ (c)", lambda r: f"{r['warm'] / r['floor']:.2f}"),
        row("largest \\|E(a) − E(b)\\| (kJ/mol)", lambda r: f"{r['difference']:.1e}"),
        "",
    ]
    print("\n".join(lines))
    write_section(args.write, lines)


if __name__ == "__main__":
    main()
