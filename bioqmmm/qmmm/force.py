"""The QM force: one ``openmm.PythonForce`` that evaluates E_QM and its forces.

The callback is a module-level function bound with ``functools.partial`` to a
:class:`QMForceKernel`, so the force pickles (and serialises with ``XmlSerializer``).
An exception raised in the callback reaches OpenMM's caller only as message text in an
``OpenMMException``; the kernel keeps the typed error so bioqmmm can re-raise it.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator

import numpy as np
import openmm
from openmm import unit

from bioqmmm.errors import CalculationError
from bioqmmm.qm.base import QMEngine
from bioqmmm.qmmm.embedding import EmbeddingResult
from bioqmmm.region.boundary import Boundary
from bioqmmm.region.region import QMRegion


class QMForceKernel:
    """Everything the QM force callback needs, in local (force-particle) order.

    Particles of the PythonForce are ``boundary.particles``: the QM atoms, then the MM atoms whose
    charges (or positions, for link atoms and redistributed charges) the QM region sees.
    ``last`` holds the last successful :class:`EmbeddingResult` and ``last_step`` its OpenMM
    step count, ``last_error`` the typed error of the last failed call, ``overhead`` the seconds
    spent outside the engine in the last call.

    A call with exactly the positions and box of the previous one, and unchanged engine options,
    returns the previous result without a QM calculation (``cache_hits`` counts them;
    ``evaluations`` counts real ones). So an energy report at step k costs nothing extra: the
    integrator's force call for step k + 1 is at the same positions. :meth:`clear_cache`
    forgets it.

    Inside :meth:`energy_only` the engine computes no gradients and the forces returned are zeros (an
    energy-only result is cached for energy-only calls; a full one serves both).
    """

    def __init__(self, region: QMRegion, boundary: Boundary, engine: QMEngine, embedding) -> None:
        self.region = region
        self.boundary = boundary
        self.engine = engine
        self.embedding = embedding
        self.last: EmbeddingResult | None = None
        self.last_error: BaseException | None = None
        self.last_step: int | None = None
        self.overhead = 0.0
        self.evaluations = 0
        self.cache_hits = 0
        self.gradients = True
        self._cache: tuple[np.ndarray, np.ndarray | None, float, np.ndarray | None] | None = None
        self._cache_options = getattr(engine, "options", None)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(last=None, last_error=None, _cache=None)
        return state

    @contextlib.contextmanager
    def energy_only(self) -> Iterator[None]:
        """Calls inside skip the gradients (for energies that need no forces)."""
        self.gradients = False
        try:
            yield
        finally:
            self.gradients = True

    def clear_cache(self) -> None:
        """Forget the cached result, so the next call runs the QM calculation."""
        self._cache = None

    def get_state(self) -> dict[str, np.ndarray]:
        """Arrays that restore the cache exactly (for checkpoints)."""
        if self._cache is None or self._cache[3] is None:
            return {}
        positions, box, energy, forces = self._cache
        state = {"positions": positions, "energy": np.array(energy), "forces": forces}
        if box is not None:
            state["box"] = box
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`get_state`."""
        if not state:
            self._cache = None
            return
        box = state.get("box")
        self._cache = (np.array(state["positions"]), None if box is None else np.array(box),
                       float(state["energy"]), np.array(state["forces"]))
        self._cache_options = getattr(self.engine, "options", None)

    def _cached(self, positions: np.ndarray, box: np.ndarray | None) -> tuple[float, np.ndarray] | None:
        if self._cache is None:
            return None
        old_positions, old_box, energy, forces = self._cache
        same_box = (box is None and old_box is None) or (
            box is not None and old_box is not None and np.array_equal(box, old_box)
        )
        same_engine = getattr(self.engine, "options", None) == self._cache_options
        has_forces = forces is not None or not self.gradients
        if same_box and same_engine and has_forces and np.array_equal(positions, old_positions):
            self.cache_hits += 1
            return energy, (forces.copy() if forces is not None else np.zeros_like(positions))
        return None

    def evaluate(self, positions: np.ndarray, box: np.ndarray | None, step: int | None) -> tuple[float, np.ndarray]:
        """E_QM (kJ/mol) and forces (kJ/mol/nm) for the force's particles."""
        start = time.perf_counter()
        if not np.all(np.isfinite(positions)):
            raise CalculationError(f"non-finite coordinates reached the QM force at step {step}")
        cached = self._cached(positions, box)
        if cached is not None:
            return cached
        sites = self.boundary
        result = self.embedding.evaluate(
            self.engine,
            self.region,
            sites.qm_sites.positions(positions, box),
            sites.charge_sites.positions(positions, box),
            sites.site_charges,
            box,
            step,
            gradients=self.gradients,
        )
        n = len(positions)
        forces = sites.qm_sites.spread(result.qm_forces, n) + sites.charge_sites.spread(result.mm_forces, n)
        self.last = result
        self.evaluations += 1
        self._cache = (positions.copy(), None if box is None else box.copy(), result.energy,
                       forces.copy() if self.gradients else None)
        self._cache_options = getattr(self.engine, "options", None)
        self.overhead = time.perf_counter() - start - result.qm.info.wall_time
        return result.energy, forces


def compute_qm_force(kernel: QMForceKernel, state: openmm.State, sign: float = 1.0) -> tuple[float, np.ndarray]:
    """PythonForce callback: unpack the State, evaluate, keep any typed error on the kernel; ``sign`` -1 gives
    -E_QM and its forces (a reference level subtracted from the QM force's group)."""
    step = state.getStepCount()
    try:
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        box = None
        if kernel.embedding.periodic:
            box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        energy, forces = kernel.evaluate(np.asarray(positions), None if box is None else np.asarray(box), step)
    except BaseException as exc:
        kernel.last_error = exc
        raise
    kernel.last_error = None
    kernel.last_step = step
    return (energy, forces) if sign == 1.0 else (sign * energy, sign * forces)


def make_qm_force(kernel: QMForceKernel, force_group: int, sign: float = 1.0,
                  name: str = "QMForce") -> openmm.PythonForce:
    """The picklable PythonForce acting on ``kernel.boundary.particles``: ``sign`` × E_QM."""
    force = openmm.PythonForce(functools.partial(compute_qm_force, kernel, sign=sign))
    force.setParticles(list(kernel.boundary.particles))
    force.setUsesPeriodicBoundaryConditions(bool(kernel.embedding.periodic))
    force.setForceGroup(force_group)
    force.setName(name)
    return force
