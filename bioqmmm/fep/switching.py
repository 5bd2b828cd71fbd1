"""Nonequilibrium switching along λ: the work of driving a structure from one end state to the other.

From an equilibrium sample of the start state, λ moves in ``steps`` equal increments; before each
increment the structure is fixed, so the work is W = Σ_t (λ_{t+1} − λ_t) ΔU(x_t), ΔU = U_b − U_a
(Crooks, Phys. Rev. E 61, 2361 (2000)), and Langevin dynamics at the new λ moves x_t to x_{t+1}.
Jarzynski's equality ⟨exp(−βW)⟩ = exp(−βΔA) holds for any number of steps; the fewer the steps, the
wider the work distribution (:mod:`bioqmmm.fep.analysis` says when too wide). Every trajectory costs
``steps`` evaluations of both end states.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import openmm
from openmm import unit

from bioqmmm.fep.hamiltonian import MixedHamiltonian
from bioqmmm.simulation.environment import reproducible_properties


@dataclass(frozen=True)
class Switch:
    """One switching trajectory: its work W and ΔU at its start structure (kJ/mol)."""

    work: float
    start_delta_u: float


def switch(hamiltonian: MixedHamiltonian, positions: np.ndarray, box: np.ndarray | None, *, forward: bool,
           steps: int, timestep_fs: float, temperature_k: float, friction_per_ps: float, seed: int,
           platform: str = "CPU", threads: int | None = None) -> Switch:
    """Drive ``positions`` (nm, an equilibrium sample of λ = 0 when ``forward``, else of λ = 1) to the
    other end in ``steps`` λ increments, velocities drawn at ``temperature_k`` with ``seed``."""
    lambdas = np.linspace(0.0, 1.0, steps + 1)
    if not forward:
        lambdas = lambdas[::-1]
    hamiltonian.lam = float(lambdas[0])
    integrator = openmm.LangevinMiddleIntegrator(temperature_k * unit.kelvin, friction_per_ps / unit.picosecond,
                                                 timestep_fs * 1e-3 * unit.picosecond)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(hamiltonian.system, integrator, openmm.Platform.getPlatformByName(platform),
                             reproducible_properties(platform, threads or 1))
    if box is not None:
        context.setPeriodicBoxVectors(*box)
    context.setPositions(positions)
    with hamiltonian.typed_errors():
        context.setVelocitiesToTemperature(temperature_k * unit.kelvin, seed)
    work, start = 0.0, None
    x = _positions(context)  # as the force sees them (the platform may round what was set)
    for t in range(steps):
        u_a, u_b = hamiltonian.energies(x, box, t)
        start = u_b - u_a if start is None else start
        work += (lambdas[t + 1] - lambdas[t]) * (u_b - u_a)
        hamiltonian.lam = float(lambdas[t + 1])
        if t < steps - 1:
            with hamiltonian.typed_errors():
                integrator.step(1)
            x = _positions(context)
    return Switch(float(work), float(start))


def _positions(context: openmm.Context) -> np.ndarray:
    return np.asarray(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
