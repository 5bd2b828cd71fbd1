"""A composite engine: the λ-mixed Hamiltonian of two engines, E(λ) = (1 − λ) E_a + λ E_b.

Every output of the engine protocol is linear in the energy, so each is mixed the same way: forces on
QM atoms and MM charges, potentials at MM charges (dE/dq), multipoles and atomic charges. The forces
stay the exact gradient of the mixed energy. At λ = 0 and λ = 1 the result is exactly engine a's or
engine b's (both are still evaluated, so that the reduced potential of every other λ is at hand).
A periodic embedding gives both engines the same far field: about every QM atom only when both take
per-atom potentials (``atomic_external``), else about the centroid -- so a PySCF/xTB mix at λ = 1 equals
the PySCF engine with ``PeriodicEmbedding(expansion="centroid")``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bioqmmm.errors import InputError
from bioqmmm.qm.base import QMEngine, QMInfo, QMMoments, QMResult


@dataclass(frozen=True)
class MixedOptions:
    """Options of the ``mixed`` engine: its two levels (a mapping of :class:`~bioqmmm.qm.factory.Level`'s
    fields, or in Python a Level) and λ in [0, 1]."""

    a: dict
    b: dict
    lam: float = 0.5


class MixedEngine:
    """(1 − ``lam``) × ``engine_a`` + ``lam`` × ``engine_b``."""

    def __init__(self, engine_a: QMEngine, engine_b: QMEngine, lam: float) -> None:
        if not 0.0 <= lam <= 1.0:
            raise InputError(f"mixed engine: lam must lie between 0 and 1, not {lam}")
        self.engines = (engine_a, engine_b)
        self.lam = float(lam)
        self.potentials = all(getattr(engine, "potentials", True) for engine in self.engines)
        self.atomic_external = all(getattr(engine, "atomic_external", False) for engine in self.engines)

    def validate(self, symbols: list[str], charge: int, multiplicity: int) -> None:
        for engine in self.engines:
            engine.validate(symbols, charge, multiplicity)

    def compute(self, symbols, coordinates, charge, multiplicity, mm_positions, mm_charges, **kwargs) -> QMResult:
        a, b = (engine.compute(symbols, coordinates, charge, multiplicity, mm_positions, mm_charges, **kwargs)
                for engine in self.engines)
        wa, wb = 1.0 - self.lam, self.lam

        def mix(x, y):
            return None if x is None or y is None else wa * np.asarray(x) + wb * np.asarray(y)

        moments = None
        if a.moments is not None and b.moments is not None:
            moments = QMMoments(mix(a.moments.m0, b.moments.m0), mix(a.moments.m1, b.moments.m1),
                                mix(a.moments.m2, b.moments.m2))
        info = QMInfo(scf_cycles=a.info.scf_cycles + b.info.scf_cycles,
                      converged=a.info.converged and b.info.converged,
                      wall_time=a.info.wall_time + b.info.wall_time, attempts=a.info.attempts + b.info.attempts,
                      warm_start=a.info.warm_start and b.info.warm_start)
        return QMResult(energy=wa * a.energy + wb * b.energy, qm_forces=mix(a.qm_forces, b.qm_forces),
                        mm_forces=mix(a.mm_forces, b.mm_forces), info=info,
                        mm_potentials=mix(a.mm_potentials, b.mm_potentials), moments=moments,
                        atomic_charges=mix(a.atomic_charges, b.atomic_charges),
                        center_gradient=mix(a.center_gradient, b.center_gradient), dipole=mix(a.dipole, b.dipole))

    def get_state(self) -> dict[str, np.ndarray]:
        return {f"{tag}.{key}": value for tag, engine in zip("ab", self.engines, strict=True)
                for key, value in engine.get_state().items()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        for tag, engine in zip("ab", self.engines, strict=True):
            engine.set_state({key[2:]: value for key, value in state.items() if key.startswith(f"{tag}.")})
