"""Replicas over MPI: cost-model balance, collective failure and resume, and mpirun equal to serial.

The MPI tests run real ``mpirun -n 2`` jobs (Open MPI from PyPI, installed with the project).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
from conftest import mpirun

from bioqmmm.parallel.schedule import balanced, estimated_cost, finish_times, round_robin, spread

HERE = Path(__file__).parent
FAKE = HERE / "mpi_fake_replicas.py"
sys.path.insert(0, str(HERE))
from mpi_fake_replicas import COSTS  # noqa: E402


def _record(folder: Path) -> dict:
    return json.loads((folder / "replicas.json").read_text())


def test_cost_model_balances_unequal_replicas_where_round_robin_does_not():
    assert spread(finish_times(balanced(COSTS, 2), COSTS)) <= 0.15
    assert spread(finish_times(round_robin(COSTS, 2), COSTS)) > 0.15
    sizes = {"r1": 30, "r2": 28, "r3": 24, "r4": 20, "r5": 16, "r6": 12}  # QM regions of different size
    costs = {name: estimated_cost(n_qm, 2000, steps=100) for name, n_qm in sizes.items()}
    assert spread(finish_times(balanced(costs, 2), costs)) <= 0.15
    assert spread(finish_times(round_robin(costs, 2), costs)) > 0.15


@pytest.mark.parametrize("schedule, balanced_run", [("balanced", True), ("round_robin", False)])
def test_mpirun_unequal_replicas_finish_within_15_percent(tmp_path, schedule, balanced_run):
    run = mpirun(sys.executable, str(FAKE), str(tmp_path), "ok", schedule)
    assert run.returncode == 0, run.stderr[-2000:]
    record = _record(tmp_path)
    assert record["ranks"] == 2 and len(record["measured_busy_s"]) == 2
    assert (record["measured_spread"] <= 0.15) == balanced_run, record["measured_busy_s"]


def test_mpirun_failure_stops_every_rank_and_a_rerun_completes_only_the_rest(tmp_path):
    run = mpirun(sys.executable, str(FAKE), str(tmp_path), "fail", "balanced")
    assert run.returncode != 0
    assert "FAILED f: RuntimeError: injected failure" in run.stderr
    replicas = _record(tmp_path)["replicas"]
    status = {name: entry["status"] for name, entry in replicas.items()}
    assert status["f"] == "failed" and status["d"] == "aborted"  # d would have run 6 s more
    delay = replicas["d"]["ended_at"] - replicas["f"]["ended_at"]
    assert delay < 1.0, f"the other rank stopped {delay:.2f} s after the failure"  # one poll interval: 0.02 s
    finished_before = {name for name, s in status.items() if s == "finished"}
    assert finished_before == {"a", "b", "c", "e"}
    first = (tmp_path / "ran.txt").read_text().split()
    rerun = mpirun(sys.executable, str(FAKE), str(tmp_path), "ok", "balanced")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    again = (tmp_path / "ran.txt").read_text().split()[len(first):]
    assert sorted(again) == ["d", "f"]
    assert all(entry["status"] == "finished" for entry in _record(tmp_path)["replicas"].values())


@pytest.mark.slow
def test_md_stops_at_the_next_step_when_polled_and_keeps_its_checkpoint(tmp_path):
    from bioqmmm.errors import ReplicaAbortedError
    from bioqmmm.protocols.md import run_md
    from bioqmmm.run.build import build_qmmm
    from bioqmmm.run.protocol import load_protocol
    from bioqmmm.simulation.checkpoint import read_meta

    protocol = tmp_path / "md.yaml"
    protocol.write_text(REPLICA_FILE.split("replicas:")[0])
    config = load_protocol(protocol)
    qmmm, positions, box = build_qmmm(config)
    calls = []

    def poll():
        calls.append(1)
        if len(calls) == 3:
            raise ReplicaAbortedError("stopped because replica 'x' failed")

    with pytest.raises(ReplicaAbortedError, match="replica 'x' failed"):
        run_md(qmmm, positions, config.protocol, tmp_path / "out", box=box, poll=poll, progress=False)
    assert len(calls) == 3 and read_meta(tmp_path / "out" / "checkpoint.npz")["step"] == 2


@pytest.mark.slow
def test_replica_settings_are_checked_and_stale_results_are_not_reused(tmp_path):
    from bioqmmm.cli import main
    from bioqmmm.errors import InputError
    from bioqmmm.protocols.optimize import OptimizeSettings
    from bioqmmm.run.protocol import ReplicaSection, load_protocol
    from bioqmmm.run.runner import replica_config

    protocol = tmp_path / "replicas.yaml"
    protocol.write_text(REPLICA_FILE.replace("steps: 4", "steps: 2").replace("checkpoint_interval: 2",
                                                                             "checkpoint_interval: 1"))
    stale = tmp_path / "out" / "replicas" / "warm" / "result.json"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"steps": 999, "final_potential_energy": {"value": 123.0, "unit": "kJ/mol"}}))
    assert main(["run", str(protocol), "--no-progress"]) == 0
    result = json.loads(stale.read_text())
    assert result["steps"] == 2 and result["final_potential_energy"]["value"] != 123.0  # ran, not reused
    optimisation = dataclasses.replace(load_protocol(protocol), protocol=OptimizeSettings())
    with pytest.raises(InputError, match="replica 'warm': seed, temperature_k are not keys of the optimize protocol"):
        replica_config(optimisation, ReplicaSection(name="warm", seed=3, temperature_k=300))


def test_a_file_without_replicas_is_refused_undermpirun(tmp_path):
    protocol = tmp_path / "md.yaml"
    protocol.write_text(REPLICA_FILE.split("replicas:")[0])
    run = mpirun(sys.executable, "-m", "bioqmmm.cli", "run", str(protocol), "--no-progress")
    assert run.returncode != 0
    assert run.stderr.count("has no 'replicas' list") == 1  # one line, from rank 0


REPLICA_FILE = """\
system:
  example: alanine_dipeptide
  box_size_nm: 2.4
qm:
  sidechains: [ALA2]
  charge: 0
  multiplicity: 1
  method: hf
  basis: sto-3g
  options:
    conv_tol: 1e-10
protocol:
  type: md
  steps: 4
  timestep_fs: 0.5
  seed: 5
  report_interval: 1
  checkpoint_interval: 2
output: out
resources:
  threads: 1
replicas:
  - name: warm
    seed: 11
    temperature_k: 310
  - name: cold
    seed: 12
    temperature_k: 250
"""


@pytest.mark.slow
def test_protocol_replicas_under_mpirun_equal_the_serial_run(tmp_path):
    from bioqmmm.cli import main

    protocol = tmp_path / "replicas.yaml"
    protocol.write_text(REPLICA_FILE)
    assert main(["run", str(protocol), "-o", str(tmp_path / "serial"), "--no-progress"]) == 0
    run = mpirun(sys.executable, "-m", "bioqmmm.cli", "run", str(protocol), "-o", str(tmp_path / "mpi"),
                  "--no-progress")
    assert run.returncode == 0, run.stderr[-3000:]
    serial = json.loads((tmp_path / "serial" / "result.json").read_text())["replicas"]
    parallel = json.loads((tmp_path / "mpi" / "result.json").read_text())["replicas"]
    assert set(serial) == set(parallel) == {"warm", "cold"}
    for name in serial:
        a, b = serial[name]["final_potential_energy"]["value"], parallel[name]["final_potential_energy"]["value"]
        assert abs(a - b) < 1e-5, (name, a, b)  # kJ/mol: SCF converged to 1e-10 Eh
    assert serial["warm"]["final_potential_energy"] != serial["cold"]["final_potential_energy"]
    assert _record(tmp_path / "mpi")["ranks"] == 2


def test_measured_costs_of_the_last_round_rebalance_the_next(tmp_path):
    """Round 2 uses round 1's wall times (replica 'b' got 4x dearer); priors of new replicas are scaled."""
    from bioqmmm.parallel.replicas import Replica, _plan

    record = {"replicas": {"a": {"status": "finished", "wall_s": 2.0}, "b": {"status": "finished", "wall_s": 8.0},
                           "c": {"status": "finished", "wall_s": 2.0}, "d": {"status": "finished", "wall_s": 2.0}}}
    (tmp_path / "replicas.json").write_text(json.dumps(record))
    replicas = [Replica(name, cost=1.0) for name in "abcd"] + [Replica("new", cost=3.0)]
    plan = _plan(replicas, tmp_path, None, balanced, 2)
    # measured: a, c, d 2 s, b 8 s; 'new' priced at its prior 3 x the median measured/prior ratio 2 = 6 s
    assert sorted(plan["predicted"]) == [10.0, 10.0]
    assert sorted(len(names) for names in plan["assignment"]) == [2, 3]  # b with one cheap replica
    priors_only = balanced({r.name: r.cost for r in replicas}, 2)
    assert spread(finish_times(priors_only, {"a": 2, "b": 8, "c": 2, "d": 2, "new": 6})) > 0.15
