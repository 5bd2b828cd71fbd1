"""A band of QM/MM images (:class:`QMMMImages`), evaluated in parallel over the ranks of a communicator.

Every rank holds the whole band; each interior image belongs to one rank (equal costs, so the
balanced schedule of :mod:`bioqmmm.parallel.schedule` deals them out in turn), which evaluates it
with its own QM/MM model and keeps that image's SCF density as the next guess. Energies and the
forces on the moving atoms are exchanged (allgather), so every rank takes the same optimiser step.
A failed SCF (after the engine's ladder) on any image stops every rank with an error naming the
image.

Atoms: the *path atoms* are the inner atoms of the optimiser (QM atoms, link hosts and their
bonded neighbours, atoms within ``active_radius`` nm); springs act on them. The *environment* is
every other atom not beyond ``freeze_beyond`` nm; it is either ``relaxed`` (each image's
environment minimised at MM cost in the field of that image's QM charges, between band steps;
:mod:`bioqmmm.simulation.environment`) or ``restrained`` (it moves with the band under its true forces and
harmonic restraints, constant k kJ/mol/nm², to where it started).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bioqmmm.errors import BioQMMMError, CalculationError, InputError
from bioqmmm.parallel.comm import world
from bioqmmm.parallel.schedule import balanced
from bioqmmm.paths.models import PathModel
from bioqmmm.simulation.environment import (
    ConstraintProjector,
    fixed_atoms,
    frozen_atoms,
    inner_atoms,
    qm_charges_on_atoms,
    relax_environment,
)

ENVIRONMENTS = ("relaxed", "restrained")


def partition(qmmm, positions: np.ndarray, active_radius: float = 0.0,
              freeze_beyond: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(path, environment, frozen) atom indices of ``positions`` (nm): path = the optimiser's inner atoms
    (QM, link hosts and their neighbours, atoms within ``active_radius``); frozen = atoms beyond
    ``freeze_beyond`` of every QM atom, closed under constraints (a rigid water is frozen whole);
    environment = the rest."""
    path = inner_atoms(qmmm, positions, active_radius)
    far = set(frozen_atoms(qmmm, positions, freeze_beyond).tolist()) - set(path.tolist())
    frozen = np.array(sorted(fixed_atoms(qmmm.system, far)), dtype=int)
    environment = np.setdiff1d(np.arange(len(positions)), np.union1d(path, frozen))
    return path, environment, frozen


class QMMMImages(PathModel):
    """Images of ``qmmm`` (a :class:`~bioqmmm.qmmm.system.QMMMSystem`); ``positions`` (nm) decides which atoms
    are path, environment and frozen. ``box`` (3, 3) nm for periodic systems."""

    def __init__(self, qmmm, positions: np.ndarray, n_images: int, *, environment: str = "relaxed",
                 active_radius: float = 0.0, freeze_beyond: float | None = None, restraint: float = 1000.0,
                 mm_tolerance: float = 1.0, box: np.ndarray | None = None, platform: str = "CPU",
                 comm=None, atoms: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
        if environment not in ENVIRONMENTS:
            raise InputError(f"unknown environment {environment!r}: choose one of {', '.join(ENVIRONMENTS)}")
        self.qmmm, self.box, self.platform = qmmm, box, platform
        self.comm = comm or world()
        self.n_atoms = len(positions)
        self.path_atoms, self.environment, frozen = atoms or partition(qmmm, positions, active_radius, freeze_beyond)
        self.fixed_in_relaxation = np.union1d(self.path_atoms, frozen)
        self.restrained = environment == "restrained"
        self.relaxes = environment == "relaxed" and len(self.environment) > 0
        self._moving = np.concatenate([self.path_atoms, self.environment]) if self.restrained else self.path_atoms
        self.restraint = restraint
        self.mm_tolerance = mm_tolerance
        self.projector = ConstraintProjector(qmmm.system)
        plan = balanced({str(i): 1.0 for i in range(1, n_images - 1)}, self.comm.size)  # interior images
        self.owner = {0: 0, n_images - 1: self.comm.size - 1}  # the endpoints, evaluated once
        self.owner.update({int(name): rank for rank, names in enumerate(plan) for name in names})
        self._guesses: dict[int, dict] = {}
        self._charges: dict[int, np.ndarray] = {}

    @property
    def moving_atoms(self) -> np.ndarray:
        return self._moving

    @property
    def writes_files(self) -> bool:
        return self.comm.rank == 0

    def agree(self, positions: np.ndarray) -> np.ndarray:
        """Rank 0's band on every rank: each rank constrains with its own OpenMM Context, and ranks
        whose positions differed in the last bit could stop at different iterations."""
        return self.comm.bcast(positions if self.comm.rank == 0 else None) if self.comm.size > 1 else positions

    def _mine(self, images: Sequence[int]) -> list[int]:
        return [i for i in images if self.owner[i] == self.comm.rank]

    def _on_each_image(self, images: Sequence[int], work) -> dict[int, np.ndarray]:
        """``work(image)`` for this rank's ``images``, every rank's results merged; the first error of
        any rank is raised on all of them (naming its image), so no rank waits for a failed one."""
        local, error = {}, None
        for image in self._mine(images):
            try:
                local[image] = work(image)
            except BioQMMMError as exc:
                error = f"NEB image {image}: {exc}"
                break
            except Exception as exc:  # a failure on one rank must reach all of them
                error = f"NEB image {image}: {exc!r}"
                break
        merged: dict[int, np.ndarray] = {}
        errors = []
        for part, part_error in self.comm.allgather((local, error)):
            merged.update(part)
            if part_error:
                errors.append(part_error)
        if errors:
            raise CalculationError(errors[0])
        return merged

    def _evaluate_one(self, image: int, positions: np.ndarray) -> tuple[float, np.ndarray]:
        engine = self.qmmm.engine
        engine.set_state(self._guesses.get(image, {}))  # this image's last density is its best guess
        energy, forces = self.qmmm.energy_and_forces(positions, self.box)
        self._guesses[image] = engine.get_state()
        self._charges[image] = qm_charges_on_atoms(self.qmmm)
        return energy, self.projector(forces, positions)

    def evaluate(self, positions: np.ndarray, images: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        def work(image: int) -> np.ndarray:
            energy, forces = self._evaluate_one(image, positions[image])
            return np.concatenate([[energy], forces[self._moving].ravel()])

        merged = self._on_each_image(images, work)
        energies = np.array([merged[i][0] for i in images])
        forces = np.zeros((len(images), self.n_atoms, 3))
        for k, image in enumerate(images):
            forces[k, self._moving] = merged[image][1:].reshape(-1, 3)
        return energies, forces

    def extra_forces(self, positions: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Restraints to ``reference``, projected like the true forces (what the constraints cancel removed)."""
        env = self.environment
        restraint = np.zeros_like(positions)
        restraint[env] = self.restraint * (reference[env] - positions[env])
        return self.projector(restraint, positions)[env]

    def constrain(self, positions: np.ndarray) -> np.ndarray:
        """The moving atoms put back on the constraints (the others, constrained among themselves, stay)."""
        if self.qmmm.system.getNumConstraints() == 0:
            return positions
        result = positions.copy()
        result[self._moving] = self.qmmm.constrained(positions, self.box)[self._moving]
        return result

    def relax(self, positions: np.ndarray, images: Sequence[int]) -> np.ndarray:
        def work(image: int) -> np.ndarray:
            if image not in self._charges:  # the QM charges of this image are needed first
                self._evaluate_one(image, positions[image])
            relaxed, _ = relax_environment(
                self.qmmm, positions[image], qm_charges=self._charges[image], frozen=self.fixed_in_relaxation,
                tolerance=self.mm_tolerance, box=self.box, platform=self.platform,
            )
            return relaxed[self.environment]

        merged = self._on_each_image(images, work)
        result = positions.copy()
        for image, env in merged.items():
            result[image, self.environment] = env
        return result

