"""``bioqmmm run FILE.yaml``: validate the file, build the model, run the protocol, write results."""

from __future__ import annotations

import dataclasses
import traceback
from pathlib import Path
from typing import Any

from bioqmmm.errors import BioQMMMError, CalculationError, InputError, ReplicaFailedError
from bioqmmm.parallel.comm import threads_per_rank, world
from bioqmmm.parallel.replicas import Replica, run_replicas
from bioqmmm.parallel.schedule import estimated_cost
from bioqmmm.protocols.context import RunContext
from bioqmmm.results import read_result, write_results
from bioqmmm.run.build import build_model, build_qmmm, create_system, model_forcefield, qm_at, qmmm_model
from bioqmmm.run.protocol import ProtocolFile, ReplicaSection, load_protocol
from bioqmmm.simulation.identity import fingerprint


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
    if config.kind().parallel:  # the protocol shares its own work out over ranks
        return _on_every_rank(world(), lambda comm: _single(_threaded(config, comm), progress, comm=comm))
    if world().size > 1:
        raise InputError(f"{path} has no 'replicas' list: under mpirun every rank would run the same protocol into "
                         "the same folder; run it without mpirun")
    return _single(config, progress)


def identity(config: ProtocolFile) -> str:
    """Fingerprint of the model and settings, without the length of the run (which a rerun may extend)."""
    return fingerprint(config.system, config.qm, config.kind().identity_record(config.protocol))


def _replace(config: ProtocolFile, **changes) -> ProtocolFile:
    """``dataclasses.replace`` that keeps the file's location (relative paths are taken from it)."""
    new = dataclasses.replace(config, **changes)
    object.__setattr__(new, "source", config.source)
    return new


def replica_config(config: ProtocolFile, replica: ReplicaSection) -> ProtocolFile:
    """The protocol file as replica ``replica`` runs it: its changes applied, output in replicas/NAME."""
    qm = config.qm
    keys = {f.name for f in dataclasses.fields(config.protocol)}
    foreign = [key for key in replica.protocol_changes() if key not in keys]
    if foreign:
        raise InputError(f"replica {replica.name!r}: {', '.join(foreign)} are not keys of the {config.kind().name} "
                         "protocol; a replica changes only its protocol's keys and its QM region")
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

    identities = {name: identity(replica_file) for name, replica_file in configs.items()}

    def finished(replica: Replica) -> dict[str, Any] | None:
        """The replica's result, if it is complete and from these settings (else it runs or resumes)."""
        replica_file = configs[replica.name]
        result = read_result(replica_file.output_dir(), identities[replica.name])
        done = result is not None and result.get("target") == replica_file.kind().target(replica_file.protocol)
        return result if done else None

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
        steps = replica_file.kind().target(replica_file.protocol) or 1
        n_qm = len(qmmm.qm_atoms) + len(qmmm.links)
        costs[name] = estimated_cost(n_qm, qmmm.topology.getNumAtoms() - n_qm, steps)
    return costs


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("steps", "final_potential_energy", "final_energy", "converged", "mean_scf_cycles_per_step",
            "wall_time_per_step", "qm_wall_time_per_step")
    return {k: result[k] for k in keys if k in result}


def _single(config: ProtocolFile, progress: bool, poll=None, comm=None) -> dict[str, Any]:
    """Build the model of ``config`` and run its protocol in the output folder."""
    if config.kind().own_region:
        return _own_region(config, progress, comm)
    qmmm, positions, box = build_qmmm(config)
    out = config.output_dir()
    out.mkdir(parents=True, exist_ok=True)
    kind, run_identity = config.kind(), identity(config)
    context = RunContext(
        qmmm=qmmm, positions=positions, box=box, output=out, base=config.base_dir(), identity=run_identity,
        record={
            "n_atoms": qmmm.topology.getNumAtoms(),
            "n_qm_atoms": len(qmmm.qm_atoms),
            "n_link_atoms": len(qmmm.links),
            "qm_level": config.qm.level().label,
            "qm_charge": config.qm.charge,
            "qm_multiplicity": config.qm.multiplicity,
            "identity": run_identity,
            "target": kind.target(config.protocol),
        },
        comm=comm or world(),
        model_at=lambda level, region=None: qmmm_model(config, qmmm.topology, qmmm.reference_system, level,
                                                      region or qmmm.region),
        inputs_at=lambda level: (config.system, qm_at(config.qm, level)),
        system_for=lambda topology: create_system(config.system, topology),
        platform=config.resources.platform, threads=config.resources.threads, progress=progress, poll=poll,
    )
    return kind.run(context, config.protocol)


def _own_region(config: ProtocolFile, progress: bool, comm) -> dict[str, Any]:
    """A protocol that picks its own QM region: the model as built, the level, no QMMMSystem."""
    base = config.base_dir()
    topology, system, positions, box = build_model(config.system, base)
    out = config.output_dir()
    out.mkdir(parents=True, exist_ok=True)
    kind, run_identity = config.kind(), identity(config)
    level = config.qm.level()
    context = RunContext(
        qmmm=None, positions=positions, box=box, output=out, base=base, identity=run_identity,
        record={"n_atoms": topology.getNumAtoms(), "qm_level": level.label, "identity": run_identity,
                "target": kind.target(config.protocol)},
        comm=comm or world(), model_at=None, inputs_at=lambda level: (config.system, qm_at(config.qm, level)),
        topology=topology, reference_system=system, forcefield=model_forcefield(config.system, base), level=level,
        platform=config.resources.platform, threads=config.resources.threads, progress=progress,
    )
    return kind.run(context, config.protocol)
