"""The communicator: MPI's world under ``mpirun``/``srun``, a one-rank stand-in otherwise.

mpi4py is imported only when a launcher started this process (its environment says so), so a
serial run never initialises MPI. Besides the few collectives the runner needs, the communicator
carries the abort protocol: a failing rank tells every other rank at once (non-blocking sends,
tag :data:`ABORT_TAG`); the others see it the next time they poll, between MD steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

#: Environment variables set by mpirun/mpiexec (Open MPI, MPICH/Hydra, PMIx) or srun for each rank.
LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS", "SLURM_STEP_NUM_TASKS")
ABORT_TAG = 7411


def launched_by_mpi() -> bool:
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


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
        """Tell every other rank to stop (returns at once; the sends complete in the background)."""
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
        """Complete our abort sends and discard abort messages still queued for us (before exiting)."""
        for request in self._pending:
            request.wait()
        self._pending.clear()
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
    """CPU threads for each rank's PySCF and OpenMM: the node's cores shared by the ranks on the node.

    The ranks per node come from the launcher (Open MPI, MPICH/Hydra, Slurm), else ``size``.
    """
    local = None
    for name in ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(name, "").split("(")[0]
        if value.isdigit():
            local = int(value)
            break
    return max(1, (os.cpu_count() or 1) // (local or size))


def world() -> SerialComm | MPIComm:
    """MPI's COMM_WORLD when started by a launcher with more than one rank, else :class:`SerialComm`."""
    if not launched_by_mpi():
        return SerialComm()
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_size() == 1:
        return SerialComm()
    return MPIComm(MPI.COMM_WORLD)
