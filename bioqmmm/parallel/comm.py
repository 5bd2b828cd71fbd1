"""The communicator: MPI's world under ``mpirun``/``srun``, a one-rank stand-in otherwise.

mpi4py is imported only when a launcher started this process (its environment says so), so a
serial run never initialises MPI. Besides the few collectives the runner needs, the communicator
carries the abort protocol: a failing rank tells every other rank at once (non-blocking sends,
tag :data:`ABORT_TAG`); the others see it the next time they poll, between MD steps.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

#: Environment variables set by mpirun/mpiexec (Open MPI, MPICH/Hydra, PMIx) or srun for each rank.
LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS", "SLURM_STEP_NUM_TASKS")
ABORT_TAG = 7411
ABORT_MESSAGE_MAX = 1000


def launched_by_mpi() -> bool:
    """Whether a launcher started this process as one of several ranks."""
    for name in LAUNCHER_VARIABLES:
        value = os.environ.get(name)
        if value is not None and (not value.isdigit() or name == "PMIX_RANK" or int(value) > 1):
            return True
    return False


@dataclass
class SerialComm:
    """One rank: collectives are identities, there is nobody to abort."""

    rank: int = 0
    size: int = 1

    def bcast(self, value: Any, root: int = 0) -> Any:
        return value

    def gather(self, value: Any, root: int = 0) -> list[Any]:
        return [value]

    def allgather(self, value: Any) -> list[Any]:
        return [value]

    def barrier(self) -> None:
        return None

    def send_abort(self, message: str) -> None:
        return None

    def poll_abort(self) -> str | None:
        return None

    def drain(self) -> None:
        return None

    def abort(self, code: int) -> None:
        return None


@dataclass
class MPIComm:
    """mpi4py's COMM_WORLD with the abort protocol."""

    comm: Any
    _pending: list = field(default_factory=list)

    @property
    def rank(self) -> int:
        return self.comm.Get_rank()

    @property
    def size(self) -> int:
        return self.comm.Get_size()

    def bcast(self, value: Any, root: int = 0) -> Any:
        return self.comm.bcast(value, root=root)

    def gather(self, value: Any, root: int = 0) -> list[Any] | None:
        return self.comm.gather(value, root=root)

    def allgather(self, value: Any) -> list[Any]:
        return self.comm.allgather(value)

    def barrier(self) -> None:
        self.comm.Barrier()

    def send_abort(self, message: str) -> None:
        """Tell every other rank to stop (returns at once; the sends complete in the background).

        Messages are cut to :data:`ABORT_MESSAGE_MAX` characters so that they go eagerly."""
        message = message[:ABORT_MESSAGE_MAX]
        for other in range(self.size):
            if other != self.rank:
                self._pending.append(self.comm.isend(message, dest=other, tag=ABORT_TAG))

    def poll_abort(self) -> str | None:
        """The abort message of another rank, if one has arrived."""
        if self.comm.iprobe(source=-1, tag=ABORT_TAG):  # -1 is MPI.ANY_SOURCE
            return self.comm.recv(source=-1, tag=ABORT_TAG)
        return None

    def abort(self, code: int) -> None:
        """End every rank now (for an error on one rank that the others cannot know about)."""
        self.comm.Abort(code)

    def drain(self) -> None:
        """Complete our abort sends and discard abort messages queued for us. Called after the last
        collective, when every abort has been sent; receiving while waiting avoids the deadlock of two
        ranks that both failed waiting on each other's sends."""
        while self._pending:
            while self.poll_abort() is not None:
                pass
            self._pending = [r for r in self._pending if not r.test()[0]]
            if self._pending:
                time.sleep(0.001)
        self.comm.Barrier()  # every rank's sends are complete: what is queued now is all there is
        while self.poll_abort() is not None:
            pass


def launcher_rank() -> int:
    """This process's rank as the launcher numbered it (0 when not launched by one); no MPI needed."""
    for name in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def threads_per_rank(size: int) -> int:
    """CPU threads for each rank's PySCF and OpenMM, in this order: ``OMP_NUM_THREADS`` or Slurm's
    ``SLURM_CPUS_PER_TASK`` if set; the CPUs the rank is bound to, if the launcher bound it (Open MPI
    binds to one core for up to two ranks); else the node's cores shared by the ranks on the node
    (from the launcher's local size, else ``size``).
    """
    for name in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        if os.environ.get(name, "").isdigit() and int(os.environ[name]) > 0:
            return int(os.environ[name])
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if available < (os.cpu_count() or 1):
        return available
    local = None
    for name in ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(name, "").split("(")[0]
        if value.isdigit():
            local = int(value)
            break
    return max(1, available // (local or size))


def world() -> SerialComm | MPIComm:
    """MPI's COMM_WORLD when started by a launcher with more than one rank, else :class:`SerialComm`."""
    if not launched_by_mpi():
        return SerialComm()
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_size() == 1:
        return SerialComm()
    return MPIComm(MPI.COMM_WORLD)
