"""Building the MM part of a QM/MM System from a reference System (never modified).

E_MM is the reference force field with QM charges zeroed, every bonded term and
constraint lying entirely inside the QM region removed, QM-QM Lennard-Jones removed and
QM-MM Lennard-Jones kept (openmmtools ``AlchemicalFactory`` style: copy, then dispatch
on the force type).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence

import numpy as np
import openmm

from bioqmmm.errors import InputError

#: Forces that carry no per-particle interaction terms.
_NEUTRAL_FORCES = (
    openmm.CMMotionRemover,
    openmm.MonteCarloBarostat,
    openmm.MonteCarloAnisotropicBarostat,
    openmm.MonteCarloMembraneBarostat,
    openmm.MonteCarloFlexibleBarostat,
    openmm.AndersenThermostat,
)


def mm_charges(system: openmm.System) -> np.ndarray:
    """Partial charges (e) of every particle from the System's NonbondedForce (zeros if none)."""
    charges = np.zeros(system.getNumParticles())
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            for i in range(force.getNumParticles()):
                charges[i] = force.getParticleParameters(i)[0].value_in_unit(openmm.unit.elementary_charge)
    return charges


def build_mm_system(reference: openmm.System, qm_atoms: Sequence[int]) -> openmm.System:
    """A new System whose energy is E_MM of the additive QM/MM scheme."""
    system = copy.deepcopy(reference)
    qm = frozenset(int(i) for i in qm_atoms)
    for index in reversed(range(system.getNumConstraints())):
        i, j, _ = system.getConstraintParameters(index)
        if i in qm and j in qm:
            system.removeConstraint(index)
    for force in system.getForces():
        _modify(force, qm)
    return system


def _modify(force: openmm.Force, qm: frozenset[int]) -> None:
    handler = _HANDLERS.get(type(force))
    if handler is not None:
        handler(force, qm)
    elif not isinstance(force, _NEUTRAL_FORCES):
        raise InputError(
            f"force {force.getName()!r} ({type(force).__name__}) is not supported in a QM/MM system yet; "
            "remove it from the reference System or ask for support"
        )


def _nonbonded(force: openmm.NonbondedForce, qm: frozenset[int]) -> None:
    if force.getNumParticleParameterOffsets() or force.getNumExceptionParameterOffsets():
        raise InputError("NonbondedForce parameter offsets are not supported in a QM/MM system")
    for i in qm:
        _, sigma, epsilon = force.getParticleParameters(i)
        force.setParticleParameters(i, 0.0, sigma, epsilon)
    seen = set()
    for index in range(force.getNumExceptions()):
        i, j, qq, sigma, epsilon = force.getExceptionParameters(index)
        if i in qm or j in qm:
            both = i in qm and j in qm
            force.setExceptionParameters(index, i, j, 0.0, sigma, 0.0 if both else epsilon)
            seen.add((min(i, j), max(i, j)))
    for i, j in itertools.combinations(sorted(qm), 2):
        if (i, j) not in seen:
            force.addException(i, j, 0.0, 1.0, 0.0)


def _harmonic_bond(force: openmm.HarmonicBondForce, qm: frozenset[int]) -> None:
    for index in range(force.getNumBonds()):
        i, j, length, _ = force.getBondParameters(index)
        if i in qm and j in qm:
            force.setBondParameters(index, i, j, length, 0.0)


def _harmonic_angle(force: openmm.HarmonicAngleForce, qm: frozenset[int]) -> None:
    for index in range(force.getNumAngles()):
        i, j, k, angle, _ = force.getAngleParameters(index)
        if {i, j, k} <= qm:
            force.setAngleParameters(index, i, j, k, angle, 0.0)


def _periodic_torsion(force: openmm.PeriodicTorsionForce, qm: frozenset[int]) -> None:
    for index in range(force.getNumTorsions()):
        i, j, k, m, periodicity, phase, _ = force.getTorsionParameters(index)
        if {i, j, k, m} <= qm:
            force.setTorsionParameters(index, i, j, k, m, periodicity, phase, 0.0)


def _rb_torsion(force: openmm.RBTorsionForce, qm: frozenset[int]) -> None:
    for index in range(force.getNumTorsions()):
        i, j, k, m, *_ = force.getTorsionParameters(index)
        if {i, j, k, m} <= qm:
            force.setTorsionParameters(index, i, j, k, m, 0, 0, 0, 0, 0, 0)


def _cmap(force: openmm.CMAPTorsionForce, qm: frozenset[int]) -> None:
    zero_map = None
    for index in range(force.getNumTorsions()):
        map_index, *atoms = force.getTorsionParameters(index)
        if set(atoms) <= qm:
            if zero_map is None:
                size = force.getMapParameters(map_index)[0]
                zero_map = force.addMap(size, [0.0] * size * size)
            force.setTorsionParameters(index, zero_map, *atoms)


_HANDLERS = {
    openmm.NonbondedForce: _nonbonded,
    openmm.HarmonicBondForce: _harmonic_bond,
    openmm.HarmonicAngleForce: _harmonic_angle,
    openmm.PeriodicTorsionForce: _periodic_torsion,
    openmm.RBTorsionForce: _rb_torsion,
    openmm.CMAPTorsionForce: _cmap,
}
