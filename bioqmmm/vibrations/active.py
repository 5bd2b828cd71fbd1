"""The Hessian of a QM/MM active block, three ways, and its vibrational analysis.

Atoms: the *active block* A (the QM atoms, optionally with MM atoms within ``extra_radius`` nm), the
flexible *environment* E (other atoms within ``environment_radius`` nm of a QM atom) and the rest, frozen.

* ``condensed``: H_eff = H_AA − H_AE H_EE⁻¹ H_EA (:mod:`bioqmmm.vibrations.condensation`): the
  environment follows A adiabatically. H_AA comes from 6n_A QM/MM force calls. H_EE (by products) and
  H_EA come either from the MM model with the QM region as fixed Mulliken charges
  (``environment_model='mm'``, MM cost: the model the microiterations relax) or from the full QM/MM
  forces (``'qmmm'``, exact: H_EA from the same 6n_A calls, two QM/MM calls per product). Both blocks
  come from one model: H_EA from QM/MM (polarised QM region) with H_EE of the fixed-charge model is the
  Schur complement of no Hessian at all, and its soft cage modes can turn spuriously imaginary
  (measured: formamide's TS in water, a −46 cm⁻¹ solute translation that the consistent blocks put at
  +14 cm⁻¹, the reaction mode unchanged to 0.3 %).
* ``partial``: H_AA alone (PHVA: the environment infinitely heavy).
* ``full``: the whole (A ∪ E) Hessian, 6(n_A + n_E) QM/MM calls: small systems, and the reference.

The QM dipole is differenced along the same displacements (∂μ/∂x_A with the environment fixed) for
IR intensities. Masses are monoisotopic (PySCF's table of the most abundant isotopes) unless
overridden per atom (isotopologues). A free body (no box, no frozen atom) has its translations and
rotations projected out. Distance constraints make a Cartesian Hessian meaningless, so moving atoms
must be unconstrained (systems built with ``rigid_water: false`` and ``constraints: none``).
Units: nm, kJ/mol, amu; frequencies cm⁻¹.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import openmm
from openmm import unit
from pyscf.data.elements import COMMON_ISOTOPE_MASSES

from bioqmmm.errors import InputError
from bioqmmm.simulation.environment import environment_system, mm_context, qm_charges_on_atoms
from bioqmmm.vibrations.analysis import NormalModes, normal_modes
from bioqmmm.vibrations.condensation import block_preconditioner, condense
from bioqmmm.vibrations.hessian import HESSIAN_STEP, displacement_columns, hessian_vector_product, symmetrised
from bioqmmm.vibrations.thermo import QRRHO_CUTOFF, Thermochemistry, vibrational_thermochemistry

METHODS = ("condensed", "partial", "full")
#: The MM environment products H_EE v: five-point differences (error O(h⁴)) of the MM forces with a
#: largest displacement of 2e-3 nm. A two-point difference needs a step small enough that the curvature
#: of a stiff bond turning ((h/r)² · 5·10⁵ kJ/mol/nm²) stays below the softest intermolecular curvatures,
#: and at such a step the single-precision forces of OpenMM's CPU platform are noise; with the five-point
#: stencil the products agree with double-precision two-point products at 1e-5 nm to ~1e-5 (relative)
#: on the CPU platform, at a tenth of the cost.
MM_PRODUCT_STEP, MM_PRODUCT_ORDER = 2e-3, 4
#: A pair crossing the real-space cutoff during a displacement puts its force jump (erfc(βr_c) q_i q_j / r_c²,
#: ~0.06 kJ/mol/nm at PME's default tolerance 5e-4) into the product. The products' model therefore
#: tightens the Ewald tolerance (the jump ∝ erfc(βr_c)) and switches Lennard-Jones off over the last 0.1 nm
#: before the cutoff.
SMOOTH_EWALD_TOLERANCE, SWITCH_WIDTH = 1e-5, 0.1
ENVIRONMENT_MODELS = ("mm", "qmmm")


def monoisotopic_masses(topology, atoms, overrides: Mapping[int, float] | None = None) -> np.ndarray:
    """Masses (amu) of ``atoms``: the most abundant isotope of each element, or ``overrides[atom]``."""
    elements = [atom.element for atom in topology.atoms()]
    overrides = dict(overrides or {})
    masses = []
    for atom in atoms:
        atom = int(atom)
        if atom in overrides:
            masses.append(float(overrides[atom]))
        elif elements[atom] is None:
            raise InputError(f"atom {atom + 1} has no element: give its mass")
        else:
            masses.append(float(COMMON_ISOTOPE_MASSES[elements[atom].atomic_number]))
    return np.array(masses)


def active_atoms(qmmm, positions: np.ndarray, extra_radius: float = 0.0) -> np.ndarray:
    """QM atoms and every atom within ``extra_radius`` nm of one."""
    return np.union1d(np.asarray(qmmm.qm_atoms, dtype=int), _within(qmmm, positions, extra_radius))


def environment_atoms(qmmm, positions: np.ndarray, active: np.ndarray, radius: float) -> np.ndarray:
    """Atoms of every residue with an atom within ``radius`` nm of a QM atom, less the ``active`` ones
    (whole residues: a water is not split between moving and frozen)."""
    residue = residue_indices(qmmm.topology)
    near = np.isin(residue, residue[_within(qmmm, positions, radius)])
    return np.setdiff1d(np.flatnonzero(near), active)


def residue_indices(topology) -> np.ndarray:
    """Residue index of every atom of ``topology``."""
    return np.array([atom.residue.index for atom in topology.atoms()])


def _within(qmmm, positions: np.ndarray, radius: float) -> np.ndarray:
    if radius <= 0:
        return np.zeros(0, dtype=int)
    qm = np.asarray(positions)[list(qmmm.qm_atoms)]
    distance = np.min(np.linalg.norm(np.asarray(positions)[:, None, :] - qm[None], axis=2), axis=1)
    return np.flatnonzero(distance < radius)


def check_unconstrained(system, atoms) -> None:
    """Raise :class:`InputError` naming a distance constraint on any of ``atoms`` (Hessians need free bonds)."""
    moving = {int(a) for a in atoms}
    for k in range(system.getNumConstraints()):
        i, j, _ = system.getConstraintParameters(k)
        if i in moving or j in moving:
            raise InputError(
                f"atoms {i + 1} and {j + 1} are held at a fixed distance by a constraint, and a Hessian needs every "
                "moving atom free: build the system without constraints (system: constraints: none, "
                "rigid_water: false) or keep constrained atoms out of the active block and environment")


@dataclass
class ActiveHessian:
    """``hessian`` (3n, 3n) kJ/mol/nm² of ``atoms`` (A, or A ∪ E for ``full``); ``environment``: E;
    ``dipole_derivatives`` (3, 3n) e or None; ``free_body``: rigid-body modes to project;
    ``qmmm_evaluations``/``environment_products``: the cost; ``seconds``: wall time."""

    method: str
    atoms: np.ndarray
    environment: np.ndarray
    hessian: np.ndarray
    dipole_derivatives: np.ndarray | None
    free_body: bool
    qmmm_evaluations: int
    environment_products: int
    seconds: float


def active_hessian(qmmm, positions: np.ndarray, atoms, environment=(), *, method: str = "condensed",
                   environment_model: str = "mm", box: np.ndarray | None = None, step: float = HESSIAN_STEP,
                   comm=None, environment_platform: str = "CPU") -> ActiveHessian:
    """Hessian of the active ``atoms`` of ``qmmm`` at ``positions`` (nm) with the flexible ``environment``
    condensed onto them, ignored (partial) or included (full); see the module docstring.

    ``environment_platform``: OpenMM platform of the MM environment products.
    """
    if method not in METHODS:
        raise InputError(f"unknown Hessian method {method!r}: choose one of {', '.join(METHODS)}")
    if environment_model not in ENVIRONMENT_MODELS:
        raise InputError(f"unknown environment model {environment_model!r}: choose one of "
                         f"{', '.join(ENVIRONMENT_MODELS)}")
    start = time.perf_counter()
    atoms, environment = np.asarray(atoms, dtype=int), np.asarray(environment, dtype=int)
    if np.intersect1d(atoms, environment).size:
        raise InputError("an atom cannot be both active and environment")
    moving = np.union1d(atoms, environment)
    check_unconstrained(qmmm.system, moving)
    x0 = np.array(positions, dtype=float)
    calls = 0

    def evaluate(x: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal calls
        calls += 1
        return qmmm.energy_and_forces(x, box)

    def dipole() -> np.ndarray:
        return qmmm.last_qm.qm.dipole

    evaluate(x0)
    observe = dipole if qmmm.last_qm.qm.dipole is not None else None
    charges = qm_charges_on_atoms(qmmm) if method == "condensed" and environment_model == "mm" else None
    displaced = moving if method == "full" else atoms
    exact_coupling = method == "condensed" and environment_model == "qmmm"
    rows = moving if exact_coupling else displaced  # H_EA from these QM/MM calls only for the exact model
    columns = displacement_columns(evaluate, x0, displaced, rows, step=step, comm=comm, observe=observe)
    products = 0
    block = columns.block
    if method == "condensed" and len(environment):
        forces_on = _environment_forces(qmmm, charges, environment, box, environment_platform) \
            if environment_model == "mm" else (lambda x: evaluate(x)[1])
        n = 3 * len(atoms)
        groups = _residue_groups(qmmm.topology, environment)
        small, order = (MM_PRODUCT_STEP, MM_PRODUCT_ORDER) if environment_model == "mm" else (step, 2)
        preconditioner, probes = block_preconditioner(forces_on, x0, environment, groups, small)
        if exact_coupling:
            coupling = block[n:]
        else:  # H_EA of the environment's own model: the Schur complement of one Hessian
            coupling_product = hessian_vector_product(forces_on, x0, atoms, small, order, rows=environment)
            coupling = np.array([coupling_product(unit_vector) for unit_vector in np.eye(n)]).T
            probes += n
        condensed = condense(block[:n], coupling, hessian_vector_product(forces_on, x0, environment, small, order),
                             preconditioner=preconditioner)
        hessian, products = condensed.hessian, condensed.products + probes
    else:
        hessian = symmetrised(block)
    free = box is None and len(moving if method != "partial" else atoms) == len(x0)
    return ActiveHessian(method, displaced, environment, hessian, columns.observed, free,
                         calls, products, time.perf_counter() - start)


def _residue_groups(topology, environment: np.ndarray) -> list[np.ndarray]:
    """Positions within ``environment`` (0..n_E−1) of the atoms of each residue, in environment order."""
    residue = residue_indices(topology)[environment]
    _, first = np.unique(residue, return_index=True)
    return [np.flatnonzero(residue == residue[i]) for i in np.sort(first)]


def _environment_forces(qmmm, charges: np.ndarray, environment: np.ndarray, box, platform: str):
    """x ↦ forces (N, 3) of the MM model with the QM region as fixed ``charges`` (the microiterations' model)."""
    frozen = np.setdiff1d(np.arange(qmmm.system.getNumParticles()), environment)
    system = environment_system(qmmm, charges, frozen)
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce) and force.getNonbondedMethod() in (openmm.NonbondedForce.PME,
                                                                                      openmm.NonbondedForce.Ewald):
            force.setEwaldErrorTolerance(min(force.getEwaldErrorTolerance(), SMOOTH_EWALD_TOLERANCE))
            if not force.getUseSwitchingFunction():
                force.setUseSwitchingFunction(True)
                force.setSwitchingDistance(force.getCutoffDistance().value_in_unit(unit.nanometer) - SWITCH_WIDTH)
    context = mm_context(system, platform)
    if box is not None:
        context.setPeriodicBoxVectors(*box)

    def forces(x: np.ndarray) -> np.ndarray:
        context.setPositions(x)
        state = context.getState(getForces=True)
        return state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)

    return forces


@dataclass
class VibrationalAnalysis:
    """A :class:`ActiveHessian`, its :class:`NormalModes` and the :class:`Thermochemistry` of its real modes."""

    hessian: ActiveHessian
    modes: NormalModes
    thermochemistry: Thermochemistry


def analyse(qmmm, positions: np.ndarray, hessian: ActiveHessian, *, masses: Mapping[int, float] | None = None,
            temperature: float = 298.15, quasi_harmonic_cutoff: float | None = QRRHO_CUTOFF) -> VibrationalAnalysis:
    """Normal modes (masses monoisotopic, or ``masses[atom]`` amu) and thermochemistry of ``hessian``."""
    atom_masses = monoisotopic_masses(qmmm.topology, hessian.atoms, masses)
    modes = normal_modes(hessian.hessian, atom_masses,
                         rigid_positions=np.asarray(positions)[hessian.atoms] if hessian.free_body else None,
                         dipole_derivatives=hessian.dipole_derivatives)
    return VibrationalAnalysis(hessian, modes, vibrational_thermochemistry(
        modes.frequencies, temperature, quasi_harmonic_cutoff=quasi_harmonic_cutoff))
