"""``bioqmmm run FILE.yaml``: validate the file, build the model, run the protocol, write results."""

from __future__ import annotations

import dataclasses
import json
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from bioqmmm.errors import BioQMMMError, CalculationError, InputError, ReplicaFailedError
from bioqmmm.parallel.comm import threads_per_rank, world
from bioqmmm.parallel.replicas import Replica, run_replicas
from bioqmmm.parallel.schedule import estimated_cost
from bioqmmm.protocols.md import fingerprint, run_md
from bioqmmm.protocols.neb import run_neb
from bioqmmm.protocols.optimize import run_optimization
from bioqmmm.protocols.pmf import run_pmf
from bioqmmm.protocols.results import plot_md, quantity, write_results
from bioqmmm.run.build import build_qmmm
from bioqmmm.run.protocol import (
    MDProtocol,
    NEBProtocol,
    OptimizeProtocol,
    PMFProtocol,
    ProtocolFile,
    ReplicaSection,
    load_protocol,
)
from bioqmmm.simulation.reporters import read_rows


def run_protocol(path: str | Path, *, output: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the protocol file at ``path``; return the ``result.json`` record.

    Everything is validated (file schema, selection, charge and multiplicity, basis) before the
    first energy evaluation. ``output`` overrides the file's output folder. A rerun into the same
    output folder resumes from its checkpoint.
    """
    config = load_protocol(path)
    if output is not None:
        config = _replace(config, output=str(Path(output).resolve()))
    if config.replicas:
        return _replica_set(config, progress)
    if isinstance(config.protocol, NEBProtocol | PMFProtocol):  # these share their own work out over ranks
        return _on_every_rank(world(), lambda comm: _single(_threaded(config, comm), progress, comm=comm))
    if world().size > 1:
        raise InputError(f"{path} has no 'replicas' list: under mpirun every rank would run the same protocol into "
                         "the same folder; run it without mpirun")
    return _single(config, progress)


#: Keys a rerun may change and still continue the run: its lengths (the first is the target) and, for
#: NEB, the transition-state refinement, which only post-processes the band. A pmf protocol checks
#: each window's settings itself (:mod:`bioqmmm.protocols.pmf`).
_LENGTH = {MDProtocol: ("steps",), OptimizeProtocol: ("max_steps",),
           NEBProtocol: ("max_iterations", "endpoint_max_steps", "ts_refine", "ts_fmax_kjmol_nm", "ts_max_steps"),
           PMFProtocol: ()}


def identity(config: ProtocolFile) -> str:
    """Fingerprint of the model and settings, without the length of the run (which a rerun may extend)."""
    lengths = dict.fromkeys(_LENGTH[type(config.protocol)], 1)
    settings = dataclasses.asdict(dataclasses.replace(config.protocol, **lengths))
    if settings.get("qm_every") == 1:  # single-step MD keeps the identity it had before multiple time steps
        del settings["qm_every"]
    return fingerprint(config.system, config.qm, settings)


def _target(settings: MDProtocol | OptimizeProtocol | NEBProtocol | PMFProtocol) -> int | None:
    keys = _LENGTH[type(settings)]
    return getattr(settings, keys[0]) if keys else None


def _replace(config: ProtocolFile, **changes) -> ProtocolFile:
    """``dataclasses.replace`` that keeps the file's location (relative paths are taken from it)."""
    new = dataclasses.replace(config, **changes)
    object.__setattr__(new, "source", config.source)
    return new


def replica_config(config: ProtocolFile, replica: ReplicaSection) -> ProtocolFile:
    """The protocol file as replica ``replica`` runs it: its changes applied, output in replicas/NAME."""
    qm = config.qm
    if isinstance(config.protocol, OptimizeProtocol) and replica.protocol_changes():
        raise InputError(f"replica {replica.name!r}: {', '.join(replica.protocol_changes())} apply to MD only; an "
                         "optimisation replica can change its QM region")
    region = replica.qm_changes()
    if {"atoms", "sidechains", "residues"} & set(region):  # a replica's QM region is given whole
        region = {"atoms": None, "sidechains": (), "residues": (), **region}
    return _replace(
        config,
        protocol=dataclasses.replace(config.protocol, **replica.protocol_changes()),
        qm=dataclasses.replace(qm, **region),
        output=str(config.output_dir() / "replicas" / replica.name),
        replicas=(),
    )


def _replica_set(config: ProtocolFile, progress: bool) -> dict[str, Any]:
    """Every replica of the file through the replica runner (over MPI under mpirun/srun)."""
    return _on_every_rank(world(), lambda comm: _run_replica_set(config, progress, comm))


def _on_every_rank(comm, run) -> dict[str, Any]:
    """``run(comm)`` on every rank; an error that only this rank can know of ends the whole job."""
    try:
        return run(comm)
    except (ReplicaFailedError, InputError, CalculationError):
        raise  # raised on every rank alike
    except Exception:
        if comm.size > 1:  # an error on this rank alone: the others would wait for it forever
            traceback.print_exc()
            comm.abort(1)
        raise


def _threaded(config: ProtocolFile, comm) -> ProtocolFile:
    """Ranks on a node share its cores: unless the file says, each takes its share as threads."""
    if comm.size > 1 and config.resources.threads is None:
        return _replace(config, resources=dataclasses.replace(config.resources, threads=threads_per_rank(comm.size)))
    return config


def _run_replica_set(config: ProtocolFile, progress: bool, comm) -> dict[str, Any]:
    config = _threaded(config, comm)
    sections = {r.name: r for r in config.replicas}
    configs = {name: replica_config(config, section) for name, section in sections.items()}
    costs: dict[str, float] = {}
    for part in comm.allgather(_check_replicas(configs, comm.rank, comm.size)):  # each rank checks a share
        if isinstance(part, str):
            raise InputError(part)
        costs.update(part)

    def work(replica: Replica, poll) -> dict[str, Any]:
        return _single(configs[replica.name], progress and comm.size == 1, poll=poll)

    def finished(replica: Replica) -> dict[str, Any] | None:
        """The replica's result, if it is complete and from these settings (else it runs or resumes)."""
        path = configs[replica.name].output_dir() / "result.json"
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        same = result.get("identity") == identity(configs[replica.name])
        return result if same and result.get("target") == _target(configs[replica.name].protocol) else None

    replicas = [Replica(name, cost=costs[name]) for name in sections]
    results = run_replicas(replicas, work, config.output_dir(), finished=finished, comm=comm)
    figures = {"replicas": {name: _headline(result) for name, result in results.items()}, "ranks": comm.size}
    if comm.rank == 0:
        return write_results(config.output_dir(), "replicas", figures)
    return {"protocol": "replicas", **figures}


def _check_replicas(configs: dict[str, ProtocolFile], rank: int, size: int) -> dict[str, float] | str:
    """Build this rank's share of the replicas' models, before any runs: prior costs by name, or the first
    error (every rank then stops with it)."""
    costs = {}
    for name, replica_file in list(configs.items())[rank::size]:
        try:
            qmmm, _, _ = build_qmmm(replica_file)
        except Exception as exc:  # reported to every rank, which all stop with it
            return f"replica {name!r}: {exc}" if isinstance(exc, BioQMMMError) else f"replica {name!r}: {exc!r}"
        steps = getattr(replica_file.protocol, "steps", None) or getattr(replica_file.protocol, "max_steps", 1)
        n_qm = len(qmmm.qm_atoms) + len(qmmm.links)
        costs[name] = estimated_cost(n_qm, qmmm.topology.getNumAtoms() - n_qm, steps)
    return costs


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("steps", "final_potential_energy", "final_energy", "converged", "mean_scf_cycles_per_step",
            "wall_time_per_step", "qm_wall_time_per_step")
    return {k: result[k] for k in keys if k in result}


def _single(config: ProtocolFile, progress: bool, poll=None, comm=None) -> dict[str, Any]:
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
        "identity": identity(config),
        "target": _target(settings),
    }
    if isinstance(settings, MDProtocol):
        return _md(config, settings, qmmm, positions, box, out, common, progress, poll)
    if isinstance(settings, OptimizeProtocol):
        outcome = run_optimization(
            qmmm, positions, settings, out, box=box, platform=config.resources.platform, progress=progress,
            identity=common["identity"], poll=poll,
        )
        return write_results(out, "optimize", {**common, **outcome.figures()})
    if isinstance(settings, NEBProtocol):
        return run_neb(config, qmmm, positions, box, common, comm or world(), progress)
    if isinstance(settings, PMFProtocol):
        return run_pmf(config, qmmm, positions, box, common, comm or world(), progress)
    raise AssertionError(f"unhandled protocol {type(settings).__name__}")  # the schema admits no other type


def _md(config: ProtocolFile, settings: MDProtocol, qmmm, positions, box, out: Path, common, progress, poll=None):
    outcome = run_md(
        qmmm,
        positions,
        settings,
        out,
        box=box,
        platform=config.resources.platform,
        threads=config.resources.threads,
        identity=common["identity"],
        progress=progress,
        poll=poll,
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
        "simulated_time": quantity(outcome.steps * settings.qm_every * settings.timestep_fs * 1e-3, "ps"),
        "final_potential_energy": quantity(rows[-1]["potential_kjmol"], "kJ/mol"),
        "final_qm_energy": quantity(rows[-1]["qm_kjmol"], "kJ/mol"),
        "mean_temperature": quantity(temperature.mean(), "K"),
        "mean_scf_cycles_per_step": quantity(scf.mean(), "cycles"),
        "qm_evaluations_this_run": outcome.qm_evaluations,
        "wall_time_per_step": quantity(np.nanmean(wall) if np.isfinite(wall).any() else float("nan"), "s"),
        "qm_wall_time_per_step": quantity(float(np.nanmean([r["qm_wall_s"] for r in rows])), "s"),
        "files": sorted([p.name for p in outcome.files.values()] + ["energies.png", "result.json", "summary.txt"]),
    }
    return write_results(out, "md", figures)
