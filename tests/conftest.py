"""Shared small systems for the tests (built from package data, seconds to make)."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from openmm import app, unit

from bioqmmm.examples import forcefield, water_box

#: Tolerance of the finite-difference checks (../shared/TESTING.md): 1e-6 Eh/Bohr in kJ/mol/nm.
FD_ABS_TOL = 1e-6 * 49614.75


def _cluster(n_waters: int):
    top, _, pos = water_box(1.9)
    xyz = np.array(pos.value_in_unit(unit.nanometer))
    centre = xyz[0]
    residues = list(top.residues())
    dist = [np.linalg.norm(xyz[r._atoms[0].index] - centre) for r in residues]
    keep = set(np.argsort(dist)[:n_waters].tolist())
    modeller = app.Modeller(top, pos)
    modeller.delete([r for i, r in enumerate(residues) if i not in keep])
    system = forcefield().createSystem(
        modeller.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds, rigidWater=True
    )
    return modeller.topology, system, np.array(modeller.positions.value_in_unit(unit.nanometer))


@pytest.fixture(scope="session")
def water_cluster():
    """Non-periodic cluster of 12 TIP3P waters: (topology, system, positions nm)."""
    return _cluster(12)


@pytest.fixture(scope="session")
def small_water_box():
    """Periodic TIP3P box of edge 1.9 nm: (topology, system, positions nm)."""
    top, system, pos = water_box(1.9)
    return top, system, np.array(pos.value_in_unit(unit.nanometer))


def mm_energy(system: openmm.System, positions: np.ndarray, box=None) -> float:
    """Energy (kJ/mol) of a System on the Reference platform."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    if box is not None:
        context.setPeriodicBoxVectors(*box)
    context.setPositions(positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def central_difference(energy, positions: np.ndarray, atom: int, axis: int, h: float) -> float:
    """-dE/dx of ``energy(positions)`` by central difference (force component)."""
    plus, minus = positions.copy(), positions.copy()
    plus[atom, axis] += h
    minus[atom, axis] -= h
    return -(energy(plus) - energy(minus)) / (2 * h)
