"""Positions for writing: molecules whole, the QM region at the centre of the box.

OpenMM wraps by the molecules of the ``System``, and a QM/MM System has no bonds inside its QM
region, so ``enforcePeriodicBox`` can split a solute at a box edge. :class:`MoleculeImager` uses the
bonds of the ``Topology`` instead: each molecule is made whole (minimum image along a spanning tree
of its bonds), the QM atoms' centroid is moved to the box centre (a + b + c)/2, and every other molecule
is translated by lattice vectors to the image of its centroid nearest that centre (the cell around the
QM region; compact for dodecahedral and octahedral boxes). Energies do not change; only what is
written does. Positions and box vectors in nm; OpenMM's reduced triclinic form (a along x, b in
the xy plane).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import openmm
from openmm import app, unit

from bioqmmm.simulation.reporters import close_reporter


class MoleculeImager:
    """``imager(positions, box)``: positions (nm, N×3) with molecules whole and ``centre_atoms`` centred."""

    def __init__(self, topology: app.Topology, centre_atoms: Sequence[int]) -> None:
        n = topology.getNumAtoms()
        neighbours: list[list[int]] = [[] for _ in range(n)]
        for bond in topology.bonds():
            neighbours[bond[0].index].append(bond[1].index)
            neighbours[bond[1].index].append(bond[0].index)
        self.molecule = np.full(n, -1, dtype=int)
        depth = np.zeros(n, dtype=int)
        edges: list[tuple[int, int, int]] = []  # (depth of child, parent, child): a spanning tree per molecule
        for root in range(n):
            if self.molecule[root] >= 0:
                continue
            label = self.molecule.max() + 1
            self.molecule[root] = label
            queue = [root]
            for parent in queue:
                for child in neighbours[parent]:
                    if self.molecule[child] < 0:
                        self.molecule[child] = label
                        depth[child] = depth[parent] + 1
                        edges.append((depth[child], parent, child))
                        queue.append(child)
        tree = np.array(sorted(edges), dtype=int).reshape(-1, 3)
        self.edges = tree[:, 1:]
        self.levels = np.split(self.edges, np.flatnonzero(np.diff(tree[:, 0])) + 1) if len(tree) else []
        self.n_molecules = int(self.molecule.max()) + 1
        self.counts = np.bincount(self.molecule, minlength=self.n_molecules)
        self.centre_atoms = np.asarray(centre_atoms, dtype=int)
        self.centre_molecules = np.unique(self.molecule[self.centre_atoms])

    def __call__(self, positions: np.ndarray, box: np.ndarray | None) -> np.ndarray:
        x = np.array(positions, dtype=float)
        if box is None:
            return x
        box = np.asarray(box, dtype=float)
        self._make_whole(x, box)
        centre = box.sum(axis=0) / 2
        if len(self.centre_atoms):
            anchor = x[self.centre_atoms[0]]
            for m in self.centre_molecules:  # each QM molecule by its own QM atoms, nearest the first QM atom
                own = self.centre_atoms[self.molecule[self.centre_atoms] == m]
                mean = x[own].mean(axis=0)
                x[self.molecule == m] += anchor + _minimum_image(mean - anchor, box) - mean
            x += centre - x[self.centre_atoms].mean(axis=0)
        centroids = self._centroids(x)
        shift = centre + _minimum_image(centroids - centre, box) - centroids  # the cell around the centre
        shift[self.centre_molecules] = 0.0  # the QM molecules stay where they were put
        return x + shift[self.molecule]

    def _make_whole(self, x: np.ndarray, box: np.ndarray) -> None:
        """Each bonded child at the minimum image of its parent (in place); nothing to do when every bond
        already is (OpenMM's unwrapped positions)."""
        if not len(self.edges):
            return
        bonds = x[self.edges[:, 1]] - x[self.edges[:, 0]]
        if np.abs(_minimum_image(bonds, box) - bonds).max() < 1e-9:
            return
        for pairs in self.levels:
            x[pairs[:, 1]] = x[pairs[:, 0]] + _minimum_image(x[pairs[:, 1]] - x[pairs[:, 0]], box)

    def _centroids(self, x: np.ndarray) -> np.ndarray:
        sums = np.stack([np.bincount(self.molecule, weights=x[:, k], minlength=self.n_molecules) for k in range(3)],
                        axis=1)
        return sums / self.counts[:, None]


class ImagedState:
    """The two methods of an ``openmm.State`` that OpenMM's DCD/XTC reporters read, with imaged positions
    (``periodic`` False: positions as they are; OpenMM reports a default box even without periodicity)."""

    def __init__(self, state: openmm.State, imager: MoleculeImager, periodic: bool = True) -> None:
        self._state = state
        self._imager = imager
        self._periodic = periodic

    def getPeriodicBoxVectors(self, asNumpy: bool = False):  # noqa: N802, N803 (openmm.State's interface)
        return self._state.getPeriodicBoxVectors(asNumpy=asNumpy)

    def getPositions(self, asNumpy: bool = False):  # noqa: N802, N803
        positions = self._state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        box = self._state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        return self._imager(positions, box if self._periodic else None) * unit.nanometer


class ImagedReporter:
    """An OpenMM trajectory reporter (DCD/XTC, made with ``enforcePeriodicBox=False``) that writes imaged frames
    of a periodic System (frames of a non-periodic one as they are)."""

    def __init__(self, reporter, imager: MoleculeImager) -> None:
        self.reporter = reporter
        self.imager = imager

    def describeNextReport(self, simulation):  # noqa: N802 (OpenMM's reporter interface)
        return self.reporter.describeNextReport(simulation)

    def report(self, simulation, state: openmm.State) -> None:
        periodic = simulation.system.usesPeriodicBoundaryConditions()
        self.reporter.report(simulation, ImagedState(state, self.imager, periodic))

    def close(self) -> None:
        close_reporter(self.reporter)


def _minimum_image(d: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Displacements ``d`` (…×3) reduced to their minimum image in a reduced triclinic box: the usual
    reduction along c, b, a, then the shortest of that vector and its 26 neighbouring images (the reduction
    alone can miss the nearest image in skewed cells such as the rhombic dodecahedron)."""
    d = np.array(d, dtype=float)
    for k in (2, 1, 0):
        d -= np.outer(np.round(d[..., k] / box[k, k]), box[k]).reshape(d.shape)
    flat = d.reshape(-1, 3)
    candidates = flat[:, None, :] + _NEIGHBOURS @ box  # (M, 27, 3)
    best = np.argmin(np.einsum("mkx,mkx->mk", candidates, candidates), axis=1)
    return candidates[np.arange(len(flat)), best].reshape(d.shape)


_NEIGHBOURS = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=float)
