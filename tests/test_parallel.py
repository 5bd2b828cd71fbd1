"""Replicas over MPI: cost-model balance, collective failure and resume, and mpirun equal to serial.

The MPI tests run real ``mpirun -n 2`` jobs (Open MPI from PyPI, installed with the project).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bioqmmm.parallel.schedule import balanced, estimated_cost, finish_times, round_robin, spread

HERE = Path(__file__).parent
FAKE = HERE / "mpi_fake_replicas.py"
sys.path.insert(0, str(HERE))
from mpi_fake_replicas import COSTS  # noqa: E402


def _mpirun(*args: str, ranks: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    mpirun = shutil.which("mpirun") or str(Path(sys.executable).parent / "mpirun")
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1", "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe"}
    return subprocess.run([mpirun, "-n", str(ranks), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


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
    run = _mpirun(sys.executable, str(FAKE), str(tmp_path), "ok", schedule)
    assert run.returncode == 0, run.stderr[-2000:]
    record = _record(tmp_path)
    assert record["ranks"] == 2 and len(record["measured_busy_s"]) == 2
    assert (record["measured_spread"] <= 0.15) == balanced_run, record["measured_busy_s"]


def test_mpirun_failure_stops_every_rank_and_a_rerun_completes_only_the_rest(tmp_path):
    start = time.perf_counter()
    run = _mpirun(sys.executable, str(FAKE), str(tmp_path), "fail", "balanced")
    elapsed = time.perf_counter() - start
    assert run.returncode != 0
    assert "FAILED f: RuntimeError: injected failure" in run.stderr
    status = {name: entry["status"] for name, entry in _record(tmp_path)["replicas"].items()}
    assert status["f"] == "failed" and status["d"] == "aborted"  # d would have run 6 s more
    assert elapsed < 6.0, f"ranks did not stop promptly ({elapsed:.1f} s)"
    finished_before = {name for name, s in status.items() if s == "finished"}
    assert finished_before == {"a", "b", "c", "e"}
    first = (tmp_path / "ran.txt").read_text().split()
    rerun = _mpirun(sys.executable, str(FAKE), str(tmp_path), "ok", "balanced")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    again = (tmp_path / "ran.txt").read_text().split()[len(first):]
    assert sorted(again) == ["d", "f"]
    assert all(entry["status"] == "finished" for entry in _record(tmp_path)["replicas"].values())


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


def test_protocol_replicas_under_mpirun_equal_the_serial_run(tmp_path):
    from bioqmmm.cli import main

    protocol = tmp_path / "replicas.yaml"
    protocol.write_text(REPLICA_FILE)
    assert main(["run", str(protocol), "-o", str(tmp_path / "serial"), "--no-progress"]) == 0
    run = _mpirun(sys.executable, "-m", "bioqmmm.cli", "run", str(protocol), "-o", str(tmp_path / "mpi"),
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
