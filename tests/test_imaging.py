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


def test_triclinic_box_puts_every_molecule_at_its_image_nearest_the_qm_region():
    """Rhombic dodecahedron (OpenMM's reduced vectors): each diatomic's centroid ends at the lattice image nearest
    the centred QM molecule (brute force over neighbouring cells), bonds whole, the QM molecule untouched."""
    from openmm import app

    d = 3.0
    box = np.array([[d, 0, 0], [0, d, 0], [d / 2, d / 2, d * np.sqrt(2) / 2]])
    topology = app.Topology()
    chain = topology.addChain()
    rng = np.random.default_rng(3)
    x = []
    for _ in range(200):
        residue = topology.addResidue("DIA", chain)
        a = topology.addAtom("C1", app.element.carbon, residue)
        b = topology.addAtom("C2", app.element.carbon, residue)
        topology.addBond(a, b)
        start = rng.uniform(-2 * d, 2 * d, 3)
        x += [start, start + box[0] * np.round(rng.uniform(-1, 1)) + [0.1, 0.05, 0.0]]  # some bonds torn
    x = np.array(x)

    imaged = MoleculeImager(topology, [0, 1])(x, box)

    pairs = imaged.reshape(-1, 2, 3)
    assert np.linalg.norm(pairs[:, 1] - pairs[:, 0], axis=1).max() < 0.12  # whole again
    centre = box.sum(axis=0) / 2
    np.testing.assert_allclose(pairs[0].mean(axis=0), centre, atol=1e-12)
    cells = [(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]
    shifts = np.array([i * box[0] + j * box[1] + k * box[2] for i, j, k in cells])
    centroids = pairs.mean(axis=1)
    nearest = np.linalg.norm(centroids[:, None] + shifts[None] - centre, axis=2).min(axis=1)
    np.testing.assert_allclose(np.linalg.norm(centroids - centre, axis=1), nearest, atol=1e-9)


def test_frames_of_a_non_periodic_system_are_written_as_they_are():
    """OpenMM reports a default box even for a non-periodic System: the reporter must not wrap into it."""
    from bioqmmm.simulation.imaging import ImagedState

    topology, system, positions = alanine_dipeptide(box_size=None)
    x = np.asarray(positions.value_in_unit(unit.nanometer)) + 5.0  # far outside the default 2 nm box
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(x)
    state = context.getState(getPositions=True)
    written = ImagedState(state, MoleculeImager(topology, [0]), periodic=system.usesPeriodicBoundaryConditions())
    np.testing.assert_allclose(written.getPositions(asNumpy=True).value_in_unit(unit.nanometer), x, atol=1e-12)
