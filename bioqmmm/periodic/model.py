"""One OpenMM Context for a cell whose box changes: energies, forces and relaxation at any box.

The Context is made once (OpenMM fixes the PME grid and split when it is made, so the energy is a
smooth function of the box vectors afterwards) on the Reference platform by default: stresses and
elastic constants are finite differences of energies and need double precision throughout. A
:class:`~bioqmmm.qmmm.system.QMMMSystem`'s System carries its QM force, so the same class evaluates
QM/MM cells (errors inside the QM force come out as their typed bioqmmm errors).
"""

from __future__ import annotations

import contextlib

import numpy as np
import openmm
import scipy.optimize
from openmm import unit

from bioqmmm.errors import CalculationError, InputError
from bioqmmm.simulation.optimizers import FIRE

#: Uniform shift (nm) of the positions handed to OpenMM. Crystal coordinates sit exactly on the box planes,
#: where rounding puts an atom at -1e-16 on the far edge of the Reference platform's PME grid and the energy
#: jumps by hundreds of kJ/mol under a 1e-12 nm displacement; a translation changes no periodic energy.
GRID_SHIFT_NM = np.array([0.01234567, 0.02345678, 0.03456789])
#: FIRE polish: the first step moves the atom under the largest force by this much (nm); no step moves an atom
#: further than the cap.
POLISH_FIRST_STEP_NM = 1e-5
POLISH_STEP_CAP_NM = 1e-3


class CellModel:
    """Energy (kJ/mol), forces (kJ/mol/nm) and relaxed positions (nm) of ``system`` at any box (rows, nm).

    ``qmmm``: the QMMMSystem whose ``system`` this is (for its typed errors), or None for an MM model.
    """

    def __init__(self, system: openmm.System, *, qmmm=None, platform: str = "Reference") -> None:
        if system.getNumConstraints():
            raise InputError("a cell model needs every atom free (strain moves atoms at fixed fractional "
                             "coordinates, which breaks distance constraints): build it with constraints: none")
        self.system, self.qmmm = system, qmmm
        self.context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                                      openmm.Platform.getPlatformByName(platform))
        self.evaluations = 0

    def _set(self, positions: np.ndarray, box: np.ndarray) -> None:
        self.context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in np.asarray(box, dtype=float)])
        self.context.setPositions(np.asarray(positions, dtype=float) + GRID_SHIFT_NM)

    def _errors(self):
        return self.qmmm.typed_errors() if self.qmmm is not None else contextlib.nullcontext()

    def energy(self, positions: np.ndarray, box: np.ndarray) -> float:
        """Potential energy, kJ/mol."""
        return self.energy_and_forces(positions, box, forces=False)[0]

    def energy_and_forces(self, positions: np.ndarray, box: np.ndarray, forces: bool = True):
        """(energy kJ/mol, forces (N, 3) kJ/mol/nm or None; without ``forces`` the QM engine computes no
        gradients)."""
        self._set(positions, box)
        energy_only = self.qmmm.kernel.energy_only() if self.qmmm is not None and not forces else \
            contextlib.nullcontext()
        with self._errors(), energy_only:
            state = self.context.getState(getEnergy=True, getForces=forces)
        self.evaluations += 1
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        if not forces:
            return energy, None
        return energy, np.asarray(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))

    def relax(self, positions: np.ndarray, box: np.ndarray, tolerance: float, max_iterations: int = 10000
              ) -> tuple[np.ndarray, float, float]:
        """Minimisation at fixed box: (positions nm, energy kJ/mol, largest remaining force component kJ/mol/nm).

        Three stages, each only as far as the one before leaves forces above ``tolerance`` (kJ/mol/nm):
        OpenMM's L-BFGS (it limits its steps, so it copes with the large forces of a fresh defect; it stops on
        an energy criterion at forces ~10–100 times larger than a stress needs); SciPy's L-BFGS-B on energy and
        forces; and FIRE on the forces alone (Bitzek et al. 2006), since near the minimum of a large cell the
        energy decrease of a step falls below the rounding of a total energy of 10⁵ kJ/mol and a line search
        stalls while the forces are still well defined. A structure still above twice ``tolerance`` is an
        error: stresses and energy differences at an unrelaxed structure are wrong.
        """
        shape = np.shape(positions)
        self._set(positions, box)
        with self._errors():
            openmm.LocalEnergyMinimizer.minimize(self.context, tolerance, max_iterations)
            state = self.context.getState(getPositions=True)
        positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)) - GRID_SHIFT_NM
        reference = self.energy(positions, box)

        def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
            energy, forces = self.energy_and_forces(x.reshape(shape), box)
            return energy - reference, -forces.ravel()

        result = scipy.optimize.minimize(objective, np.asarray(positions, dtype=float).ravel(), jac=True,
                                         method="L-BFGS-B", options={"gtol": tolerance, "ftol": 0.0,
                                                                     "maxiter": max_iterations, "maxcor": 20})
        relaxed = result.x.reshape(shape)
        energy, forces = self.energy_and_forces(relaxed, box)
        if np.abs(forces).max() > tolerance:
            relaxed, energy, forces = self._polish(relaxed, box, energy, forces, tolerance, max_iterations)
        largest = float(np.abs(forces).max())
        if largest > 2.0 * tolerance:
            raise CalculationError(f"relaxation stopped with a force component of {largest:.3g} kJ/mol/nm "
                                   f"(tolerance {tolerance:g}; L-BFGS-B: {result.message}; then {max_iterations} "
                                   "FIRE steps): raise the iteration limit or loosen the tolerance")
        return relaxed, energy, largest

    def _polish(self, positions: np.ndarray, box: np.ndarray, energy: float, forces: np.ndarray, tolerance: float,
                max_steps: int) -> tuple[np.ndarray, float, np.ndarray]:
        """FIRE steps on the forces alone until every component is below ``tolerance``."""
        fire = FIRE(POLISH_FIRST_STEP_NM)
        for _ in range(max_steps):
            largest = float(np.abs(forces).max())
            if largest <= tolerance:
                break
            step = fire.step(forces.ravel(), largest).reshape(forces.shape)
            longest = float(np.linalg.norm(step, axis=1).max())
            positions = positions + step * min(1.0, POLISH_STEP_CAP_NM / max(longest, 1e-300))
            energy, forces = self.energy_and_forces(positions, box)
        return positions, energy, forces
