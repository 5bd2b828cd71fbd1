"""``bioqmmm run FILE.yaml``: validate the file, build the model, run the protocol, write results."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from bioqmmm.run.build import build_qmmm
from bioqmmm.run.md import fingerprint, run_md
from bioqmmm.run.optimize import run_optimization
from bioqmmm.run.protocol import MDProtocol, OptimizeProtocol, ProtocolFile, load_protocol
from bioqmmm.run.reporters import read_rows
from bioqmmm.run.results import plot_md, quantity, write_results


def run_protocol(path: str | Path, *, output: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the protocol file at ``path``; return the ``result.json`` record.

    Everything is validated (file schema, selection, charge and multiplicity, basis) before the
    first energy evaluation. ``output`` overrides the file's output folder. A rerun into the same
    output folder resumes from its checkpoint.
    """
    config = load_protocol(path)
    if output is not None:
        config = dataclasses.replace(config, output=str(Path(output).resolve()))
        object.__setattr__(config, "source", Path(path).resolve())
    qmmm, positions, box = build_qmmm(config)
    out = config.output_dir()
    out.mkdir(parents=True, exist_ok=True)
    settings = config.protocol
    common = {
        "n_atoms": qmmm.topology.getNumAtoms(),
        "n_qm_atoms": len(qmmm.qm_atoms),
        "n_link_atoms": len(qmmm.links),
        "qm_level": f"{config.qm.method}/{config.qm.basis}",
        "qm_charge": config.qm.charge,
        "qm_multiplicity": config.qm.multiplicity,
    }
    if isinstance(settings, MDProtocol):
        return _md(config, settings, qmmm, positions, box, out, common, progress)
    if isinstance(settings, OptimizeProtocol):
        outcome = run_optimization(
            qmmm, positions, settings, out, box=box, platform=config.resources.platform, progress=progress,
            identity=fingerprint(config.system, config.qm, dataclasses.replace(settings, max_steps=1)),
        )
        return write_results(out, "optimize", {**common, **outcome.figures()})
    raise AssertionError(f"unhandled protocol {type(settings).__name__}")  # the schema admits no other type


def _md(config: ProtocolFile, settings: MDProtocol, qmmm, positions, box, out: Path, common, progress):
    identity = fingerprint(config.system, config.qm, dataclasses.replace(settings, steps=1))
    outcome = run_md(
        qmmm,
        positions,
        settings,
        out,
        box=box,
        platform=config.resources.platform,
        threads=config.resources.threads,
        identity=identity,
        progress=progress,
    )
    rows = read_rows(outcome.files["energies"])
    plot_md(rows, out / "energies.png", f"QM/MM MD, {common['qm_level']}")
    scf = np.array([r["scf_cycles"] for r in rows])
    temperature = np.array([r["temperature_k"] for r in rows])
    wall = np.array([r["wall_per_step_s"] for r in rows])
    figures = {
        **common,
        "steps": outcome.steps,
        "resumed_from_step": outcome.resumed_from,
        "simulated_time": quantity(outcome.steps * settings.timestep_fs * 1e-3, "ps"),
        "final_potential_energy": quantity(rows[-1]["potential_kjmol"], "kJ/mol"),
        "final_qm_energy": quantity(rows[-1]["qm_kjmol"], "kJ/mol"),
        "mean_temperature": quantity(temperature.mean(), "K"),
        "mean_scf_cycles_per_step": quantity(scf.mean(), "cycles"),
        "qm_evaluations_this_run": outcome.qm_evaluations,
        "wall_time_per_step": quantity(np.nanmean(wall) if np.isfinite(wall).any() else float("nan"), "s"),
        "files": sorted([p.name for p in outcome.files.values()] + ["energies.png", "result.json", "summary.txt"]),
    }
    return write_results(out, "md", figures)
