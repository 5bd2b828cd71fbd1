"""Typed errors of bioqmmm.

Set-up errors (bad input, found before any expensive work) derive from
:class:`InputError`; run-time failures of a calculation derive from
:class:`CalculationError`. Library code raises these and never calls ``sys.exit``.
"""

from __future__ import annotations

from dataclasses import dataclass


class BioQMMMError(Exception):
    """Base class of every error raised by bioqmmm."""


class InputError(BioQMMMError, ValueError):
    """Invalid user input (charge, multiplicity, method, basis, option, selection)."""


class SelectionError(InputError):
    """A QM selection that is empty, out of range or otherwise unusable."""


class TopologyError(InputError):
    """A topology problem, e.g. a QM region that cuts a covalent bond."""


class CalculationError(BioQMMMError, RuntimeError):
    """A calculation that started but could not produce a trustworthy result."""


@dataclass(frozen=True)
class SCFAttempt:
    """One rung of the SCF fallback ladder as it was tried."""

    strategy: str
    cycles: int
    converged: bool
    energy: float  # Hartree, last SCF energy of this attempt


class SCFConvergenceError(CalculationError):
    """Every strategy of the SCF fallback ladder failed to converge.

    ``step`` is the MD step (OpenMM step count) or engine call number at which the
    failure happened; ``attempts`` lists every strategy tried, in order.
    """

    def __init__(self, step: int | None, attempts: list[SCFAttempt], where: str = "") -> None:
        self.step = step
        self.attempts = list(attempts)
        tried = "; ".join(f"{a.strategy}: {a.cycles} cycles, E={a.energy:.10f} Eh" for a in self.attempts)
        at = f"step {step}" if step is not None else "an unnumbered call"
        super().__init__(f"SCF did not converge at {at}{where} after every ladder strategy ({tried})")


class PreparationError(InputError):
    """A structure that cannot be prepared: unreadable file, gap too long, residue without parameters.

    The message names the file, the line where known, and the residue.
    """


class ReplicaAbortedError(BioQMMMError):
    """Raised inside a replica's work when another replica (on another rank) failed: stop promptly."""


class ReplicaFailedError(CalculationError):
    """A replica failed; every rank stops. ``replica`` names it, ``reason`` is its error."""

    def __init__(self, replica: str, reason: str) -> None:
        self.replica = replica
        self.reason = reason
        super().__init__(f"replica {replica!r} failed: {reason}; finished replicas keep their results, "
                         "rerun to complete the others")

    def __reduce__(self):  # picklable (multiprocessing, mpi4py.futures)
        return (type(self), (self.replica, self.reason))
