"""Active region: freeze whole residues farther than a radius from the QM region.

Standard practice in QM/MM optimisation and path work (e.g. Senn & Thiel, Angew. Chem. 2009, 48,
1198): only residues within ~0.6-1.5 nm of the QM region move. Freezing is by zero mass (OpenMM
never moves a massless particle; constraints to it are removed, as OpenMM requires) or by harmonic
position restraints (the particles keep their mass and move a little).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import openmm
from openmm import app

from bioqmmm.errors import InputError
from bioqmmm.region.region import QMRegion


def residues_beyond(topology: app.Topology, positions: np.ndarray, qm_atoms: QMRegion | Sequence[int],
                    radius_nm: float, box: np.ndarray | None = None) -> list[int]:
    """Atoms of every residue with no atom within ``radius_nm`` of a QM atom (minimum image if ``box``);
    ``qm_atoms`` is a :class:`~bioqmmm.region.region.QMRegion` or its Topology indices."""
    if radius_nm <= 0:
        raise InputError(f"active-region radius must be positive, got {radius_nm} nm")
    qm = positions[QMRegion.atoms_of(qm_atoms)]
    nearest = np.empty(len(positions))
    for start in range(0, len(positions), 4096):
        d = positions[start : start + 4096, None, :] - qm[None, :, :]
        if box is not None:
            d -= np.einsum("...k,kj->...j", np.round(d @ np.linalg.inv(box)), box)
        nearest[start : start + 4096] = np.linalg.norm(d, axis=-1).min(axis=1)
    frozen = []
    for residue in topology.residues():
        indices = [a.index for a in residue.atoms()]
        if nearest[indices].min() > radius_nm:
            frozen += indices
    return frozen


def freeze_beyond(system: openmm.System, topology: app.Topology, positions: np.ndarray,
                  qm_atoms: QMRegion | Sequence[int], radius_nm: float, method: str = "mass",
                  force_constant: float = 1.0e4) -> list[int]:
    """Freeze residues beyond ``radius_nm`` (nm) of the QM region (a QMRegion or its atoms) in ``system``
    (modified in place).

    ``method="mass"`` sets their masses to zero and removes constraints that involve them;
    ``method="restraint"`` adds ``0.5 k |r - r0|^2`` (``force_constant`` k in kJ/mol/nm^2,
    minimum-image distance when periodic) at the current ``positions`` (nm). Returns the frozen atoms.
    """
    box = None
    if system.usesPeriodicBoundaryConditions():
        box = np.array([v.value_in_unit(openmm.unit.nanometer) for v in system.getDefaultPeriodicBoxVectors()])
    frozen = residues_beyond(topology, positions, qm_atoms, radius_nm, box)
    if method == "mass":
        frozen_set = set(frozen)
        for i in frozen:
            system.setParticleMass(i, 0.0)
        for c in reversed(range(system.getNumConstraints())):
            a, b, _ = system.getConstraintParameters(c)
            if a in frozen_set or b in frozen_set:
                system.removeConstraint(c)
    elif method == "restraint":
        squared = "periodicdistance(x, y, z, x0, y0, z0)^2" if box is not None else "((x-x0)^2+(y-y0)^2+(z-z0)^2)"
        force = openmm.CustomExternalForce(f"0.5*k*{squared}")
        force.addGlobalParameter("k", force_constant)
        for name in ("x0", "y0", "z0"):
            force.addPerParticleParameter(name)
        for i in frozen:
            force.addParticle(i, positions[i].tolist())
        system.addForce(force)
    else:
        raise InputError(f"freeze method {method!r} is not 'mass' or 'restraint'")
    return frozen
