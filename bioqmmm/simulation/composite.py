"""Hamiltonians built from other models: each model evaluated in its own Context, one host System.

A composite Hamiltonian (the λ-mixed Hamiltonian of :mod:`bioqmmm.fep`, the adaptive partitions of
:mod:`bioqmmm.adaptive`) evaluates several complete models of the same particles — MM Systems or
:class:`~bioqmmm.qmmm.system.QMMMSystem` s — and combines their energies and forces. The dynamics runs
on a host System: the particles, masses, constraints and box of a template, and a single
``PythonForce`` that returns the combination.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence

import numpy as np
import openmm
from openmm import unit

from bioqmmm.errors import InputError
from bioqmmm.simulation.environment import reproducible_properties

#: A remembered evaluation: (positions nm, box nm or None, energy kJ/mol, forces kJ/mol/nm).
Evaluated = tuple[np.ndarray, np.ndarray | None, float, np.ndarray]


def remembered(last: Evaluated | None, positions: np.ndarray, box: np.ndarray | None) -> bool:
    """Whether ``last`` was evaluated at exactly ``positions`` and ``box``."""
    return (last is not None and np.array_equal(last[0], positions)
            and (box is None or np.array_equal(last[1], box)))


def remember(positions: np.ndarray, box: np.ndarray | None, energy: float, forces: np.ndarray) -> Evaluated:
    """An evaluation to keep (copies of the arrays)."""
    return positions.copy(), None if box is None else box.copy(), float(energy), forces


class ModelContext:
    """A model (an ``openmm.System`` or a QMMMSystem) in its own evaluation Context; remembers the result at
    the last positions evaluated, so the same structure twice costs one evaluation."""

    def __init__(self, model, platform: str = "CPU", threads: int | None = None) -> None:
        self.qmmm = model if hasattr(model, "kernel") else None
        self.system: openmm.System = model.system if self.qmmm is not None else model
        self.context = openmm.Context(self.system, openmm.VerletIntegrator(0.001),
                                      openmm.Platform.getPlatformByName(platform),
                                      reproducible_properties(platform, threads or 1))
        self._last: Evaluated | None = None

    def evaluate(self, positions: np.ndarray, box: np.ndarray | None, step: int) -> tuple[float, np.ndarray]:
        """Energy (kJ/mol) and forces (kJ/mol/nm) at ``positions`` (nm) in ``box`` (nm, or None)."""
        if remembered(self._last, positions, box):
            return self._last[2], self._last[3]
        if box is not None:
            self.context.setPeriodicBoxVectors(*box)
        self.context.setPositions(positions)
        self.context.setStepCount(step)  # the QM engine's density extrapolation follows the host's steps
        with self.typed_errors():
            state = self.context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        forces = np.asarray(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
        self._last = remember(positions, box, energy, forces)
        return float(energy), forces

    def typed_errors(self):
        """The QMMMSystem's typed-error context (an unconverged SCF re-raised as itself), or nothing."""
        return self.qmmm.typed_errors() if self.qmmm is not None else contextlib.nullcontext()

    def forget(self) -> None:
        """Drop the remembered result (after a checkpoint restore)."""
        self._last = None


def particle_masses(system: openmm.System) -> np.ndarray:
    """Mass (Da) of every particle of ``system``."""
    return np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])


def check_same_particles(template: openmm.System, systems: Sequence[tuple[str, openmm.System]],
                         source: str) -> None:
    """Each named System has ``template``'s particle count, masses and periodicity and no virtual sites."""
    n = template.getNumParticles()
    reference = particle_masses(template)
    for name, system in systems:
        if system.getNumParticles() != n:
            raise InputError(f"{name} has {system.getNumParticles()} particles, {source} {n}")
        if not np.allclose(particle_masses(system), reference):
            raise InputError(f"{name} has other particle masses than {source}")
        if any(system.isVirtualSite(i) for i in range(n)):
            raise InputError(f"{name} has virtual sites, which a composite Hamiltonian does not handle")
        if system.usesPeriodicBoundaryConditions() != template.usesPeriodicBoundaryConditions():
            raise InputError(f"{name} and {source} differ in periodicity")


class CompositeHamiltonian:
    """Base of a Hamiltonian evaluated from other models: subclasses set :attr:`system` with
    :meth:`host_system` and define :meth:`evaluate`; a failure inside a model (an unconverged SCF …) is
    kept and re-raised as its typed bioqmmm error by :meth:`typed_errors`."""

    reference_springs = None  # checkpoints look for multiple-time-step springs
    system: openmm.System
    last_error: BaseException | None = None

    def evaluate(self, positions: np.ndarray, box: np.ndarray | None = None, step: int = 0) -> tuple[float, np.ndarray]:
        """Energy (kJ/mol) and forces (kJ/mol/nm) at ``positions`` (nm)."""
        raise NotImplementedError

    def host_system(self, template: openmm.System, name: str,
                    drop_constraints: frozenset[int] = frozenset()) -> openmm.System:
        """A System with ``template``'s particles, masses, constraints (those with both atoms in
        ``drop_constraints`` left out) and box, whose only force, a ``PythonForce``, is :meth:`evaluate`."""
        system = openmm.System()
        for i in range(template.getNumParticles()):
            system.addParticle(template.getParticleMass(i))
        for k in range(template.getNumConstraints()):
            i, j, length = template.getConstraintParameters(k)
            if not (i in drop_constraints and j in drop_constraints):
                system.addConstraint(i, j, length)
        system.setDefaultPeriodicBoxVectors(*template.getDefaultPeriodicBoxVectors())
        force = openmm.PythonForce(functools.partial(_host_force, self))
        force.setParticles(list(range(system.getNumParticles())))
        force.setUsesPeriodicBoundaryConditions(template.usesPeriodicBoundaryConditions())
        force.setName(name)
        system.addForce(force)
        return system

    def structure(self, state: openmm.State) -> tuple[np.ndarray, np.ndarray | None]:
        """Positions (nm) and, for a periodic System, box vectors (nm) of a State of :attr:`system`."""
        positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        if not self.system.usesPeriodicBoundaryConditions():
            return positions, None
        return positions, np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))

    @contextlib.contextmanager
    def typed_errors(self) -> Iterator[None]:
        """Re-raise a failure inside a model (an unconverged SCF …) as its typed bioqmmm error."""
        try:
            yield
        except openmm.OpenMMException as exc:
            error, self.last_error = self.last_error, None
            if error is None:
                raise
            raise error from exc


def _host_force(hamiltonian: CompositeHamiltonian, state: openmm.State) -> tuple[float, np.ndarray]:
    """PythonForce callback of a host System."""
    try:
        result = hamiltonian.evaluate(*hamiltonian.structure(state), state.getStepCount())
    except BaseException as exc:
        hamiltonian.last_error = exc
        raise
    hamiltonian.last_error = None
    return result
