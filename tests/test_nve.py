"""NVE energy conservation of a QM water in TIP3P (../shared/TESTING.md criterion)."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from openmm import unit

from bioqmmm import QMMMSystem
from bioqmmm.examples import water_box
from bioqmmm.qm import PySCFEngine

STEPS = 2000  # 1 ps at 0.5 fs


def _nve_run(steps: int):
    top, system, pos = water_box(1.9)
    nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    nb.setUseSwitchingFunction(True)  # smooth MM Lennard-Jones so the MM part conserves energy too
    nb.setSwitchingDistance(0.6)
    nb.setEwaldErrorTolerance(1e-5)
    engine = PySCFEngine("hf", "sto-3g", conv_tol=1e-10)
    qmmm = QMMMSystem(top, system, [0, 1, 2], charge=0, multiplicity=1, engine=engine)
    integrator = openmm.VerletIntegrator(0.0005)
    integrator.setConstraintTolerance(1e-10)
    context = openmm.Context(qmmm.system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(pos)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 2026)
    times, totals = [], []
    with qmmm.typed_errors():
        for _ in range(steps // 10):
            integrator.step(10)
            state = context.getState(getEnergy=True)
            times.append(state.getTime().value_in_unit(unit.picosecond))
            totals.append(
                (state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole)
            )
    dof = 3 * qmmm.system.getNumParticles() - qmmm.system.getNumConstraints() - 3
    return np.array(times), np.array(totals), dof


@pytest.mark.slow
def test_nve_drift_of_qm_water_in_tip3p():
    times, totals, dof = _nve_run(STEPS)
    slope = np.polyfit(times, totals, 1)[0]  # kJ/mol/ps
    drift_per_dof = abs(slope) * 1000.0 / dof  # kJ/mol/ns per degree of freedom
    residual = totals - np.polyval(np.polyfit(times, totals, 1), times)
    print(f"NVE drift {drift_per_dof:.4f} kJ/mol/ns/dof over {times[-1]:.2f} ps; RMS fluctuation {residual.std():.4f}")
    assert drift_per_dof < 1.7
    assert np.max(np.abs(np.diff(totals))) < 10 * max(residual.std(), 1e-3)
