"""Run under ``mpirun -n 2``: a NEB whose image on rank 1 fails its SCF; every rank must stop naming it."""

from __future__ import annotations

import sys

import numpy as np
from openmm import app, unit

from bioqmmm.errors import CalculationError, SCFConvergenceError
from bioqmmm.examples import formamide
from bioqmmm.parallel.comm import world
from bioqmmm.paths.neb import NEB
from bioqmmm.qm import PySCFEngine
from bioqmmm.qmmm.system import QMMMSystem

PRODUCT = sys.argv[1]
comm = world()
top, system, positions = formamide()
qmmm = QMMMSystem(top, system, "all", charge=0, multiplicity=1, engine=PySCFEngine("hf", "sto-3g"))
product = app.PDBFile(PRODUCT).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
neb = NEB(qmmm, positions, product, n_images=5, interpolation="linear", comm=comm)
failing_image = next(i for i in (1, 2, 3) if neb.model.owner[i] == 1)
bad = neb.initial_path[failing_image]
evaluate = qmmm.energy_and_forces


def failing(x, box=None):
    if np.array_equal(x, bad):
        raise SCFConvergenceError(step=None, attempts=[])
    return evaluate(x, box)


qmmm.energy_and_forces = failing
try:
    neb.run(fmax=1.0, max_iterations=3)
except CalculationError as exc:
    print(f"rank {comm.rank} of {comm.size}, image {failing_image} on rank 1: {exc}", flush=True)
    sys.exit(3)
print(f"rank {comm.rank}: no error", flush=True)
