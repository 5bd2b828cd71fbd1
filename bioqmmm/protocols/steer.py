"""``protocol: steer``: steered MD along a reaction coordinate at the file's level (:mod:`bioqmmm.sampling.steering`).

The start structure's environment is relaxed and warmed up at MM cost (as for ``protocol: md``), then it
equilibrates under an umbrella at ``start`` (default: its own s), then the centre moves
to ``end`` over ``steps``; the run checkpoints into ``OUTPUT/run`` and resumes. Written: ``steer.csv``
(per sample: time, centre, s, accumulated work), ``path.pdb`` (``models`` frames whose centres are evenly
spaced from start to end: starts for umbrella windows, ``protocol: pmf`` key ``starts``, or endpoints for a
band), ``steer.png`` and ``result.json``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bioqmmm.protocols.context import RunContext
from bioqmmm.protocols.pmf import reaction_coordinate
from bioqmmm.protocols.pmf_settings import CoordinateSection
from bioqmmm.protocols.registry import Protocol
from bioqmmm.protocols.settings import Declared, FieldError, setting
from bioqmmm.results import new_figure, quantity, write_pdb_models, write_results
from bioqmmm.sampling.starts import coordinate_values
from bioqmmm.sampling.steering import steered_run
from bioqmmm.sampling.windows import SamplingSettings
from bioqmmm.simulation.environment import settled_environment


@dataclass(frozen=True)
class SteerSettings(Declared):
    """Steered MD: an umbrella of ``force_constant`` moved linearly from ``start`` (default: the start
    structure's s) to ``end`` over ``steps`` Langevin steps of ``timestep_fs``, after ``equilibration_steps``
    at ``start``; a sample every ``sample_interval`` steps; ``models`` frames written to ``path.pdb``."""

    coordinate: CoordinateSection = setting(doc="the reaction coordinate s")
    end: float = setting(doc="where the umbrella centre ends", unit="unit of s")
    force_constant: float = setting(doc="the moving umbrella", unit="kJ/mol/unit²", check="positive")
    steps: int = setting(doc="steps over which the centre moves", check="positive_int")
    start: float | None = setting(None, doc="where the centre starts (default: the start structure's s)",
                                  unit="unit of s")
    equilibration_steps: int = setting(0, doc="steps at the start centre first", check="non_negative")
    sample_interval: int = setting(10, doc="steps between samples (the centre moves between them)",
                                   check="positive_int")
    timestep_fs: float = setting(1.0, doc="time step (QM X-H bonds are not constrained)", check="positive")
    temperature_k: float = setting(300.0, doc="Langevin thermostat", check="positive")
    friction_per_ps: float = setting(5.0, doc="Langevin friction", check="positive")
    seed: int = setting(1, doc="random seed", check="positive_int")
    minimize_mm_first: bool = setting(True, doc="relax the environment (QM atoms fixed) first")
    warmup_ps: float = setting(0.5, doc="then Langevin MD of the environment at temperature_k (QM atoms fixed), "
                               "at MM cost; 0: none", check="non_negative")
    checkpoint_interval: int = setting(50, doc="samples between checkpoints", check="positive_int")
    models: int = setting(20, doc="frames written to path.pdb, centres evenly from start to end",
                          check="positive_int")

    def check(self) -> None:
        if self.coordinate.kind == "dihedral":
            raise FieldError("coordinate", "a dihedral cannot be steered (its centre would wrap at ±π)")
        if self.steps % self.sample_interval:
            raise FieldError("steps", f"must be a multiple of sample_interval ({self.sample_interval})")
        if self.models > self.steps // self.sample_interval:
            raise FieldError("models", f"at most one per sample ({self.steps // self.sample_interval})")


def run(context: RunContext, settings: SteerSettings) -> dict[str, Any]:
    """The ``steer`` protocol (serial)."""
    qmmm, out = context.qmmm, context.output
    coordinate = reaction_coordinate(settings.coordinate, qmmm.topology)
    positions = context.positions
    first = out / "run" / "start.json"  # the settled start's s: a resumed run moves the centre the same way
    if (out / "run" / "checkpoint.npz").exists() and first.exists():
        start_value = json.loads(first.read_text())["start_structure_s"]
    else:
        positions, _, _ = settled_environment(
            qmmm, positions, box=context.box, relax=settings.minimize_mm_first, warmup_ps=settings.warmup_ps,
            temperature=settings.temperature_k, timestep_fs=settings.timestep_fs, seed=settings.seed,
            platform="CPU" if context.platform == "Reference" else context.platform)
        start_value = float(coordinate_values(coordinate, [positions], context.box)[0])
        first.parent.mkdir(parents=True, exist_ok=True)
        first.write_text(json.dumps({"start_structure_s": start_value}) + "\n")
    start = start_value if settings.start is None else settings.start
    sampling = SamplingSettings(
        samples=settings.steps // settings.sample_interval, sample_interval=settings.sample_interval,
        equilibration_steps=settings.equilibration_steps, timestep_fs=settings.timestep_fs,
        temperature_k=settings.temperature_k, friction_per_ps=settings.friction_per_ps, seed=settings.seed,
        checkpoint_interval=settings.checkpoint_interval)
    samples = steered_run(qmmm.system, coordinate, start, settings.end, settings.force_constant, sampling,
                          out / "run", positions=positions, box=context.box, qmmm=qmmm,
                          platform=context.platform, threads=context.threads, identity=context.identity,
                          poll=context.poll)
    work = np.cumsum(samples["work"])
    time_ps = (settings.equilibration_steps + settings.sample_interval * np.arange(1, len(work) + 1)) \
        * settings.timestep_fs * 1e-3
    _write_table(out / "steer.csv", time_ps, samples, work, coordinate.unit)
    chosen = _evenly_spaced(samples["center"], settings.models)
    write_pdb_models(out / "path.pdb", qmmm.topology, [samples["positions"][k].astype(float) for k in chosen],
                     context.box, centre_atoms=qmmm.qm_atoms)
    _plot(out / "steer.png", time_ps, samples, work, coordinate.unit)
    unit = coordinate.unit
    return write_results(out, "steer", {
        **context.record,
        "coordinate_unit": unit,
        "start_structure_s": quantity(start_value, unit),
        "centre_start": quantity(start, unit),
        "centre_end": quantity(settings.end, unit),
        "final_s": quantity(samples["s"][-1], unit),
        "work": quantity(work[-1], "kJ/mol"),
        "largest_lag": quantity(np.abs(samples["s"] - samples["center"]).max(), unit),
        "path_models_s": quantity(samples["s"][chosen].tolist(), unit),
        "files": ["steer.csv", "path.pdb", "steer.png", "result.json", "summary.txt", "run/"],
    })


def _evenly_spaced(centres: np.ndarray, count: int) -> list[int]:
    """Indices of the samples whose held centre is nearest each of ``count`` evenly spaced values."""
    targets = np.linspace(centres[0], centres[-1], count)
    return [int(np.argmin(np.abs(centres - t))) for t in targets]


def _write_table(path: Path, time_ps: np.ndarray, samples: dict, work: np.ndarray, unit: str) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time_ps", f"center_{unit}", f"s_{unit}", "work_kjmol", "energy_kjmol"])
        for row in zip(time_ps, samples["center"], samples["s"], work, samples["energy"], strict=True):
            writer.writerow([f"{row[0]:.4f}", f"{row[1]:.6f}", f"{row[2]:.6f}", f"{row[3]:.4f}", f"{row[4]:.4f}"])


def _plot(path: Path, time_ps: np.ndarray, samples: dict, work: np.ndarray, unit: str) -> None:
    fig, (top, bottom) = new_figure(rows=2, height=2.6)
    top.plot(time_ps, samples["center"], color="0.5", label="umbrella centre")
    top.plot(time_ps, samples["s"], color="tab:blue", lw=0.8, label="s")
    top.set_ylabel(f"s ({unit})")
    top.legend(fontsize=8)
    bottom.plot(time_ps, work, color="tab:red")
    bottom.set_ylabel("work (kJ/mol)")
    bottom.set_xlabel("time (ps)")
    fig.savefig(path, dpi=120)


PROTOCOL = Protocol("steer", "steered MD: a moving umbrella along a reaction coordinate (paths, window starts)",
                    SteerSettings, run)
