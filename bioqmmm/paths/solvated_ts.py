"""Transition states inside an environment: microiterative eigenvector following, condensed Hessian, IRC.

The saddle atoms A (the QM region) follow the transition mode by P-RFO (:mod:`bioqmmm.paths.tsopt`); after
every step the flexible environment E (atoms within ``environment_radius`` of the QM region) is relaxed
at MM cost in the field of the QM region's Mulliken charges from the last QM/MM call, the rest stays
frozen. The search therefore runs on E_eff(x_A) = E(x_A, x_E*(x_A)), whose Hessian is the statically
condensed H_eff = H_AA − H_AE H_EE⁻¹ H_EA (:mod:`bioqmmm.vibrations.condensation`): it starts the search
and gives the final frequencies. With the environment frozen instead, soft solvent-cage modes of the QM
atoms alone make the search wander (``docs/neb.md``). The IRC (:mod:`bioqmmm.paths.irc`) follows the
same microiterations. Units: nm, kJ/mol, amu.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bioqmmm.paths.irc import IRCResult, intrinsic_reaction_coordinate
from bioqmmm.paths.tsopt import TSResult, refine_transition_state
from bioqmmm.simulation.environment import qm_charges_on_atoms, relax_environment
from bioqmmm.vibrations.active import (
    VibrationalAnalysis,
    active_hessian,
    analyse,
    check_unconstrained,
    environment_atoms,
    monoisotopic_masses,
)


@dataclass
class SolvatedTS:
    """``ts``: the refined saddle (frequencies from the condensed Hessian); ``analysis``: its normal modes;
    ``environment``: the relaxed atoms; ``max_force_environment``: the largest QM/MM force on them at the
    saddle (they are relaxed on the fixed-charge model), kJ/mol/nm."""

    ts: TSResult
    analysis: VibrationalAnalysis
    atoms: np.ndarray
    environment: np.ndarray
    max_force_environment: float


class Microiterations:
    """Energy, forces and relaxation of the flexible ``environment`` of ``qmmm`` (every other non-QM atom
    frozen); remembers the QM charges of the last evaluation for the next relaxation."""

    def __init__(self, qmmm, environment: np.ndarray, *, box=None, platform: str = "CPU",
                 mm_tolerance: float = 0.5) -> None:
        self.qmmm, self.environment = qmmm, environment
        self.box, self.platform, self.mm_tolerance = box, platform, mm_tolerance
        self.frozen = np.setdiff1d(np.arange(qmmm.system.getNumParticles()), environment)
        self.charges: np.ndarray | None = None

    def evaluate(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        energy, forces = self.qmmm.energy_and_forces(x, self.box)
        self.charges = qm_charges_on_atoms(self.qmmm)
        return energy, forces

    def relax(self, x: np.ndarray) -> np.ndarray:
        """``x`` with the environment minimised (QM charges of the last evaluation, or of ``x`` at the start)."""
        if len(self.environment) == 0:
            return x
        if self.charges is None:
            self.evaluate(x)
        relaxed, _ = relax_environment(self.qmmm, x, qm_charges=self.charges, frozen=self.frozen,
                                       tolerance=self.mm_tolerance, box=self.box, platform=self.platform)
        return relaxed


def refine_in_environment(qmmm, positions: np.ndarray, *, environment_radius: float = 0.5,
                          environment_model: str = "mm", direction: np.ndarray | None = None, fmax: float = 10.0,
                          max_steps: int = 100, trust: float = 0.003, mm_tolerance: float = 0.5,
                          masses: dict[int, float] | None = None, box=None, platform: str = "CPU",
                          comm=None, report=None) -> SolvatedTS:
    """Saddle of the QM region of ``qmmm`` near ``positions`` (nm) with a relaxing environment (module
    docstring); ``direction`` (n_QM, 3) picks the mode to follow (default: the lowest). ``report``: progress
    callback of :func:`~bioqmmm.paths.tsopt.refine_transition_state`. Follow with :func:`irc_in_environment`."""
    atoms = np.asarray(qmmm.qm_atoms, dtype=int)
    environment = environment_atoms(qmmm, positions, atoms, environment_radius)
    check_unconstrained(qmmm.system, np.union1d(atoms, environment))
    micro = Microiterations(qmmm, environment, box=box, platform=platform, mm_tolerance=mm_tolerance)
    atom_masses = monoisotopic_masses(qmmm.topology, atoms, masses)
    final: dict = {}

    def hessian(x: np.ndarray) -> np.ndarray:
        final["hessian"] = active_hessian(qmmm, x, atoms, environment, method="condensed",
                                          environment_model=environment_model, box=box, comm=comm)
        return final["hessian"].hessian

    free = box is None and len(atoms) == qmmm.system.getNumParticles()  # a free molecule: no rigid-body steps
    ts = refine_transition_state(micro.evaluate, positions, atoms, atom_masses, direction=direction, fmax=fmax,
                                 whole_system=free, max_steps=max_steps, trust=trust, comm=comm, hessian=hessian,
                                 relax=micro.relax, report=report)
    analysis = analyse(qmmm, ts.positions, final["hessian"], masses=masses)
    _, forces = micro.evaluate(ts.positions)
    env_force = float(np.linalg.norm(forces[environment], axis=1).max()) if len(environment) else 0.0
    return SolvatedTS(ts, analysis, atoms, environment, env_force)


def irc_in_environment(qmmm, saddle: SolvatedTS, *, step: float = 0.01, max_steps: int = 60, fmax: float = 20.0,
                       mm_tolerance: float = 0.5, masses: dict[int, float] | None = None, box=None,
                       platform: str = "CPU", report=None) -> IRCResult | None:
    """Both IRC branches (steps of ``step`` amu^½ nm) from ``saddle`` along its imaginary mode, the environment
    relaxed after each step; None when the saddle has no imaginary mode. ``report``: progress callback of
    :func:`~bioqmmm.paths.irc.intrinsic_reaction_coordinate`."""
    modes = saddle.analysis.modes
    if modes.frequencies[0] >= 0:
        return None
    micro = Microiterations(qmmm, saddle.environment, box=box, platform=platform, mm_tolerance=mm_tolerance)
    return intrinsic_reaction_coordinate(micro.evaluate, saddle.ts.positions, saddle.atoms,
                                         monoisotopic_masses(qmmm.topology, saddle.atoms, masses), modes.modes[0],
                                         step=step, max_steps=max_steps, fmax=fmax, relax=micro.relax, report=report)
