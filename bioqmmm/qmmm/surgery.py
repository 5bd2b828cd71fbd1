"""Building the MM part of a QM/MM System from a reference System (never modified).

E_MM is the reference force field with QM charges zeroed, every bonded term and
constraint lying entirely inside the QM region removed, QM-QM Lennard-Jones removed and
QM-MM Lennard-Jones kept (openmmtools ``AlchemicalFactory`` style: copy, then dispatch
on the force type).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import openmm

from bioqmmm.errors import InputError
from bioqmmm.units import COULOMB_KJMOL_NM

#: Forces that carry no per-particle interaction terms.
_NEUTRAL_FORCES = (
    openmm.CMMotionRemover,
    openmm.MonteCarloBarostat,
    openmm.MonteCarloAnisotropicBarostat,
    openmm.MonteCarloMembraneBarostat,
    openmm.MonteCarloFlexibleBarostat,
    openmm.AndersenThermostat,
)
#: One-body external potentials (restraints, walls): the same term in the MM and the QM/MM model, kept as is.
_EXTERNAL_FORCES = (openmm.CustomExternalForce,)


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
    elif not isinstance(force, _NEUTRAL_FORCES + _EXTERNAL_FORCES):
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


def _implicit_solvent(force: openmm.GBSAOBCForce, qm: frozenset[int]) -> None:
    """Kept as is: the QM atoms are solvated with their MM charges and radii (a mechanically embedded
    solvation term; the QM Hamiltonian sees no reaction field)."""


_HANDLERS = {
    openmm.GBSAOBCForce: _implicit_solvent,
    openmm.NonbondedForce: _nonbonded,
    openmm.HarmonicBondForce: _harmonic_bond,
    openmm.HarmonicAngleForce: _harmonic_angle,
    openmm.PeriodicTorsionForce: _periodic_torsion,
    openmm.RBTorsionForce: _rb_torsion,
    openmm.CMAPTorsionForce: _cmap,
}


def qm_internal_forces(reference: openmm.System, qm_atoms: Sequence[int]) -> list[openmm.Force]:
    """The MM force field's terms among QM atoms only: what :func:`build_mm_system` removes.

    Bonded terms lying entirely inside the QM region (constraints: :func:`constraint_springs`),
    and the Coulomb and Lennard-Jones
    interactions of QM-QM pairs (exceptions as in the reference, plain Coulomb without cutoff:
    the pairs are a few Angstrom apart). Used as the cheap reference potential of
    multiple-time-step integration (:mod:`bioqmmm.simulation.mts`).
    """
    qm = frozenset(int(i) for i in qm_atoms)
    forces = [_EXTRACTORS[type(f)](f, qm) for f in reference.getForces() if type(f) in _EXTRACTORS]
    forces = [f for f in forces if f is not None]
    for force in forces:
        force.setUsesPeriodicBoundaryConditions(reference.usesPeriodicBoundaryConditions())
    return forces


#: Harmonic force constants (kJ/mol/nm^2, E = 1/2 k (r - r0)^2) and lengths (nm) of bonds to
#: hydrogen, for the reference potential where a force field with constraints has no bond term:
#: Amber ff14SB's CT-HC, N-H, OH-HO and SH-HS values (340, 434, 553, 274 kcal/mol/A^2, E = K (r - r0)^2).
X_H_BONDS = {"C": (284512.0, 0.109), "N": (363171.2, 0.101), "O": (462750.4, 0.096), "S": (229283.2, 0.1336)}


def constraint_springs(
    reference: openmm.System, qm_atoms: Sequence[int], elements: Mapping[int, str]
) -> openmm.HarmonicBondForce:
    """Springs at the constraint length for the X-H constraints inside the QM region (which QM/MM frees).

    ``elements``: element symbol of each QM atom. H-H constraints (rigid water) get no spring.
    """
    qm = frozenset(int(i) for i in qm_atoms)
    springs = openmm.HarmonicBondForce()
    springs.setUsesPeriodicBoundaryConditions(reference.usesPeriodicBoundaryConditions())
    for index in range(reference.getNumConstraints()):
        i, j, length = reference.getConstraintParameters(index)
        if i in qm and j in qm and "H" in (elements[i], elements[j]) and elements[i] != elements[j]:
            heavy = elements[j] if elements[i] == "H" else elements[i]
            k, _ = X_H_BONDS.get(heavy, X_H_BONDS["C"])
            springs.addBond(i, j, length, k)
    return springs


def _internal_terms(force, count: int, get, n_atoms: int, qm: frozenset[int]) -> list[list]:
    """Parameters of the terms whose first ``n_atoms`` entries are all QM atoms."""
    terms = [get(force, index) for index in range(count(force))]
    return [t for t in terms if set(t[:n_atoms]) <= qm]


def _extract_bonds(force: openmm.HarmonicBondForce, qm: frozenset[int]):
    out = openmm.HarmonicBondForce()
    for t in _internal_terms(force, type(force).getNumBonds, type(force).getBondParameters, 2, qm):
        out.addBond(*t)
    return out if out.getNumBonds() else None


def _extract_angles(force: openmm.HarmonicAngleForce, qm: frozenset[int]):
    out = openmm.HarmonicAngleForce()
    for t in _internal_terms(force, type(force).getNumAngles, type(force).getAngleParameters, 3, qm):
        out.addAngle(*t)
    return out if out.getNumAngles() else None


def _extract_torsions(force: openmm.PeriodicTorsionForce | openmm.RBTorsionForce, qm: frozenset[int]):
    out = type(force)()
    for t in _internal_terms(force, type(force).getNumTorsions, type(force).getTorsionParameters, 4, qm):
        out.addTorsion(*t)
    return out if out.getNumTorsions() else None


def _extract_cmap(force: openmm.CMAPTorsionForce, qm: frozenset[int]):
    out = openmm.CMAPTorsionForce()
    for index in range(force.getNumMaps()):
        out.addMap(*force.getMapParameters(index))
    for index in range(force.getNumTorsions()):
        map_index, *atoms = force.getTorsionParameters(index)
        if set(atoms) <= qm:
            out.addTorsion(map_index, *atoms)
    return out if out.getNumTorsions() else None


def _extract_pairs(force: openmm.NonbondedForce, qm: frozenset[int]):
    """Coulomb + Lennard-Jones of every QM-QM pair, exceptions applied."""
    pair = openmm.CustomBondForce(f"{COULOMB_KJMOL_NM}*qq/r + 4*eps*((sig/r)^12 - (sig/r)^6)")
    for name in ("qq", "sig", "eps"):
        pair.addPerBondParameter(name)
    params = {i: force.getParticleParameters(i) for i in qm}
    exceptions = {}
    for index in range(force.getNumExceptions()):
        i, j, qq, sigma, epsilon = force.getExceptionParameters(index)
        if i in qm and j in qm:
            exceptions[min(i, j), max(i, j)] = (qq, sigma, epsilon)
    for i, j in itertools.combinations(sorted(qm), 2):
        if (i, j) in exceptions:
            qq, sigma, epsilon = exceptions[i, j]
        else:
            (qi, si, ei), (qj, sj, ej) = params[i], params[j]
            qq, sigma, epsilon = qi * qj, 0.5 * (si + sj), (ei * ej).sqrt()
        values = [x.value_in_unit_system(openmm.unit.md_unit_system) for x in (qq, sigma, epsilon)]
        if values[0] != 0.0 or values[2] != 0.0:
            pair.addBond(i, j, values)
    return pair if pair.getNumBonds() else None


_EXTRACTORS = {
    openmm.NonbondedForce: _extract_pairs,
    openmm.HarmonicBondForce: _extract_bonds,
    openmm.HarmonicAngleForce: _extract_angles,
    openmm.PeriodicTorsionForce: _extract_torsions,
    openmm.RBTorsionForce: _extract_torsions,
    openmm.CMAPTorsionForce: _extract_cmap,
}


def free_force_group(system: openmm.System, purpose: str) -> int:
    """The force group above every group ``system``'s forces use (OpenMM has 32); ``purpose`` names what
    needs it in the error when none is left."""
    group = max({force.getForceGroup() for force in system.getForces()} | {0}) + 1
    if group > 31:
        raise InputError(f"no free force group left for {purpose}")
    return group
