"""Written structures: molecules whole and the QM region centred (bioqmmm.simulation.imaging)."""

import numpy as np
import openmm
from openmm import unit

from bioqmmm.examples import alanine_dipeptide
from bioqmmm.simulation.imaging import MoleculeImager


def _mm_energy(system, positions, box):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPeriodicBoxVectors(*box)
    context.setPositions(positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def _bond_lengths(topology, x):
    pairs = np.array([(a.index, b.index) for a, b in topology.bonds()])
    return np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=1)


def test_solute_split_across_the_box_edge_is_written_whole_and_centred():
    topology, system, positions = alanine_dipeptide(box_size=2.0)
    x = np.asarray(positions.value_in_unit(unit.nanometer))
    box = np.array([v.value_in_unit(unit.nanometer) for v in system.getDefaultPeriodicBoxVectors()])
    solute = np.array([a.index for a in topology.atoms() if a.residue.name in ("ACE", "ALA", "NME")])
    split = x + np.diag(box) - x[solute].mean(axis=0)  # the whole box shifted: the solute on a corner
    split -= box.sum(axis=0) * np.floor(split / np.diag(box))  # wrapped atom by atom: the solute torn apart
    assert _bond_lengths(topology, split).max() > 1.0

    imaged = MoleculeImager(topology, solute[:5])(split, box)

    assert _bond_lengths(topology, imaged).max() < 0.2  # nm: every bond whole
    np.testing.assert_allclose(imaged[solute[:5]].mean(axis=0), box.sum(axis=0) / 2, atol=1e-12)
    imager = MoleculeImager(topology, solute[:5])
    centroids = imager._centroids(imaged)
    assert np.all(centroids >= 0) and np.all(centroids < np.diag(box))
    shifts = (imaged - split) / np.diag(box)  # every atom moved by whole lattice vectors only
    shifts -= shifts[solute[0]] - np.round(shifts[solute[0]])  # the common centring translation removed
    np.testing.assert_allclose(shifts, np.round(shifts), atol=1e-9)
    reference = _mm_energy(system, x, box)
    assert abs(_mm_energy(system, imaged, box) - reference) < 0.05  # kJ/mol: PME's grid is not translation invariant
