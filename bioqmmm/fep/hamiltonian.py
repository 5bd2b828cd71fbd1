"""The λ-mixed Hamiltonian of two models of the same particles: U(λ) = (1 − λ) U_a + λ U_b.

The two end states are anything OpenMM can evaluate: an MM System (the QM region described by its
force field), a :class:`~bioqmmm.qmmm.system.QMMMSystem` at one level of theory, or one with another
QM region. Each end has its own evaluation Context; :attr:`MixedHamiltonian.system` is an OpenMM
System over the same particles (masses and constraints of one end) whose only force, a
``PythonForce``, returns (1 − λ) U_a + λ U_b and the forces mixed the same way, the exact gradient of
the mixed energy. Setting :attr:`MixedHamiltonian.lam` moves the System along λ (nonequilibrium
switching). At λ = 0 or 1 only the contributing end is evaluated during dynamics;
:meth:`MixedHamiltonian.energies` gives both end energies of any structure, from which the reduced
potential of every λ state follows: u_λ(x) = β [U_a(x) + λ ΔU(x)], ΔU = U_b − U_a.
"""

from __future__ import annotations

import numpy as np
import openmm

from bioqmmm.errors import InputError
from bioqmmm.simulation.composite import CompositeHamiltonian, ModelContext, check_same_particles


class _StatePair:
    """The ``get_state``/``set_state`` of one kind of object (engine, kernel) of both ends, keys prefixed
    ``a.``/``b.`` (what :mod:`bioqmmm.simulation.checkpoint` stores)."""

    def __init__(self, ends: tuple[ModelContext, ModelContext], attribute: str) -> None:
        self._parts = [(tag, getattr(end.qmmm, attribute)) for tag, end in zip("ab", ends, strict=True)
                       if end.qmmm is not None]

    def get_state(self) -> dict[str, np.ndarray]:
        return {f"{tag}.{key}": value for tag, part in self._parts for key, value in part.get_state().items()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        for tag, part in self._parts:
            part.set_state({key[2:]: value for key, value in state.items() if key.startswith(f"{tag}.")})


class MixedHamiltonian(CompositeHamiltonian):
    """U(λ) = (1 − ``lam``) U_a + ``lam`` U_b of ``model_a`` and ``model_b`` (each an ``openmm.System``
    or a QMMMSystem) over the same particles.

    ``constraints``: the System whose masses, constraints and box :attr:`system` takes (default: the
    first end's; both ends must sample the same constrained space, so a QM/MM end is best given the MM
    reference's constraints). ``platform``/``threads``: of the two evaluation Contexts.
    The object also stands in for a QMMMSystem in checkpoints (``engine``/``kernel`` state of both
    ends) and in :meth:`typed_errors`.
    """

    def __init__(self, model_a, model_b, lam: float, *, constraints: openmm.System | None = None,
                 platform: str = "CPU", threads: int | None = None) -> None:
        self.ends = (ModelContext(model_a, platform, threads), ModelContext(model_b, platform, threads))
        template = constraints or self.ends[0].system
        source = "end state a" if constraints is None else "the constraints System"
        check_same_particles(template, [("end state a", self.ends[0].system), ("end state b", self.ends[1].system)],
                             source)
        self.lam = lam
        self.engine = _StatePair(self.ends, "engine")
        self.kernel = _StatePair(self.ends, "kernel")
        self.system = self.host_system(template, "MixedHamiltonian")

    @property
    def lam(self) -> float:
        return self._lam

    @lam.setter
    def lam(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise InputError(f"λ must lie between 0 and 1, not {value}")
        self._lam = float(value)

    def weights(self) -> tuple[float, float]:
        return 1.0 - self._lam, self._lam

    def evaluate(self, positions: np.ndarray, box: np.ndarray | None = None, step: int = 0) -> tuple[float, np.ndarray]:
        """U(λ) (kJ/mol) and its forces (kJ/mol/nm) at ``positions`` (nm), ends of zero weight skipped."""
        energy, forces = 0.0, np.zeros_like(positions)
        for weight, end in zip(self.weights(), self.ends, strict=True):
            if weight > 0.0:
                e, f = end.evaluate(positions, box, step)
                energy += weight * e
                forces += weight * f
        return energy, forces

    def energies(self, positions: np.ndarray, box: np.ndarray | None = None, step: int = 0) -> tuple[float, float]:
        """(U_a, U_b) in kJ/mol at ``positions`` (nm); a structure just evaluated by the dynamics is free."""
        positions = np.asarray(positions, dtype=float)
        return tuple(end.evaluate(positions, box, step)[0] for end in self.ends)

    def energies_of(self, state: openmm.State) -> tuple[float, float]:
        """(U_a, U_b) in kJ/mol at the positions (and box) of an OpenMM State of :attr:`system`, read as the
        force reads them: after a step this is the structure the dynamics just evaluated (free)."""
        return self.energies(*self.structure(state), state.getStepCount())

    def forget(self) -> None:
        """Drop the remembered end-state results (after a checkpoint restore)."""
        for end in self.ends:
            end.forget()
