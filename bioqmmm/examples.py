"""Small example systems built from data shipped with the package (amber14 + TIP3P).

Used by ``bioqmmm quickstart``, the tests and the benchmarks. Positions in nm.
"""

from __future__ import annotations

from importlib import resources

import openmm
from openmm import app, unit

FORCEFIELD_FILES = ("amber14-all.xml", "amber14/tip3p.xml")


def forcefield() -> app.ForceField:
    """Amber14 protein force field with TIP3P water (OpenMM's bundled files)."""
    return app.ForceField(*FORCEFIELD_FILES)


def _create(modeller: app.Modeller, periodic: bool, nonbonded_cutoff: float) -> openmm.System:
    method = app.PME if periodic else app.NoCutoff
    kwargs = {"nonbondedCutoff": nonbonded_cutoff * unit.nanometer} if periodic else {}
    return forcefield().createSystem(
        modeller.topology, nonbondedMethod=method, constraints=app.HBonds, rigidWater=True, **kwargs
    )


def alanine_dipeptide(box_size: float | None = None, nonbonded_cutoff: float = 0.9):
    """ACE-ALA-NME, in vacuum (``box_size=None``) or in a cubic TIP3P box of edge ``box_size`` nm.

    Returns (topology, system, positions).
    """
    with resources.as_file(resources.files("bioqmmm") / "data" / "alanine_dipeptide.pdb") as path:
        pdb = app.PDBFile(str(path))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    if box_size is not None:
        modeller.addSolvent(
            forcefield(), model="tip3p", boxSize=openmm.Vec3(box_size, box_size, box_size) * unit.nanometer
        )
    return modeller.topology, _create(modeller, box_size is not None, nonbonded_cutoff), modeller.positions


def water_box(box_size: float, nonbonded_cutoff: float = 0.7):
    """A cubic box of TIP3P water of edge ``box_size`` nm. Returns (topology, system, positions)."""
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield(), model="tip3p", boxSize=openmm.Vec3(box_size, box_size, box_size) * unit.nanometer)
    return modeller.topology, _create(modeller, True, nonbonded_cutoff), modeller.positions
