"""MM interaction energies between the partners and implicit-solvent binding scores.

Interaction at fixed geometry (one structure, no relaxation): ΔE = E(AB) − E(A) − E(B). In vacuum only
cross-partner non-bonded pairs survive, so ΔE_vac = Σ_{i∈A, j∈B} [k q_i q_j / r_ij + 4ε_ij((σ_ij/r_ij)^12 −
(σ_ij/r_ij)^6)] (Lorentz–Berthelot), which decomposes exactly per residue: e_i = Σ_{j ∈ other partner} e_ij,
and Σ_{i∈A} e_i = Σ_{i∈B} e_i = ΔE_vac. The MM-GBSA score adds the change of the OBC2 solvation energy
(polar GB + non-polar ACE surface term), ΔG_bind = ΔE_vac + ΔG_solv, from the three implicit-solvent
Systems (Kollman et al., Acc. Chem. Res. 33, 889 (2000); single-structure variant, no entropy term).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import openmm
from openmm import unit

from bioqmmm.errors import InputError
from bioqmmm.interface.model import Structure, create_systems, potential_energy, subsystem, within
from bioqmmm.preparation.forcefields import ForceFieldSetup
from bioqmmm.units import COULOMB_KJMOL_NM

#: Force group of the implicit-solvent term.
GB_GROUP = 1


def nonbonded_parameters(system: openmm.System, side: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(charges e, σ nm, ε kJ/mol) of every particle from the System's NonbondedForce; an exclusion or
    exception between partners (``side`` of each atom) is an error."""
    force = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    rows = [force.getParticleParameters(i) for i in range(force.getNumParticles())]
    q = np.array([r[0].value_in_unit(unit.elementary_charge) for r in rows])
    sigma = np.array([r[1].value_in_unit(unit.nanometer) for r in rows])
    epsilon = np.array([r[2].value_in_unit(unit.kilojoule_per_mole) for r in rows])
    for k in range(force.getNumExceptions()):
        i, j, *_ = force.getExceptionParameters(k)
        if side[i] != side[j]:
            raise InputError(f"atoms {i} and {j} of different partners are bonded: the partners must not share "
                             "covalent bonds (a disulfide across the interface?)")
    return q, sigma, epsilon


def pair_energies(structure: Structure, system: openmm.System) -> np.ndarray:
    """(n_atoms,) Coulomb + LJ energy (kJ/mol) of each atom with every atom of the other partner, in vacuum."""
    q, sigma, epsilon = nonbonded_parameters(system, structure.side)
    xyz, side = structure.positions, structure.side
    a, b = np.flatnonzero(side == 0), np.flatnonzero(side == 1)
    per_atom = np.zeros(len(xyz))
    for start in range(0, len(a), 256):
        block = a[start:start + 256]
        r = np.linalg.norm(xyz[block, None, :] - xyz[None, b, :], axis=-1)
        s = 0.5 * (sigma[block, None] + sigma[None, b])
        e = np.sqrt(epsilon[block, None] * epsilon[None, b])
        sr6 = (s / r) ** 6
        pair = COULOMB_KJMOL_NM * q[block, None] * q[None, b] / r + 4.0 * e * (sr6 * sr6 - sr6)
        per_atom[block] += pair.sum(axis=1)
        per_atom[b] += pair.sum(axis=0)
    return per_atom


def per_residue(structure: Structure, per_atom: np.ndarray) -> np.ndarray:
    """Sum of ``per_atom`` over each residue."""
    residue_of = np.array([a.residue.index for a in structure.topology.atoms()])
    return np.bincount(residue_of, weights=per_atom, minlength=structure.topology.getNumResidues())


@dataclass
class BindingMM:
    """MM-GBSA terms of one structure (kJ/mol): vacuum interaction, solvation change, their sum."""

    interaction: float
    solvation: float
    #: MM energy the separated partners gain by relaxing (≤ 0 is gained; added to the score), when asked for
    relaxation: float | None = None

    @property
    def score(self) -> float:
        return self.interaction + self.solvation - (self.relaxation or 0.0)

    def record(self) -> dict[str, float | None]:
        return {"interaction_mm": self.interaction, "desolvation": self.solvation,
                "partner_relaxation": self.relaxation, "mmgbsa": self.score}


def mm_binding(structure: Structure, setup: ForceFieldSetup, threads: int | None = None,
               relax_shell: float | None = None
               ) -> tuple[BindingMM, np.ndarray, dict[int, tuple[openmm.System, Structure]]]:
    """MM-GBSA terms of ``structure``, the per-atom vacuum interaction (:func:`pair_energies`) and, for the
    complex (key 2) and each partner (0, 1), its vacuum System and structure (for the QM/MM terms).

    The interaction is the double-precision pair sum; the solvation change is the GB force's own energy
    in the three Systems (the partners' cut from the complex's, :func:`~bioqmmm.interface.model.subsystem`).
    With ``relax_shell`` (nm), each partner's residues that close to its interface atoms are MM-minimised in
    implicit solvent without restraints, first in the complex (the other partner fixed: strain that is not
    the partner's doing goes), then alone; E_k(alone) − E_k(in the complex), the partner's own energy at the
    two minima, summed over both partners is the relaxation term: ΔG = ΔE_vac + ΔG_solv − ΔE_relax.
    """
    implicit, vacuum = create_systems(structure, setup)
    per_atom = pair_energies(structure, vacuum)
    gb_group = next(f for f in implicit.getForces() if isinstance(f, openmm.GBSAOBCForce))
    gb_group.setForceGroup(GB_GROUP)
    models = {2: (vacuum, structure)}
    solvation = potential_energy(implicit, structure.positions, threads, groups={GB_GROUP})
    for k in (0, 1):
        atoms = np.flatnonzero(structure.side == k)
        models[k] = (subsystem(vacuum, atoms), structure.subset(atoms))
        solvation -= potential_energy(subsystem(implicit, atoms), structure.positions[atoms], threads,
                                      groups={GB_GROUP})
    relaxation = None
    if relax_shell is not None:
        from bioqmmm.interface.refine import relax_mm

        relaxation = 0.0
        for k in (0, 1):
            atoms = np.flatnonzero(structure.side == k)
            around = _interface_atoms(structure, atoms)
            if not len(around):
                continue
            in_complex = relax_mm(structure, implicit, atoms[around], relax_shell, threads, restraint=0.0,
                                  only_side=k)[atoms]
            part, system = structure.subset(atoms), subsystem(implicit, atoms)
            part.positions = in_complex
            alone = relax_mm(part, system, around, relax_shell, threads, restraint=0.0)
            relaxation += potential_energy(system, alone, threads) - potential_energy(system, in_complex, threads)
    return BindingMM(float(per_atom[structure.side == 0].sum()), solvation, relaxation), per_atom, models


def _interface_atoms(structure: Structure, atoms: np.ndarray, cutoff: float = 0.45) -> np.ndarray:
    """Positions in ``atoms`` (local indices) of those within ``cutoff`` nm of an atom of the other partner."""
    other = np.flatnonzero(structure.side != structure.side[atoms[0]])
    return np.flatnonzero(within(structure.positions, atoms, other, cutoff))
