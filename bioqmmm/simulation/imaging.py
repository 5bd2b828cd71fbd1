"""Positions for writing: molecules whole, the QM region at the centre of the box.

OpenMM wraps by the molecules of the ``System``, and a QM/MM System has no bonds inside its QM
region, so ``enforcePeriodicBox`` can split a solute at a box edge. :class:`MoleculeImager` uses the
bonds of the ``Topology`` instead: each molecule is made whole (minimum image along a spanning tree
of its bonds), the QM atoms' centroid is moved to the box centre, and every molecule whose centroid
lies outside the box is translated by lattice vectors into it. Energies do not change; only what is
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
        self.levels = [np.array([(p, c) for d, p, c in edges if d == level], dtype=int).reshape(-1, 2)
                       for level in range(1, depth.max() + 1)]
        self.n_molecules = int(self.molecule.max()) + 1
        self.counts = np.bincount(self.molecule, minlength=self.n_molecules)
        self.centre_atoms = np.asarray(centre_atoms, dtype=int)

    def __call__(self, positions: np.ndarray, box: np.ndarray | None) -> np.ndarray:
        x = np.array(positions, dtype=float)
        if box is None:
            return x
        box = np.asarray(box, dtype=float)
        for pairs in self.levels:  # whole molecules: each child at the minimum image of its parent
            x[pairs[:, 1]] = x[pairs[:, 0]] + _minimum_image(x[pairs[:, 1]] - x[pairs[:, 0]], box)
        if len(self.centre_atoms):
            anchor = x[self.centre_atoms[0]]
            centroids = self._centroids(x)
            for m in np.unique(self.molecule[self.centre_atoms]):  # QM molecules nearest the first QM atom
                x[self.molecule == m] += anchor + _minimum_image(centroids[m] - anchor, box) - centroids[m]
            x += box.sum(axis=0) / 2 - x[self.centre_atoms].mean(axis=0)
        centroids = self._centroids(x)
        x += (_wrapped(centroids, box) - centroids)[self.molecule]
        return x

    def _centroids(self, x: np.ndarray) -> np.ndarray:
        sums = np.zeros((self.n_molecules, 3))
        np.add.at(sums, self.molecule, x)
        return sums / self.counts[:, None]

    def state(self, state: openmm.State) -> ImagedState:
        """``state`` whose positions are imaged (for OpenMM's trajectory reporters)."""
        return ImagedState(state, self)


class ImagedState:
    """The two methods of an ``openmm.State`` that OpenMM's DCD/XTC reporters read, with imaged positions."""

    def __init__(self, state: openmm.State, imager: MoleculeImager) -> None:
        self._state = state
        self._imager = imager

    def getPeriodicBoxVectors(self, asNumpy: bool = False):  # noqa: N802, N803 (openmm.State's interface)
        return self._state.getPeriodicBoxVectors(asNumpy=asNumpy)

    def getPositions(self, asNumpy: bool = False):  # noqa: N802, N803
        positions = self._state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        box = self._state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        return self._imager(positions, box) * unit.nanometer


class ImagedReporter:
    """An OpenMM trajectory reporter (DCD/XTC, made with ``enforcePeriodicBox=False``) that writes imaged frames."""

    def __init__(self, reporter, imager: MoleculeImager) -> None:
        self.reporter = reporter
        self.imager = imager

    def describeNextReport(self, simulation):  # noqa: N802 (OpenMM's reporter interface)
        return self.reporter.describeNextReport(simulation)

    def report(self, simulation, state: openmm.State) -> None:
        self.reporter.report(simulation, self.imager.state(state))

    def close(self) -> None:
        close_reporter(self.reporter)


def _minimum_image(d: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Displacements ``d`` (…×3) reduced to their minimum image in a reduced triclinic box."""
    d = np.array(d, dtype=float)
    for k in (2, 1, 0):
        d -= np.outer(np.round(d[..., k] / box[k, k]), box[k]).reshape(d.shape)
    return d


def _wrapped(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``points`` (M×3) translated by lattice vectors into the box [0, a) × [0, b) × [0, c)."""
    p = np.array(points, dtype=float)
    for k in (2, 1, 0):
        p -= np.outer(np.floor(p[:, k] / box[k, k]), box[k])
    return p
