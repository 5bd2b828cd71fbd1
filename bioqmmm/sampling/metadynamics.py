"""Well-tempered metadynamics along a reaction coordinate, with OpenMM's ``Metadynamics``, frozen into
a static bias that MBAR can treat like any other state.

Gaussians of height h·exp(−V(s)/k_BΔT) are added every ``frequency`` steps, ΔT = T(γ − 1) for bias
factor γ (Barducci, Bussi & Parrinello, Phys. Rev. Lett. 100, 020603 (2008)). After ``steps`` the
bias V(s) is frozen: sampling then runs under the static bias V (a :class:`TabulatedBias`), so its
samples are an ordinary biased ensemble, exact for MBAR, with no time-dependent reweighting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import openmm
from openmm import app, unit
from scipy.interpolate import CubicSpline

from bioqmmm.sampling.coordinates import ReactionCoordinate
from bioqmmm.simulation.environment import reproducible_properties


@dataclass(frozen=True)
class TabulatedBias:
    """V(s) (kJ/mol) tabulated at ``len(values)`` evenly spaced s from ``minimum`` to ``maximum`` inclusive,
    interpolated by a natural cubic spline, or by a periodic one when ``period`` is set (the table then
    spans one whole period). Outside a non-periodic range V is its value at the nearer end: OpenMM's
    ``Continuous1DFunction`` is zero there but exerts no force at the edge either, so the dynamics
    samples the clamped function — which both OpenMM (``bias_table(min(max(s, lo), hi))``) and NumPy use.
    """

    values: tuple[float, ...]
    minimum: float
    maximum: float
    period: float | None = None
    center = None  # not a window: no centre to order neighbours by

    def __post_init__(self) -> None:
        if self.period is not None and abs(self.maximum - self.minimum - self.period) > 1e-9 * self.period:
            raise ValueError(f"a periodic table must span one period ({self.period}), not "
                             f"[{self.minimum}, {self.maximum}]")

    def energy(self, s: np.ndarray) -> np.ndarray:
        s = np.asarray(s, dtype=float)
        grid = np.linspace(self.minimum, self.maximum, len(self.values))
        if self.period is not None:
            spline = CubicSpline(grid, self.values, bc_type="periodic")
            return spline(self.minimum + np.mod(s - self.minimum, self.period))
        return CubicSpline(grid, self.values, bc_type="natural")(np.clip(s, self.minimum, self.maximum))

    def expression(self) -> str:
        if self.period is not None:
            return "bias_table(s)"
        return f"bias_table(min(max(s, {self.minimum!r}), {self.maximum!r}))"

    def configure(self, force: openmm.CustomCVForce) -> None:
        table = openmm.Continuous1DFunction(list(self.values), self.minimum, self.maximum, self.period is not None)
        force.addTabulatedFunction("bias_table", table)

    def describe(self) -> str:
        return f"s in [{self.minimum:.4g}, {self.maximum:.4g}]"


@dataclass(frozen=True)
class MetadynamicsSettings:
    """Well-tempered metadynamics over s in [``low``, ``high``] (a whole turn for a dihedral): Gaussians of
    width ``width`` (unit of s) and initial height ``height`` (kJ/mol) every ``frequency`` steps, bias
    factor ``bias_factor``, for ``steps`` Langevin steps of ``timestep_fs`` at ``temperature_k``."""

    low: float
    high: float
    width: float
    steps: int
    height: float = 1.0
    bias_factor: float = 10.0
    frequency: int = 500
    grid: int | None = None
    timestep_fs: float = 2.0
    temperature_k: float = 300.0
    friction_per_ps: float = 1.0
    seed: int = 1


def build_bias(
    system: openmm.System,
    topology: app.Topology,
    coordinate: ReactionCoordinate,
    positions: np.ndarray,
    settings: MetadynamicsSettings,
    *,
    box: np.ndarray | None = None,
    platform: str = "CPU",
    threads: int | None = None,
    typed_errors: Callable | None = None,
    poll: Callable[[], None] | None = None,
) -> tuple[TabulatedBias, np.ndarray]:
    """Run well-tempered metadynamics on ``system`` (which gains the bias force: use a fresh one); return
    the final bias V(s) = −F(s) ΔT/(T + ΔT) as a :class:`TabulatedBias` (kJ/mol) and the final positions
    (nm), a start for sampling under the frozen bias. ``typed_errors``: a QMMMSystem's, for a QM level."""
    periodic = coordinate.period is not None
    variable = app.BiasVariable(coordinate.cv_force(system.usesPeriodicBoundaryConditions()), settings.low,
                                settings.high, settings.width, periodic, settings.grid)
    temperature = settings.temperature_k * unit.kelvin
    meta = app.Metadynamics(system, [variable], temperature, settings.bias_factor,
                            settings.height * unit.kilojoule_per_mole, settings.frequency)
    integrator = openmm.LangevinMiddleIntegrator(temperature, settings.friction_per_ps / unit.picosecond,
                                                 settings.timestep_fs * 1e-3 * unit.picosecond)
    integrator.setRandomNumberSeed(settings.seed)
    properties = reproducible_properties(platform, threads or 1)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName(platform), properties)
    if box is not None:
        simulation.context.setPeriodicBoxVectors(*box)
    simulation.context.setPositions(positions)
    simulation.context.setVelocitiesToTemperature(temperature, settings.seed)
    guard = typed_errors or contextlib.nullcontext
    done = 0
    while done < settings.steps:
        chunk = min(settings.frequency * 10, settings.steps - done)
        with guard():
            meta.step(simulation, chunk)
        done += chunk
        if poll is not None:
            poll()
    delta_t = settings.temperature_k * (settings.bias_factor - 1)
    free = meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole)
    bias = -np.asarray(free, dtype=float).ravel() * delta_t / (settings.temperature_k + delta_t)
    final = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    table = TabulatedBias(tuple(float(v) for v in bias), settings.low, settings.high, coordinate.period)
    return table, np.asarray(final)
