"""The SCF fallback ladder, expressed as data (cf. pymbar's ``mbar_solvers`` solver lists).

An engine tries each :class:`SCFStrategy` in order until one converges. The default
ladder follows the order used by robust production codes: DIIS variants first, then
level shift with damping, then a fresh atomic guess, then a second-order (Newton) solver.
"""

from __future__ import annotations

from dataclasses import dataclass

from bioqmmm.errors import InputError

_DIIS_KINDS = ("cdiis", "adiis", "ediis", "none")


@dataclass(frozen=True)
class SCFStrategy:
    """One rung of the ladder.

    diis: extrapolation ("cdiis", "adiis", "ediis" or "none"); level_shift in Hartree;
    damp: fraction of the old Fock matrix mixed in; fresh_guess: start from the
    superposition of atomic densities instead of the previous density; second_order:
    Newton solver (PySCF ``mf.newton()``); max_cycle: None keeps the engine's value.
    """

    name: str
    diis: str = "cdiis"
    level_shift: float = 0.0
    damp: float = 0.0
    fresh_guess: bool = False
    second_order: bool = False
    max_cycle: int | None = None

    def __post_init__(self) -> None:
        if self.diis not in _DIIS_KINDS:
            raise InputError(f"SCF strategy {self.name!r}: diis must be one of {_DIIS_KINDS}, got {self.diis!r}")


DEFAULT_LADDER: tuple[SCFStrategy, ...] = (
    SCFStrategy("cdiis"),
    SCFStrategy("adiis", diis="adiis", max_cycle=100),
    SCFStrategy("level_shift_damping", level_shift=0.5, damp=0.5, max_cycle=150),
    SCFStrategy("fresh_guess", fresh_guess=True, max_cycle=150),
    SCFStrategy("second_order", fresh_guess=True, second_order=True, max_cycle=60),
)
