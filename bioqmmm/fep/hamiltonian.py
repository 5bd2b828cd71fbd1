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

import contextlib
import functools
from collections.abc import Iterator

import numpy as np
import openmm
from openmm import unit

from bioqmmm.errors import InputError
from bioqmmm.simulation.environment import reproducible_properties


class _End:
    """One end state: an evaluation Context of its System, the QMMMSystem behind it (if any), and the
    result at the last positions evaluated."""

    def __init__(self, model, platform: str, threads: int | None) -> None:
        self.qmmm = model if hasattr(model, "kernel") else None
        self.system: openmm.System = model.system if self.qmmm is not None else model
        self.context = openmm.Context(self.system, openmm.VerletIntegrator(0.001),
                                      openmm.Platform.getPlatformByName(platform),
                                      reproducible_properties(platform, threads or 1))
        self._last: tuple[np.ndarray, np.ndarray | None, float, np.ndarray] | None = None

    def evaluate(self, positions: np.ndarray, box: np.ndarray | None, step: int) -> tuple[float, np.ndarray]:
        """Energy (kJ/mol) and forces (kJ/mol/nm); the same positions and box twice cost nothing."""
        last = self._last
        if (last is not None and np.array_equal(last[0], positions)
                and (box is None or np.array_equal(last[1], box))):
            return last[2], last[3]
        if box is not None:
            self.context.setPeriodicBoxVectors(*box)
        self.context.setPositions(positions)
        self.context.setStepCount(step)  # the QM engine's density extrapolation follows the outer steps
        with self.typed_errors():
            state = self.context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        forces = np.asarray(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
        self._last = (positions.copy(), None if box is None else box.copy(), float(energy), forces)
        return float(energy), forces

    def typed_errors(self):
        return self.qmmm.typed_errors() if self.qmmm is not None else contextlib.nullcontext()

    def forget(self) -> None:
        self._last = None


class _StatePair:
    """The ``get_state``/``set_state`` of one kind of object (engine, kernel) of both ends, keys prefixed
    ``a.``/``b.`` (what :mod:`bioqmmm.simulation.checkpoint` stores)."""

    def __init__(self, ends: tuple[_End, _End], attribute: str) -> None:
        self._parts = [(tag, getattr(end.qmmm, attribute)) for tag, end in zip("ab", ends, strict=True)
                       if end.qmmm is not None]

    def get_state(self) -> dict[str, np.ndarray]:
        return {f"{tag}.{key}": value for tag, part in self._parts for key, value in part.get_state().items()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        for tag, part in self._parts:
            part.set_state({key[2:]: value for key, value in state.items() if key.startswith(f"{tag}.")})


class MixedHamiltonian:
    """U(λ) = (1 − ``lam``) U_a + ``lam`` U_b of ``model_a`` and ``model_b`` (each an ``openmm.System``
    or a QMMMSystem) over the same particles.

    ``constraints``: the System whose masses, constraints and box :attr:`system` takes (default: the
    first end's; both ends must sample the same constrained space, so a QM/MM end is best given the MM
    reference's constraints). ``platform``/``threads``: of the two evaluation Contexts.
    The object also stands in for a QMMMSystem in checkpoints (``engine``/``kernel`` state of both
    ends) and in :meth:`typed_errors`.
    """

    reference_springs = None  # checkpoints look for multiple-time-step springs

    def __init__(self, model_a, model_b, lam: float, *, constraints: openmm.System | None = None,
                 platform: str = "CPU", threads: int | None = None) -> None:
        self.ends = (_End(model_a, platform, threads), _End(model_b, platform, threads))
        system_a, system_b = (end.system for end in self.ends)
        template = constraints or system_a
        n = template.getNumParticles()
        source = "end state a" if constraints is None else "the constraints System"
        reference = [template.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n)]
        for name, system in (("end state a", system_a), ("end state b", system_b)):
            if system.getNumParticles() != n:
                raise InputError(f"{name} has {system.getNumParticles()} particles, {source} {n}")
            masses = [system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n)]
            if not np.allclose(masses, reference):
                raise InputError(f"{name} has other particle masses than {source}")
            if any(system.isVirtualSite(i) for i in range(n)):
                raise InputError(f"{name} has virtual sites, which the mixed Hamiltonian does not handle")
            if system.usesPeriodicBoundaryConditions() != template.usesPeriodicBoundaryConditions():
                raise InputError(f"{name} and {source} differ in periodicity")
        self.lam = lam
        self.last_error: BaseException | None = None
        self.engine = _StatePair(self.ends, "engine")
        self.kernel = _StatePair(self.ends, "kernel")
        self.system = self._build_system(template)

    @property
    def lam(self) -> float:
        return self._lam

    @lam.setter
    def lam(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise InputError(f"λ must lie between 0 and 1, not {value}")
        self._lam = float(value)

    def _build_system(self, template: openmm.System) -> openmm.System:
        system = openmm.System()
        for i in range(template.getNumParticles()):
            system.addParticle(template.getParticleMass(i))
        for k in range(template.getNumConstraints()):
            system.addConstraint(*template.getConstraintParameters(k))
        system.setDefaultPeriodicBoxVectors(*template.getDefaultPeriodicBoxVectors())
        force = openmm.PythonForce(functools.partial(_mixed_force, self))
        force.setParticles(list(range(system.getNumParticles())))
        force.setUsesPeriodicBoundaryConditions(template.usesPeriodicBoundaryConditions())
        force.setName("MixedHamiltonian")
        system.addForce(force)
        return system

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
        return self.energies(*_structure(self, state), state.getStepCount())

    @contextlib.contextmanager
    def typed_errors(self) -> Iterator[None]:
        """Re-raise a failure inside an end state (an unconverged SCF …) as its typed bioqmmm error."""
        try:
            yield
        except openmm.OpenMMException as exc:
            error, self.last_error = self.last_error, None
            if error is None:
                raise
            raise error from exc

    def forget(self) -> None:
        """Drop the remembered end-state results (after a checkpoint restore)."""
        for end in self.ends:
            end.forget()


def _mixed_force(hamiltonian: MixedHamiltonian, state: openmm.State) -> tuple[float, np.ndarray]:
    """PythonForce callback of :attr:`MixedHamiltonian.system`."""
    try:
        result = hamiltonian.evaluate(*_structure(hamiltonian, state), state.getStepCount())
    except BaseException as exc:
        hamiltonian.last_error = exc
        raise
    hamiltonian.last_error = None
    return result


def _structure(hamiltonian: MixedHamiltonian, state: openmm.State) -> tuple[np.ndarray, np.ndarray | None]:
    """Positions (nm) and, for a periodic System, box vectors (nm) of ``state``."""
    positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    if not hamiltonian.system.usesPeriodicBoundaryConditions():
        return positions, None
    return positions, np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
