"""Periodic cells: supercells with a defect cell at the origin, and homogeneous deformations of a cell.

A :class:`Cell` is a Topology, an OpenMM System, positions and box vectors (rows, nm; OpenMM's reduced
lower-triangular form). :func:`supercell` repeats a host cell n_a × n_b × n_c times and puts a defect
cell (same box, any atoms) in the first copy, so the defect cell's atom indices, and with them its QM
region, are the supercell's first atoms. :func:`deformed` applies a deformation gradient F to a cell at
fixed fractional coordinates and rotates the result back into OpenMM's box form (a rigid rotation
changes no energy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np
import openmm
from openmm import app, unit

from bioqmmm.errors import InputError
from bioqmmm.qmmm.surgery import mm_charges
from bioqmmm.system_terms import assemble


@dataclass
class Cell:
    """A periodic model: topology, System, positions (N, 3) nm and box (3, 3) nm, rows a, b, c."""

    topology: app.Topology
    system: openmm.System
    positions: np.ndarray
    box: np.ndarray

    @property
    def volume(self) -> float:
        """Cell volume, nm³."""
        return float(abs(np.linalg.det(self.box)))

    def charges(self) -> np.ndarray:
        """The NonbondedForce charges, e (zeros without one)."""
        return mm_charges(self.system)

    def net_charge(self) -> float:
        """The MM model's total charge, e."""
        return float(self.charges().sum())


def supercell(host: Cell, repeats: Sequence[int], defect: Cell | None = None) -> Cell:
    """``host`` repeated ``repeats`` = (n_a, n_b, n_c) times along its box vectors; the copy at the origin is
    ``defect`` (same box as the host) when given, and its atoms come first."""
    repeats = tuple(int(n) for n in repeats)
    if len(repeats) != 3 or min(repeats) < 1:
        raise InputError(f"supercell repeats must be three positive integers, got {repeats}")
    first = defect or host
    if defect is not None and not np.allclose(defect.box, host.box, atol=1e-6):
        raise InputError("the defect cell's box differs from the host cell's: they must be the same cell")
    shifts = [np.asarray(n, dtype=float) @ host.box for n in product(*(range(n) for n in repeats))]
    cells = [first] + [host] * (len(shifts) - 1)
    topology = app.Topology()
    for cell in cells:
        _append_topology(topology, cell.topology)
    box = np.asarray(repeats, dtype=float)[:, None] * host.box
    topology.setPeriodicBoxVectors([openmm.Vec3(*row) for row in box] * unit.nanometer)
    system = assemble([(cell.system, range(cell.system.getNumParticles())) for cell in cells])
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    positions = np.concatenate([cell.positions + shift for cell, shift in zip(cells, shifts, strict=True)])
    return Cell(topology, system, positions, box)


def _append_topology(topology: app.Topology, part: app.Topology) -> None:
    """Chains, residues, atoms and bonds of ``part`` added to ``topology``."""
    atoms = {}
    for chain in part.chains():
        new_chain = topology.addChain(chain.id)
        for residue in chain.residues():
            new_residue = topology.addResidue(residue.name, new_chain, residue.id, residue.insertionCode)
            for atom in residue.atoms():
                atoms[atom] = topology.addAtom(atom.name, atom.element, new_residue, atom.id)
    for bond in part.bonds():
        topology.addBond(atoms[bond[0]], atoms[bond[1]], bond.type, bond.order)


def deformation(strain: np.ndarray) -> np.ndarray:
    """The symmetric deformation gradient F = (I + 2E)^½ of a Green–Lagrange strain E (3 × 3)."""
    strain = np.asarray(strain, dtype=float)
    values, vectors = np.linalg.eigh(np.eye(3) + 2.0 * strain)
    if values.min() <= 0.0:
        raise InputError(f"strain {strain.tolist()} is not a deformation (I + 2E is not positive definite)")
    return (vectors * np.sqrt(values)) @ vectors.T


def deformed(positions: np.ndarray, box: np.ndarray, gradient: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions and box after x → F x at fixed fractional coordinates, rotated so that the box is in
    OpenMM's lower-triangular form with a positive diagonal (QR of the deformed box vectors)."""
    gradient = np.asarray(gradient, dtype=float)
    vectors = gradient @ np.asarray(box, dtype=float).T  # columns: the deformed a, b, c
    q, r = np.linalg.qr(vectors)
    signs = np.sign(np.diag(r))
    rotation = (q * signs).T  # proper rotation: det(F) > 0 and the new diagonal is positive
    new_box = (rotation @ vectors).T
    new_box[np.abs(new_box) < 1e-15] = 0.0
    return np.asarray(positions) @ (rotation @ gradient).T, np.triu(new_box.T).T
