"""New OpenMM Systems assembled from pieces of existing ones: a subset of atoms, or copies (supercells).

``assemble([(system, atoms), ...])`` makes a System whose particles are the listed atoms of each
piece in turn, with every term (bond, angle, torsion, exception, constraint) whose atoms all lie in
the same piece. The nonbonded settings (method, cut-off, switch, Ewald tolerance, dispersion
correction) are the first piece's unless ``nonbonded_method`` overrides the method. Forces other than
those below are refused by name: copying a term a piece does not define would change the energy.
"""

from __future__ import annotations

from collections.abc import Sequence

import openmm

from bioqmmm.errors import InputError

Piece = tuple[openmm.System, Sequence[int]]


def assemble(pieces: Sequence[Piece], nonbonded_method: int | None = None) -> openmm.System:
    """The System of ``pieces`` (each a System and the atoms taken from it, in order).

    ``nonbonded_method``: an ``openmm.NonbondedForce`` method for the NonbondedForce (and, as NoCutoff,
    for the GBSAOBCForce); None keeps the first piece's settings.
    """
    maps: list[dict[int, int]] = []
    new = openmm.System()
    for system, atoms in pieces:
        start = new.getNumParticles()
        maps.append({int(old): start + k for k, old in enumerate(atoms)})
        for old in atoms:
            new.addParticle(system.getParticleMass(int(old)))
    first = pieces[0][0]
    kinds = [[type(force) for force in system.getForces()] for system, _ in pieces]
    if any(k != kinds[0] for k in kinds):
        raise InputError("the pieces' Systems have different forces: they cannot be joined")
    for slot, force in enumerate(first.getForces()):
        forces = [system.getForce(slot) for system, _ in pieces]
        copy = _copy_force(forces, maps, pieces, nonbonded_method)
        copy.setForceGroup(force.getForceGroup())
        new.addForce(copy)
    for (system, _), mapping in zip(pieces, maps, strict=True):
        for k in range(system.getNumConstraints()):
            i, j, length = system.getConstraintParameters(k)
            if i in mapping and j in mapping:
                new.addConstraint(mapping[i], mapping[j], length)
    return new


def _copy_force(forces, maps, pieces, nonbonded_method):
    """One force of the new System from the same force of every piece."""
    force = forces[0]
    if isinstance(force, openmm.HarmonicBondForce):
        copy = openmm.HarmonicBondForce()
        _terms(forces, maps, "getNumBonds", "getBondParameters", 2, copy.addBond)
    elif isinstance(force, openmm.HarmonicAngleForce):
        copy = openmm.HarmonicAngleForce()
        _terms(forces, maps, "getNumAngles", "getAngleParameters", 3, copy.addAngle)
    elif isinstance(force, openmm.PeriodicTorsionForce):
        copy = openmm.PeriodicTorsionForce()
        _terms(forces, maps, "getNumTorsions", "getTorsionParameters", 4, copy.addTorsion)
    elif isinstance(force, openmm.NonbondedForce):
        copy = _nonbonded_like(force, nonbonded_method)
        for part, (_, atoms) in zip(forces, pieces, strict=True):
            if part.getNumParticleParameterOffsets() or part.getNumExceptionParameterOffsets():
                raise InputError("a NonbondedForce with parameter offsets cannot be copied")
            for old in atoms:
                copy.addParticle(*part.getParticleParameters(int(old)))
        _terms(forces, maps, "getNumExceptions", "getExceptionParameters", 2, copy.addException)
    elif isinstance(force, openmm.GBSAOBCForce):
        copy = openmm.GBSAOBCForce()
        copy.setNonbondedMethod(force.getNonbondedMethod() if nonbonded_method is None else
                                openmm.GBSAOBCForce.NoCutoff)
        copy.setCutoffDistance(force.getCutoffDistance())
        copy.setSoluteDielectric(force.getSoluteDielectric())
        copy.setSolventDielectric(force.getSolventDielectric())
        for part, (_, atoms) in zip(forces, pieces, strict=True):
            for old in atoms:
                copy.addParticle(*part.getParticleParameters(int(old)))
    elif isinstance(force, openmm.CMMotionRemover):
        copy = openmm.CMMotionRemover(force.getFrequency())
    else:
        raise InputError(f"{type(force).__name__} cannot be copied into a new System (supported: harmonic bonds and "
                         "angles, periodic torsions, NonbondedForce, GBSAOBCForce, CMMotionRemover)")
    return copy


def _terms(forces, maps, count: str, getter: str, n_atoms: int, add) -> None:
    """Every term of each piece's force whose ``n_atoms`` atoms all lie in that piece, renumbered."""
    for part, mapping in zip(forces, maps, strict=True):
        get = getattr(part, getter)
        for k in range(getattr(part, count)()):
            term = get(k)
            ids, parameters = term[:n_atoms], term[n_atoms:]
            if all(i in mapping for i in ids):
                add(*[mapping[i] for i in ids], *parameters)


def _nonbonded_like(force: openmm.NonbondedForce, method: int | None) -> openmm.NonbondedForce:
    """An empty NonbondedForce with ``force``'s settings (``method`` in place of its method if given)."""
    copy = openmm.NonbondedForce()
    copy.setNonbondedMethod(force.getNonbondedMethod() if method is None else method)
    copy.setCutoffDistance(force.getCutoffDistance())
    copy.setUseSwitchingFunction(force.getUseSwitchingFunction())
    copy.setSwitchingDistance(force.getSwitchingDistance())
    copy.setEwaldErrorTolerance(force.getEwaldErrorTolerance())
    copy.setUseDispersionCorrection(force.getUseDispersionCorrection())
    copy.setReactionFieldDielectric(force.getReactionFieldDielectric())
    return copy
