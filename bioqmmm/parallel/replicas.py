"""One runner for sets of replicas (MD runs, NEB images, umbrella windows, λ states), serial or over MPI.

    results = run_replicas(replicas, work, output)

Rank 0 decides which replicas still need running (``finished(replica)``, e.g. its result file
exists, so a rerun resumes only the unfinished ones), assigns them to ranks by cost
(:mod:`bioqmmm.parallel.schedule`) and broadcasts the plan; every rank runs its replicas with
``work(replica, poll)``. ``work`` builds everything itself (a System holding a ``PythonForce`` is
never pickled or sent) and calls ``poll()`` between steps: when another rank has failed, ``poll``
raises :class:`~bioqmmm.errors.ReplicaAbortedError`, so every rank stops within one step of the failure.
Rank 0 alone writes the shared record ``replicas.json`` (atomically): each replica's status,
result, wall time and error; the measured wall times are the costs of the next round.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
import traceback
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bioqmmm.errors import ReplicaAbortedError, ReplicaFailedError
from bioqmmm.parallel.comm import MPIComm, SerialComm, world
from bioqmmm.parallel.schedule import balanced, finish_times, spread

RECORD = "replicas.json"
log = logging.getLogger(__name__)


def replica_seed(seed: int, name: str) -> int:
    """A replica's own seed, from a run's seed and the replica's name (positive, below 2³¹): adding a
    replica leaves the others' seeds alone."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31 - 1) + 1


@dataclass(frozen=True)
class Replica:
    """A unit of work: ``name`` (unique, also its folder name), a prior ``cost`` (s) and any ``payload``."""

    name: str
    cost: float = 1.0
    payload: Any = None


def run_replicas(
    replicas: Sequence[Replica],
    work: Callable[[Replica, Callable[[], None]], dict],
    output: str | Path,
    *,
    finished: Callable[[Replica], dict | None] | None = None,
    comm: SerialComm | MPIComm | None = None,
    schedule: Callable[[dict[str, float], int], list[list[str]]] = balanced,
) -> dict[str, dict]:
    """Run every unfinished replica once; return {name: result} on every rank.

    ``finished(replica)`` returns the stored result of a replica completed earlier (or None).
    ``schedule`` maps {name: cost} and the number of ranks to each rank's replicas (default:
    :func:`~bioqmmm.parallel.schedule.balanced`). Raises :class:`~bioqmmm.errors.ReplicaFailedError`
    on every rank if any replica failed, after the record is written.
    """
    comm = comm or world()
    output = Path(output)
    names = [r.name for r in replicas]
    if len(set(names)) != len(names):
        raise ValueError(f"replica names must be unique: {names}")
    by_name = {r.name: r for r in replicas}
    try:
        plan = comm.bcast(_plan(replicas, output, finished, schedule, comm.size) if comm.rank == 0 else None)
        mine = _picklable(_run_mine([by_name[n] for n in plan["assignment"][comm.rank]], work, comm))
        gathered = comm.gather(mine)
        failure = outcome = None
        if comm.rank == 0:
            outcome = {name: {"status": "finished", "result": result, "resumed": True}
                       for name, result in plan["done"].items()}
            for part in gathered:
                outcome.update(part)
            failure = next(((n, o["error"]) for n, o in outcome.items() if o["status"] == "failed"), None)
            _write_record(output, outcome, plan, comm.size)
        failure, outcome = comm.bcast((failure, outcome))
        comm.drain()
    except BaseException:
        # Anything raised on one rank between collectives (a full disk, Ctrl-C) would leave the others
        # waiting for it forever: end the whole job.
        if comm.size > 1:
            traceback.print_exc()
            comm.abort(1)
        raise
    if failure is not None:
        raise ReplicaFailedError(*failure)
    return {name: o["result"] for name, o in outcome.items()}


def _plan(replicas, output: Path, finished, schedule, ranks: int) -> dict:
    """Rank 0: which replicas still need running, and on which rank.

    Costs measured in an earlier round replace the priors; priors of replicas not yet measured are
    scaled to the measured ones (median ratio), so that both are in the same units."""
    done = {r.name: result for r in replicas if finished and (result := finished(r)) is not None}
    measured = _measured_costs(output)
    ratios = sorted(measured[r.name] / r.cost for r in replicas if r.name in measured and r.cost > 0)
    scale = ratios[len(ratios) // 2] if ratios else 1.0
    costs = {r.name: measured.get(r.name, r.cost * scale) for r in replicas}
    todo = {r.name: costs[r.name] for r in replicas if r.name not in done}
    if 0 < len(todo) < ranks:
        log.warning("%d replicas to run on %d ranks: %d ranks idle; fewer ranks with more threads each would "
                    "finish as soon", len(todo), ranks, ranks - len(todo))
    assignment = schedule(todo, ranks)
    return {"done": done, "assignment": assignment, "predicted": finish_times(assignment, todo)}


def _picklable(outcome: dict[str, dict]) -> dict[str, dict]:
    """This rank's outcome, with any result that cannot be sent to rank 0 turned into a failure."""
    for name, entry in outcome.items():
        try:
            pickle.dumps(entry)
        except Exception as exc:
            outcome[name] = {"status": "failed", "error": f"its result cannot be sent between ranks: {exc!r}",
                             "rank": entry.get("rank")}
    return outcome


def _run_mine(replicas: list[Replica], work, comm) -> dict[str, dict]:
    """This rank's replicas in order; stops at its own failure or at another rank's abort."""

    def poll() -> None:
        message = comm.poll_abort()
        if message is not None:
            raise ReplicaAbortedError(f"stopped because {message}")

    outcome: dict[str, dict] = {}
    for index, replica in enumerate(replicas):
        start = time.perf_counter()
        try:
            poll()
            result = work(replica, poll)
        except ReplicaAbortedError as exc:
            for rest in replicas[index:]:
                outcome[rest.name] = {"status": "aborted", "error": str(exc), "rank": comm.rank,
                                      "ended_at": time.time()}
            break
        except Exception as exc:  # any failure of a replica stops every rank
            reason = f"{type(exc).__name__}: {exc}"
            comm.send_abort(f"replica {replica.name!r} failed ({reason})")
            outcome[replica.name] = {"status": "failed", "error": reason, "rank": comm.rank,
                                     "traceback": traceback.format_exc(limit=8), "ended_at": time.time()}
            for rest in replicas[index + 1 :]:
                outcome[rest.name] = {"status": "not run", "error": "an earlier replica on this rank failed",
                                      "rank": comm.rank}
            break
        outcome[replica.name] = {"status": "finished", "result": result, "rank": comm.rank,
                                 "wall_s": time.perf_counter() - start, "ended_at": time.time()}
    return outcome


def _measured_costs(output: Path) -> dict[str, float]:
    """Wall times of replicas measured in an earlier round (from the record), seconds."""
    path = output / RECORD
    if not path.exists():
        return {}
    record = json.loads(path.read_text())
    return {name: o["wall_s"] for name, o in record["replicas"].items() if o.get("wall_s")}


def _write_record(output: Path, outcome: dict, plan: dict, ranks: int) -> None:
    output.mkdir(parents=True, exist_ok=True)
    walls = [sum(o.get("wall_s", 0.0) for o in outcome.values() if o.get("rank") == r) for r in range(ranks)]
    record = {
        "ranks": ranks,
        "assignment": plan["assignment"],
        "predicted_busy_s": plan["predicted"],
        "measured_busy_s": walls,
        "measured_spread": spread(walls),
        "replicas": outcome,
    }
    tmp = output / (RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, output / RECORD)
