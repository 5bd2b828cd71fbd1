"""NVE energy conservation (../shared/TESTING.md criterion): a QM water, and a QM side chain with a cut bond."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from openmm import unit

from bioqmmm import QMMMSystem
from bioqmmm.examples import alanine_dipeptide, water_box
from bioqmmm.qm import PySCFEngine, XTBEngine
from bioqmmm.region.protein import sidechain
from bioqmmm.run.build import relax_example
from bioqmmm.simulation.reporters import energy_drift
from bioqmmm.units import positions_nm

STEPS = 2000  # 1 ps at 0.5 fs


def _smooth_mm(system: openmm.System) -> None:
    """Switch the MM Lennard-Jones smoothly and tighten PME, so the MM part conserves energy too."""
    nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    nb.setUseSwitchingFunction(True)
    nb.setSwitchingDistance(nb.getCutoffDistance() - 0.1 * unit.nanometer)
    nb.setEwaldErrorTolerance(1e-5)


def _nve_run(qmmm: QMMMSystem, positions, steps: int):
    """Verlet at 0.5 fs from 300 K: (times ps, total energies kJ/mol, degrees of freedom)."""
    integrator = openmm.VerletIntegrator(0.0005)
    integrator.setConstraintTolerance(1e-10)
    context = openmm.Context(qmmm.system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
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


def _assert_conserved(times: np.ndarray, totals: np.ndarray, dof: int) -> None:
    drift, fluctuation = energy_drift(times, totals, dof)
    print(f"NVE drift {abs(drift):.4f} kJ/mol/ns/dof over {times[-1]:.2f} ps; RMS fluctuation {fluctuation:.4f}")
    assert abs(drift) < 1.7
    assert np.max(np.abs(np.diff(totals))) < 10 * max(fluctuation, 1e-3)


@pytest.mark.slow
def test_nve_drift_of_qm_water_in_tip3p():
    top, system, pos = water_box(1.9, nonbonded_cutoff=0.7)
    _smooth_mm(system)
    engine = PySCFEngine("hf", "sto-3g", conv_tol=1e-10)
    qmmm = QMMMSystem(top, system, [0, 1, 2], charge=0, multiplicity=1, engine=engine)
    _assert_conserved(*_nve_run(qmmm, pos, STEPS))


@pytest.mark.slow
def test_nve_drift_of_qm_water_in_tip3p_at_xtb():
    """The same box at GFN2-xTB/MM: receding switched charges and the icosahedral far field conserve energy
    as the PySCF case does (same bound)."""
    top, system, pos = water_box(1.9, nonbonded_cutoff=0.7)
    _smooth_mm(system)
    qmmm = QMMMSystem(top, system, [0, 1, 2], charge=0, multiplicity=1, engine=XTBEngine("gfn2", accuracy=0.01))
    _assert_conserved(*_nve_run(qmmm, pos, STEPS))


@pytest.mark.slow
def test_nve_drift_with_a_cut_bond():
    """Ala side chain of solvated alanine dipeptide in QM: link atom on Cα–Cβ, RCD charges, PME box.

    The freshly solvated box is MM-relaxed first: its clashes otherwise make the first
    picoseconds' Verlet error a transient jump that is not what this test measures.
    """
    top, system, pos = alanine_dipeptide(box_size=2.4)
    _smooth_mm(system)
    pos = relax_example(system, positions_nm(pos))
    engine = PySCFEngine("hf", "sto-3g", conv_tol=1e-10)
    qmmm = QMMMSystem(top, system, sidechain(top, "ALA2"), charge=0, multiplicity=1, engine=engine)
    assert len(qmmm.links) == 1
    _assert_conserved(*_nve_run(qmmm, pos, STEPS))
