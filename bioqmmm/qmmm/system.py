"""QMMMSystem: an OpenMM System whose QM region is evaluated by a QM engine at every step."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import openmm
from openmm import app, unit

from bioqmmm.errors import InputError
from bioqmmm.qm.base import QMEngine
from bioqmmm.qmmm.embedding import EmbeddingResult, FullEmbedding, PeriodicEmbedding
from bioqmmm.qmmm.force import QMForceKernel, make_qm_force
from bioqmmm.qmmm.surgery import build_mm_system, free_force_group, mm_charges
from bioqmmm.region.boundary import LinkAtom, build_boundary
from bioqmmm.region.region import QMRegion
from bioqmmm.units import positions_nm


class QMMMSystem:
    """A QM/MM model built from an OpenMM Topology and reference System.

    E = E_MM(QM charges zeroed, bonded terms inside QM removed, QM-MM LJ kept)
      + E_QM(QM atoms + link atoms in the field of the (redistributed) MM point charges)

    Parameters
    ----------
    topology, system:
        The reference model; neither is modified (``reference_system`` keeps the System).
    qm_atoms:
        A :class:`~bioqmmm.region.region.QMRegion`, or Topology atom indices or an mdtraj selection
        string (made into a region with ``charge``, ``multiplicity``, ``boundary_charges``,
        ``allow_polar_cut`` and ``link_ratios``; :attr:`region` keeps it).
    charge, multiplicity:
        Total charge (e) and spin multiplicity of the QM region (link atoms included); required with a
        selection, not with a QMRegion. Open-shell regions run unrestricted (UHF/UKS).
    engine:
        A :class:`bioqmmm.qm.QMEngine`, e.g. :class:`bioqmmm.qm.PySCFEngine`.
    embedding:
        Defaults to :class:`~bioqmmm.qmmm.embedding.FullEmbedding` (every MM charge, exact) for
        non-periodic systems and :class:`~bioqmmm.qmmm.embedding.PeriodicEmbedding` otherwise.
    platform:
        OpenMM platform name for :meth:`energy_and_forces` (default ``"CPU"``).
    boundary_charges:
        How the charge of each MM boundary atom is handed to its neighbours in the QM
        Hamiltonian: ``"RCD"`` (default), ``"RC"`` or ``"shift"`` (:mod:`bioqmmm.region.boundary`).
    allow_polar_cut:
        Allow the QM region to cut polar single bonds (C–N, C–O, metal–ligand; the last also
        need ``link_ratios``). Cuts through rings, double, aromatic and peptide bonds and bonds
        to hydrogen are always refused.
    link_ratios:
        ``{(qm_element, mm_element): g}`` overriding the standard link-atom placement ratio.
    """

    def __init__(
        self,
        topology: app.Topology,
        system: openmm.System,
        qm_atoms: str | Sequence[int] | QMRegion,
        *,
        charge: int | None = None,
        multiplicity: int | None = None,
        engine: QMEngine,
        embedding: FullEmbedding | PeriodicEmbedding | None = None,
        platform: str = "CPU",
        boundary_charges: str | None = None,
        allow_polar_cut: bool | None = None,
        link_ratios: Mapping[tuple[str, str], float] | None = None,
    ) -> None:
        if topology.getNumAtoms() != system.getNumParticles():
            raise InputError(
                f"topology has {topology.getNumAtoms()} atoms but the system has {system.getNumParticles()} particles"
            )
        self.topology = topology
        self.reference_system = system
        if isinstance(qm_atoms, QMRegion):
            given = {"charge": charge, "multiplicity": multiplicity, "boundary_charges": boundary_charges,
                     "allow_polar_cut": allow_polar_cut, "link_ratios": link_ratios}
            if any(value is not None for value in given.values()):
                raise InputError(f"a QMRegion carries its {', '.join(k for k, v in given.items() if v is not None)}: "
                                 "give none of them with it")
            self.region = qm_atoms
        else:
            if charge is None or multiplicity is None:
                raise InputError("give the QM region's charge and multiplicity (both are required)")
            self.region = QMRegion.select(topology, qm_atoms, charge=charge, multiplicity=multiplicity,
                                          boundary_charges=boundary_charges or "RCD",
                                          allow_polar_cut=bool(allow_polar_cut), link_ratios=link_ratios)
        region = self.region
        self.qm_atoms: tuple[int, ...] = region.atoms
        self.symbols = region.symbols[: len(region.atoms)]
        self.charge, self.multiplicity = region.charge, region.multiplicity
        self.engine = engine
        self.boundary = build_boundary(topology, region.atoms, mm_charges(system), region.charge,
                                       scheme=region.boundary_charges, links=region.links)
        engine.validate(list(region.symbols), self.charge, self.multiplicity)

        periodic = system.usesPeriodicBoundaryConditions()
        self.embedding = embedding or (PeriodicEmbedding() if periodic else FullEmbedding())
        if self.embedding.periodic != periodic:
            raise InputError(
                f"{type(self.embedding).__name__} does not fit a {'' if periodic else 'non-'}periodic system"
            )
        self.system = build_mm_system(system, self.qm_atoms)
        self.qm_force_group = free_force_group(self.system, "the QM force")
        self.kernel = QMForceKernel(region, self.boundary, engine, self.embedding)
        self.qm_force = make_qm_force(self.kernel, self.qm_force_group)
        self.system.addForce(self.qm_force)
        self._platform = platform
        self._context: openmm.Context | None = None
        #: force group of the multiple-time-step reference potential, once added (:mod:`bioqmmm.simulation.mts`),
        #: and its X-H springs as rows (r0 nm, k kJ/mol/nm^2), checkpointed with a run
        self.reference_group: int | None = None
        self.reference_springs: np.ndarray | None = None
        #: the kernel of a cheaper QM level used as that reference instead (two-level multiple time steps)
        self.reference_kernel: QMForceKernel | None = None

    @property
    def links(self) -> tuple[LinkAtom, ...]:
        """Hydrogen link atoms, one per QM–MM bond cut by the QM region."""
        return self.boundary.links

    @property
    def last_qm(self) -> EmbeddingResult | None:
        """Result of the last successful QM evaluation (energy, forces, SCF info).

        OpenMM evaluates the forces of step k at the start of step k + 1, so after
        ``simulation.step(n)`` this belongs to step ``last_qm_step`` = n - 1. (Multiple-time-step
        integrators evaluate the QM force at the end of their step, before OpenMM counts it: there the
        result belongs to the structure of step ``last_qm_step`` + 1.)
        """
        return self.kernel.last

    @property
    def last_qm_step(self) -> int | None:
        """OpenMM step count of the structure that :attr:`last_qm` describes."""
        return self.kernel.last_step

    @property
    def kernels(self) -> tuple[QMForceKernel, ...]:
        """Every QM force kernel of :attr:`system`: the QM force's, then a reference level's if one was added."""
        return (self.kernel,) if self.reference_kernel is None else (self.kernel, self.reference_kernel)

    def system_changed(self) -> None:
        """Forget the evaluation Context after forces were added to :attr:`system`."""
        self._context = None

    def _get_context(self) -> openmm.Context:
        if self._context is None:
            integrator = openmm.VerletIntegrator(0.001)
            self._context = openmm.Context(self.system, integrator, openmm.Platform.getPlatformByName(self._platform))
        return self._context

    def energy_and_forces(self, positions, box_vectors=None) -> tuple[float, np.ndarray]:
        """Total energy (kJ/mol) and (N, 3) forces (kJ/mol/nm) of the whole system.

        ``positions``: Quantity or (N, 3) array in nm. ``box_vectors``: optional (3, 3) in nm.
        """
        context = self._get_context()
        if box_vectors is not None:
            context.setPeriodicBoxVectors(*positions_nm(box_vectors))
        context.setPositions(positions_nm(positions))
        with self.typed_errors():
            state = context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        return float(energy), np.asarray(forces)

    def energy(self, positions, box_vectors=None) -> float:
        """Total energy (kJ/mol) of the whole system without any gradient: the QM engine computes the energy
        only (for reweighting, FEP rows, single-point rescoring; the same number as :meth:`energy_and_forces`
        gives, at roughly the cost of the SCF alone). Arguments as for :meth:`energy_and_forces`."""
        context = self._get_context()
        if box_vectors is not None:
            context.setPeriodicBoxVectors(*positions_nm(box_vectors))
        context.setPositions(positions_nm(positions))
        with self.typed_errors(), contextlib.ExitStack() as stack:
            for kernel in self.kernels:
                stack.enter_context(kernel.energy_only())
            state = context.getState(getEnergy=True)
        return float(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))

    def constrained(self, positions, box_vectors=None, tolerance: float = 1e-8) -> np.ndarray:
        """``positions`` (nm) with the System's distance constraints applied (SHAKE-like projection)."""
        context = self._get_context()
        if box_vectors is not None:
            context.setPeriodicBoxVectors(*positions_nm(box_vectors))
        context.setPositions(positions_nm(positions))
        context.applyConstraints(tolerance)
        return np.asarray(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))

    @contextlib.contextmanager
    def typed_errors(self) -> Iterator[None]:
        """Re-raise a failure inside the QM force as its typed bioqmmm error.

        >>> with qmmm.typed_errors():
        ...     simulation.step(1000)
        """
        try:
            yield
        except openmm.OpenMMException as exc:
            failed = [kernel for kernel in self.kernels if kernel.last_error is not None]
            if not failed:
                raise
            error, failed[0].last_error = failed[0].last_error, None
            raise error from exc

