"""A replica set with deterministic fake costs, run by tests/test_parallel.py (serially or under mpirun).

    python tests/mpi_fake_replicas.py OUTPUT {ok|fail} {balanced|round_robin}

Replica ``x`` sleeps COSTS[x] * UNIT seconds in small steps, polling for aborts between them, and
records that it ran. With ``fail``, replica ``f`` raises 0.5 units after it starts and replica ``d``
(on the other rank) takes 40 units instead of 2, so only the abort can end the run early.
"""

import json
import sys
import time
from pathlib import Path

from bioqmmm.errors import ReplicaFailedError
from bioqmmm.parallel import Replica, run_replicas
from bioqmmm.parallel.schedule import balanced, round_robin

COSTS = {"a": 8, "b": 2, "c": 6, "d": 2, "e": 4, "f": 2}
UNIT = 0.15  # seconds per cost unit
TICK = 0.02


def main(output: Path, mode: str, schedule: str) -> int:
    def work(replica: Replica, poll) -> dict:
        with open(output / "ran.txt", "a") as log:
            log.write(replica.name + "\n")
        start = time.perf_counter()
        units = 40 if mode == "fail" and replica.name == "d" else COSTS[replica.name]
        while time.perf_counter() < start + units * UNIT:
            if mode == "fail" and replica.name == "f" and time.perf_counter() > start + 0.5 * UNIT:
                raise RuntimeError("injected failure")
            time.sleep(TICK)
            poll()
        return {"cost": COSTS[replica.name]}

    def finished(replica: Replica):
        record = output / "replicas.json"
        if not record.exists():
            return None
        entry = json.loads(record.read_text())["replicas"].get(replica.name, {})
        return entry.get("result") if entry.get("status") == "finished" else None

    replicas = [Replica(name, cost=cost) for name, cost in COSTS.items()]
    try:
        run_replicas(replicas, work, output, finished=finished,
                     schedule={"balanced": balanced, "round_robin": round_robin}[schedule])
    except ReplicaFailedError as exc:
        print(f"FAILED {exc.replica}: {exc.reason}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    sys.exit(main(out, sys.argv[2], sys.argv[3]))
