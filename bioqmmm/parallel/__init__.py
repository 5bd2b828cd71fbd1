"""Replicas over MPI: :func:`run_replicas`, the cost model in :mod:`~bioqmmm.parallel.schedule`."""

from bioqmmm.parallel.comm import world
from bioqmmm.parallel.replicas import Replica, run_replicas

__all__ = ["Replica", "run_replicas", "world"]
