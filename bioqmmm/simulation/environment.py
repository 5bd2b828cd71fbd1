"""The MM environment model used between QM steps: the QM region frozen, its charges fixed.

During MM relaxation (microiterations, or relaxing a fresh structure before MD) the QM force
is replaced by fixed point charges on the QM atoms (their Mulliken charges, or zero), so the MM
environment moves in the electrostatic field of a frozen QM density at MM cost.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import openmm
from openmm import unit

from bioqmmm.errors import CalculationError
from bioqmmm.simulation.reporters import degrees_of_freedom, kinetic_temperature


def environment_system(qmmm, qm_charges: np.ndarray | None = None, frozen: Iterable[int] = ()) -> openmm.System:
    """``qmmm.system`` without its QM force; QM atoms, ``frozen`` and every atom constrained to one
    of them get zero mass (fixed; OpenMM allows no constraint to a massless particle).

    ``qm_charges`` (e, one per QM atom) are put on the QM atoms in the NonbondedForce; QM–MM
    exception pairs (1-2, 1-3 excluded, 1-4 scaled) keep zero charge products.
    """
    system = openmm.System()
    fixed = fixed_atoms(qmmm.system, set(qmmm.qm_atoms) | {int(i) for i in frozen})
    for i in range(qmmm.system.getNumParticles()):
        system.addParticle(0.0 if i in fixed else qmmm.system.getParticleMass(i))
    for k in range(qmmm.system.getNumConstraints()):
        i, j, length = qmmm.system.getConstraintParameters(k)
        if not (i in fixed and j in fixed):
            system.addConstraint(i, j, length)
    box = qmmm.system.getDefaultPeriodicBoxVectors()
    system.setDefaultPeriodicBoxVectors(*box)
    for force in qmmm.system.getForces():
        if isinstance(force, openmm.PythonForce):
            continue
        if isinstance(force, (openmm.MonteCarloBarostat, openmm.CMMotionRemover)):
            continue
        clone = openmm.XmlSerializer.clone(force)
        if isinstance(clone, openmm.NonbondedForce) and qm_charges is not None:
            for atom, charge in zip(qmmm.qm_atoms, qm_charges, strict=True):
                _, sigma, epsilon = clone.getParticleParameters(atom)
                clone.setParticleParameters(atom, float(charge) * unit.elementary_charge, sigma, epsilon)
        system.addForce(clone)
    return system


def mm_context(system: openmm.System, platform: str = "CPU") -> openmm.Context:
    """A Context for MM-only work (minimisation). On the CPU platform it uses one thread and
    deterministic forces: multithreaded PME sums are not reproducible bit for bit, and a rebuilt
    run must start from the same positions."""
    return openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform),
                          reproducible_properties(platform, 1))


def reproducible_properties(platform: str, threads: int | None) -> dict[str, str]:
    """Context properties that make runs reproducible bit for bit (a resumed run continues exactly): on the
    CPU platform deterministic force sums and ``threads`` threads (None: OpenMM's default)."""
    if platform != "CPU":
        return {}
    return {"DeterministicForces": "true", **({"Threads": str(threads)} if threads else {})}


def fixed_atoms(system: openmm.System, seeds: set[int]) -> set[int]:
    """``seeds`` closed under the System's constraints (a constrained pair moves or stays together)."""
    partners: dict[int, list[int]] = {}
    for k in range(system.getNumConstraints()):
        i, j, _ = system.getConstraintParameters(k)
        partners.setdefault(i, []).append(j)
        partners.setdefault(j, []).append(i)
    fixed, stack = set(seeds), list(seeds)
    while stack:
        for j in partners.get(stack.pop(), ()):
            if j not in fixed:
                fixed.add(j)
                stack.append(j)
    return fixed


#: MM relaxation of a fresh start structure (QM atoms fixed): RMS force tolerance (kJ/mol/nm) and
#: iteration cap (removes solvation clashes; a full minimisation is the optimize protocol's job).
START_RELAX_TOLERANCE = 10.0
START_RELAX_MAX_ITERATIONS = 500
#: Warm-up of the environment before a QM/MM run (fixed QM atoms): time step (fs; the run's if longer)
#: and Langevin friction (1/ps; strong, so that 0.5 ps brings a minimised structure to temperature).
WARMUP_TIMESTEP_FS = 1.0
WARMUP_FRICTION_PER_PS = 10.0


def relax_environment(
    qmmm,
    positions: np.ndarray,
    *,
    qm_charges: np.ndarray | None = None,
    frozen: Iterable[int] = (),
    tolerance: float = 10.0,
    max_iterations: int = 0,
    box: np.ndarray | None = None,
    platform: str = "CPU",
) -> tuple[np.ndarray, int]:
    """Minimise the MM environment (QM atoms fixed) with OpenMM's L-BFGS minimiser.

    ``tolerance``: RMS force criterion, kJ/mol/nm; ``max_iterations`` 0 means until converged.
    Returns the new positions (nm) and the number of minimiser iterations (MM relaxation steps).
    """
    system = environment_system(qmmm, qm_charges, frozen)
    counter = _IterationCounter()
    context = mm_context(system, platform)
    if box is not None:
        context.setPeriodicBoxVectors(*box)
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, tolerance, max_iterations, counter)
    relaxed = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return np.asarray(relaxed), counter.calls


def thermalise_environment(
    qmmm,
    positions: np.ndarray,
    *,
    temperature: float,
    duration_ps: float,
    timestep_fs: float,
    friction_per_ps: float,
    seed: int | None = None,
    qm_charges: np.ndarray | None = None,
    box: np.ndarray | None = None,
    platform: str = "CPU",
) -> tuple[np.ndarray, np.ndarray, float]:
    """Langevin MD of the MM environment (QM atoms fixed, carrying ``qm_charges``) at ``temperature`` K.

    A QM/MM run started from a minimised structure with Maxwell–Boltzmann velocities loses half its
    kinetic energy to the potential within tens of femtoseconds (equipartition), so its temperature
    sits far below the target for as long as a weak thermostat needs to refill it. Thermalising the
    environment at MM cost first starts the QM/MM run with both halves at ``temperature``.
    Returns positions (nm), velocities (nm/ps; zero on the fixed atoms) and the environment's final
    kinetic temperature (K).
    """
    system = environment_system(qmmm, qm_charges)
    integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, friction_per_ps / unit.picosecond,
                                                 timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(seed or 0)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform),
                             reproducible_properties(platform, 1))
    if box is not None:
        context.setPeriodicBoxVectors(*box)
    context.setPositions(positions)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, seed or 0)
    integrator.step(max(1, round(duration_ps * 1e3 / timestep_fs)))
    state = context.getState(getPositions=True, getVelocities=True, getEnergy=True)
    kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    final_temperature = kinetic_temperature(kinetic, degrees_of_freedom(system))
    return (np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)),
            np.asarray(state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)),
            float(final_temperature))


class _IterationCounter(openmm.MinimizationReporter):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def report(self, iteration, x, grad, args):
        self.calls += 1
        return False


class ConstraintProjector:
    """Removes from forces the components that the System's distance constraints cancel.

    With constraints c_k(x) = |x_i − x_j| − d_k and Jacobian A (rows ∂c_k/∂x), the force that can
    do work is P F with P = 1 − Aᵀ (A Aᵀ)⁻¹ A. Constraints form small clusters (a rigid water, an
    X–H group), so P is applied cluster by cluster. Forces in kJ/mol/nm, positions in nm.
    """

    def __init__(self, system: openmm.System) -> None:
        pairs = [system.getConstraintParameters(k)[:2] for k in range(system.getNumConstraints())]
        root = list(range(system.getNumParticles()))

        def find(i: int) -> int:
            while root[i] != i:
                root[i] = root[root[i]]
                i = root[i]
            return i

        for i, j in pairs:
            root[find(i)] = find(j)
        clusters: dict[int, list[tuple[int, int]]] = {}
        for i, j in pairs:
            clusters.setdefault(find(i), []).append((i, j))
        self.clusters = [np.array(c, dtype=int) for c in clusters.values()]

    def __call__(self, forces: np.ndarray, positions: np.ndarray) -> np.ndarray:
        projected = np.array(forces, dtype=float, copy=True)
        for pairs in self.clusters:
            atoms, local = np.unique(pairs, return_inverse=True)
            local = local.reshape(-1, 2)
            u = positions[pairs[:, 0]] - positions[pairs[:, 1]]
            u /= np.linalg.norm(u, axis=1)[:, None]
            jacobian = np.zeros((len(pairs), len(atoms), 3))
            rows = np.arange(len(pairs))
            jacobian[rows, local[:, 0]] = u
            jacobian[rows, local[:, 1]] = -u
            jacobian = jacobian.reshape(len(pairs), -1)
            f = projected[atoms].ravel()
            multipliers = np.linalg.solve(jacobian @ jacobian.T, jacobian @ f)
            projected[atoms] = (f - jacobian.T @ multipliers).reshape(-1, 3)
        return projected


def inner_atoms(qmmm, positions: np.ndarray, radius: float) -> np.ndarray:
    """QM atoms, link-atom MM hosts and their bonded neighbours, every atom within ``radius`` nm of
    a QM atom, and their constraint partners (a constrained X–H pair moves together).

    The hosts' neighbours are inner because the stiff host–neighbour bonds would otherwise make
    the host's force depend on how tightly the environment was relaxed.
    """
    hosts = {link.mm_host for link in qmmm.links}
    chosen = set(qmmm.qm_atoms) | hosts
    for bond in qmmm.topology.bonds():
        a, b = bond[0].index, bond[1].index
        if a in hosts or b in hosts:
            chosen |= {a, b}
    if radius > 0:
        qm_xyz = positions[list(qmmm.qm_atoms)]
        distance = np.min(np.linalg.norm(positions[:, None, :] - qm_xyz[None], axis=2), axis=1)
        chosen |= set(np.flatnonzero(distance < radius).tolist())
    return np.array(sorted(fixed_atoms(qmmm.system, chosen)), dtype=int)


def frozen_atoms(qmmm, positions: np.ndarray, radius: float | None) -> np.ndarray:
    """Atoms farther than ``radius`` nm from every QM atom (none when ``radius`` is None)."""
    if radius is None:
        return np.zeros(0, dtype=int)
    qm_xyz = positions[list(qmmm.qm_atoms)]
    distance = np.min(np.linalg.norm(positions[:, None, :] - qm_xyz[None], axis=2), axis=1)
    return np.flatnonzero(distance > radius)


def qm_charges_on_atoms(qmmm) -> np.ndarray:
    """Mulliken charges of the QM atoms, each link atom's charge added to its QM host."""
    result = qmmm.last_qm.qm
    charges = np.array(result.atomic_charges[: len(qmmm.qm_atoms)], dtype=float)
    index = {atom: k for k, atom in enumerate(qmmm.qm_atoms)}
    for link, q in zip(qmmm.links, result.atomic_charges[len(qmmm.qm_atoms):], strict=True):
        charges[index[link.qm_host]] += q
    return charges


def settled_environment(
    qmmm,
    positions: np.ndarray,
    *,
    box: np.ndarray | None,
    relax: bool,
    warmup_ps: float,
    temperature: float,
    timestep_fs: float,
    seed: int | None,
    platform: str = "CPU",
) -> tuple[np.ndarray, np.ndarray | None, float | None]:
    """A fresh start structure made ready for QM/MM dynamics at MM cost: the environment relaxed
    (``relax``; at most :data:`START_RELAX_MAX_ITERATIONS` to :data:`START_RELAX_TOLERANCE`), then
    thermalised for ``warmup_ps`` around the fixed QM atoms carrying their charges from one QM/MM
    evaluation (:func:`thermalise_environment`). Returns positions (nm), the warm-up's velocities
    (nm/ps) and final environment temperature (K), both None without a warm-up (or an environment)."""
    if len(qmmm.qm_atoms) == qmmm.topology.getNumAtoms():
        return positions, None, None
    if relax:
        positions, _ = relax_environment(qmmm, positions, tolerance=START_RELAX_TOLERANCE,
                                         max_iterations=START_RELAX_MAX_ITERATIONS, box=box, platform=platform)
    if warmup_ps <= 0:
        return positions, None, None
    with qmmm.typed_errors():
        qmmm.energy_and_forces(positions, box)
    positions, velocities, reached = thermalise_environment(
        qmmm, positions, temperature=temperature, duration_ps=warmup_ps,
        timestep_fs=max(WARMUP_TIMESTEP_FS, timestep_fs), friction_per_ps=WARMUP_FRICTION_PER_PS, seed=seed,
        qm_charges=qm_charges_on_atoms(qmmm), box=box, platform=platform)
    if not (np.isfinite(positions).all() and np.isfinite(velocities).all()):
        raise CalculationError(f"the environment's warm-up ({warmup_ps:g} ps) blew up: clashes the start "
                               "relaxation did not remove (relax it first), or skip the warm-up")
    return positions, velocities, reached
