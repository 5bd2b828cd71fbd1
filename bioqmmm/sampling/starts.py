"""Window starts taken from given structures (a reaction path's images, an earlier run's frames).

    frames = read_models(path, topology)             # every model of a PDB/mmCIF file, nm
    s = coordinate_values(coordinate, frames, box)   # the reaction coordinate of each
    chosen = nearest_frames(s, umbrellas)            # one frame index per umbrella

A window started from the frame whose s is nearest its centre needs no pulling on the MM surface, which
cannot make or break bonds: the route for a reactive coordinate whose path was found at a QM level
(``protocol: neb`` writes ``images.pdb``), and for QM-only residues, which have no MM bonded terms to
hold them together under a pull.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

from bioqmmm.sampling.coordinates import ReactionCoordinate, Umbrella
from bioqmmm.structure_files import check_same_atoms, read_structure


def read_models(path: Path, topology: app.Topology) -> list[np.ndarray]:
    """Positions (nm) of every model of the PDB/mmCIF file ``path``, whose atoms must be ``topology``'s,
    in its order (residue and atom names are compared)."""
    structure = read_structure(path, "start structures")
    check_same_atoms(path, topology, structure.topology)
    return [np.array(structure.getPositions(asNumpy=True, frame=k).value_in_unit(unit.nanometer), dtype=float)
            for k in range(structure.getNumFrames())]


def coordinate_values(coordinate: ReactionCoordinate, frames: Sequence[np.ndarray],
                      box: np.ndarray | None = None) -> np.ndarray:
    """s of each frame (nm or rad), measured by OpenMM's own collective-variable force (minimum image in a
    periodic ``box``, nm), as the samplers measure it."""
    system = openmm.System()
    for _ in range(len(frames[0])):
        system.addParticle(1.0)
    force = coordinate.cv_force(box is not None)
    system.addForce(force)
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*box)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    values = []
    for frame in frames:
        context.setPositions(np.asarray(frame, dtype=float))
        values.append(coordinate.value(force.getCollectiveVariableValues(context)))
    return np.array(values)


def nearest_frames(values: np.ndarray, umbrellas: Sequence[Umbrella]) -> list[int]:
    """For each umbrella the index of the frame whose s is nearest its centre (across ±π for a dihedral)."""
    return [int(np.argmin(np.abs(umbrella.displacement(np.asarray(values))))) for umbrella in umbrellas]
