"""Cost model and assignment of replicas to ranks.

A replica's cost is its wall time for one round (an MD run, an NEB iteration): measured in the
previous round when there was one, else estimated from its size as ``c_QM N_QM^3 + c_MM N_MM``
(seconds; the cubic term is the SCF's diagonalisation/integral scaling at fixed basis per atom).
Replicas are whole units of work for one rank (PySCF has no MPI parallelism here; each rank's
cores go to its PySCF and OpenMM threads), so balancing is a scheduling problem: longest
processing time first (Graham 1969), within 4/3 of the optimal makespan, and exact in the common
case of many similar replicas. Between rounds the measured costs replace the estimates, so a
replica whose QM region grew (or whose SCF got harder) moves to a less loaded rank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

#: Prior cost constants (seconds) before anything is measured: HF/DFT step per QM atom^3 and MM step
#: per atom, from this project's benchmarks on 2 cores (docs/performance.md); only their ratio matters.
C_QM = 2.0e-4
C_MM = 2.0e-6


def estimated_cost(n_qm_atoms: int, n_mm_atoms: int, steps: int = 1) -> float:
    """Prior wall-time estimate of a replica, seconds: ``steps (C_QM N_QM^3 + C_MM N_MM)``."""
    return steps * (C_QM * n_qm_atoms**3 + C_MM * n_mm_atoms)


def round_robin(names: Sequence[str] | Mapping[str, float], n_ranks: int) -> list[list[str]]:
    """Replica i on rank i mod n, in the given order (the naive assignment, for comparison)."""
    names = list(names)
    return [names[rank::n_ranks] for rank in range(n_ranks)]


def balanced(costs: Mapping[str, float], n_ranks: int) -> list[list[str]]:
    """Longest processing time first: each replica, costliest first, to the least loaded rank.

    Deterministic: ties are broken by name, then by rank number.
    """
    loads = [0.0] * n_ranks
    assignment: list[list[str]] = [[] for _ in range(n_ranks)]
    for name in sorted(costs, key=lambda n: (-costs[n], n)):
        rank = min(range(n_ranks), key=lambda r: (loads[r], r))
        assignment[rank].append(name)
        loads[rank] += costs[name]
    return assignment


def finish_times(assignment: Sequence[Sequence[str]], costs: Mapping[str, float]) -> list[float]:
    """Predicted busy time of each rank, seconds."""
    return [sum(costs[name] for name in names) for names in assignment]


def spread(times: Sequence[float]) -> float:
    """(latest - earliest finish) / latest: 0 for a perfect balance."""
    busy = [t for t in times if t > 0] or [0.0]
    return 0.0 if max(busy) == 0 else (max(busy) - min(busy)) / max(busy)
