"""Small crystals built in code: the rock-salt cell of the shipped periodic examples and tests."""

from __future__ import annotations

import numpy as np
from openmm import app, unit

#: Fractional coordinates of the conventional rock-salt cell: cations, then anions.
ROCKSALT_CATIONS = ((0.0, 0.0, 0.0), (0.0, 0.5, 0.5), (0.5, 0.0, 0.5), (0.5, 0.5, 0.0))
ROCKSALT_ANIONS = ((0.5, 0.0, 0.0), (0.0, 0.5, 0.0), (0.0, 0.0, 0.5), (0.5, 0.5, 0.5))


def rocksalt(lattice_nm: float, cation: str = "NA", anion: str = "CL", dopant: str | None = None
             ) -> tuple[app.Topology, np.ndarray, np.ndarray]:
    """The conventional 8-atom rock-salt cell (residue = atom = ion name, as in OpenMM's amber14/tip3p.xml
    ions), the cation at the origin replaced by ``dopant`` if given: (topology, positions nm, box nm)."""
    topology = app.Topology()
    chain = topology.addChain("A")
    positions = []
    for k, fraction in enumerate(ROCKSALT_CATIONS + ROCKSALT_ANIONS):
        name = anion if k >= 4 else (dopant if dopant and k == 0 else cation)
        residue = topology.addResidue(name, chain, str(k + 1))
        topology.addAtom(name, app.element.Element.getBySymbol(name.capitalize()), residue)
        positions.append(np.asarray(fraction) * lattice_nm)
    box = np.eye(3) * lattice_nm
    topology.setPeriodicBoxVectors(box * unit.nanometer)
    return topology, np.array(positions), box


def write_cell(path: str, topology: app.Topology, positions: np.ndarray) -> None:
    """A PDB file of a cell with its CRYST1 record."""
    with open(path, "w") as handle:
        app.PDBFile.writeFile(topology, positions * unit.nanometer, handle, keepIds=True)
