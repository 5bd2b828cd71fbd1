"""QM/MM nudged elastic band with a climbing image.

    from bioqmmm.paths.neb import NEB
    neb = NEB(qmmm, reactant_positions, product_positions, n_images=9, climb=True)
    result = neb.run(fmax=50.0)                       # kJ/mol/nm
    result.barrier, result.reaction_energy, result.energies, result.ts_positions   # kJ/mol, nm

``n_images`` counts every image, the two fixed endpoints included. The initial path is IDPP
(default) or linear on the path atoms (:mod:`bioqmmm.paths.interpolation`); the band is
relaxed by :func:`bioqmmm.paths.band.relax_band` (improved tangent, climbing image, FIRE).
On a :class:`~bioqmmm.qmmm.system.QMMMSystem` the images are evaluated by
:class:`~bioqmmm.paths.qmmm_images.QMMMImages` (in parallel under mpirun; see there for path
atoms, environment and frozen atoms); any :class:`~bioqmmm.paths.models.PathModel` (an
analytic surface, say) runs through the same code. The endpoints are used as given: optimise
them first at the same level (``bioqmmm run`` does with ``optimize_endpoints: true``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bioqmmm.errors import InputError
from bioqmmm.parallel.comm import world
from bioqmmm.paths.band import path_length, relax_band
from bioqmmm.paths.interpolation import idpp_path, linear_path
from bioqmmm.paths.models import PathModel
from bioqmmm.paths.qmmm_images import QMMMImages
from bioqmmm.simulation.identity import array_digest, fingerprint
from bioqmmm.units import minimum_image, positions_nm

INTERPOLATIONS = ("idpp", "linear")


@dataclass
class NEBResult:
    """The relaxed band. ``energies`` (kJ/mol) are relative to the reactant, ``total_energies`` absolute;
    ``positions`` (n, N, 3) nm; ``path_length`` (n,) nm along the path atoms; ``max_forces`` (n,)
    the largest band force on one atom of each image (kJ/mol/nm; 0 at the fixed endpoints);
    ``ts_index`` the highest interior image (the climbing image when climbing)."""

    positions: np.ndarray
    total_energies: np.ndarray
    path_length: np.ndarray
    max_forces: np.ndarray
    ts_index: int
    converged: bool
    iterations: int
    resumed_from: int
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def energies(self) -> np.ndarray:
        return self.total_energies - self.total_energies[0]

    @property
    def barrier(self) -> float:
        """Forward barrier E_TS − E_reactant, kJ/mol."""
        return float(self.total_energies[self.ts_index] - self.total_energies[0])

    @property
    def reverse_barrier(self) -> float:
        """Reverse barrier E_TS − E_product, kJ/mol."""
        return float(self.total_energies[self.ts_index] - self.total_energies[-1])

    @property
    def reaction_energy(self) -> float:
        """E_product − E_reactant, kJ/mol."""
        return float(self.total_energies[-1] - self.total_energies[0])

    @property
    def ts_positions(self) -> np.ndarray:
        """Positions of the highest image (nm)."""
        return self.positions[self.ts_index]

    def figures(self) -> dict[str, Any]:
        """Key figures (JSON-ready)."""
        from bioqmmm.results import quantity

        return {
            "converged": self.converged,
            "iterations": self.iterations,
            "resumed_from_iteration": self.resumed_from,
            "n_images": len(self.positions),
            "ts_image": self.ts_index,
            "barrier_forward": quantity(self.barrier, "kJ/mol"),
            "barrier_reverse": quantity(self.reverse_barrier, "kJ/mol"),
            "reaction_energy": quantity(self.reaction_energy, "kJ/mol"),
            "energies": quantity(list(self.energies), "kJ/mol"),
            "path_length": quantity(list(self.path_length), "nm"),
            "max_force_per_image": quantity(list(self.max_forces), "kJ/mol/nm"),
        }


class NEB:
    """A band of ``n_images`` structures from ``reactant_positions`` to ``product_positions`` (nm).

    ``qmmm``: a :class:`~bioqmmm.qmmm.system.QMMMSystem` (every atom may be QM) or a
    :class:`~bioqmmm.paths.models.PathModel`. ``spring_constant`` kJ/mol/nm²;
    ``interpolation`` ``"idpp"`` or ``"linear"``; ``environment`` ``"relaxed"`` or ``"restrained"``
    with ``restraint_constant`` kJ/mol/nm², ``active_radius`` and ``freeze_beyond`` nm, ``box``
    (3, 3) nm, ``comm`` the communicator (default: MPI's world under mpirun), ``atoms`` (path,
    environment, frozen) index arrays instead of the ones chosen from the reactant — QM/MM only.
    ``max_step`` nm is the largest move of one atom per iteration; ``relax_every`` iterations
    between environment relaxations.

    In a periodic box (``box``, default the System's) each product atom is taken as the periodic copy
    nearest its reactant position; a free molecule (every atom QM, no box) is superimposed on the
    reactant (least squares); otherwise the endpoints are used as they are.
    """

    def __init__(
        self,
        qmmm,
        reactant_positions,
        product_positions,
        n_images: int = 9,
        climb: bool = True,
        *,
        spring_constant: float = 1000.0,
        interpolation: str = "idpp",
        environment: str = "relaxed",
        restraint_constant: float = 1000.0,
        active_radius: float = 0.0,
        freeze_beyond: float | None = None,
        relax_every: int = 10,
        max_step: float = 0.01,
        mm_tolerance: float = 1.0,
        box: np.ndarray | None = None,
        platform: str = "CPU",
        comm=None,
        atoms: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> None:
        reactant = np.array(positions_nm(reactant_positions), dtype=float)
        product = np.array(positions_nm(product_positions), dtype=float)
        if reactant.shape != product.shape or reactant.ndim != 2 or reactant.shape[1] != 3:
            raise InputError(f"reactant {reactant.shape} and product {product.shape} positions must both be (N, 3)")
        if n_images < 3:
            raise InputError(f"n_images counts both endpoints and must be at least 3, got {n_images}")
        if interpolation not in INTERPOLATIONS:
            raise InputError(f"unknown interpolation {interpolation!r}: choose one of {', '.join(INTERPOLATIONS)}")
        if isinstance(qmmm, PathModel):
            self.model = qmmm
        else:
            if box is None and qmmm.system.usesPeriodicBoundaryConditions():
                box = qmmm.system.getDefaultPeriodicBoxVectors()
            box = None if box is None else np.array(positions_nm(box), dtype=float)
            comm = comm or world()
            if comm.size > 1:  # every rank builds the same band from rank 0's endpoints
                reactant, product = comm.bcast((reactant, product) if comm.rank == 0 else None)
            if box is not None or len(qmmm.qm_atoms) == len(reactant):  # a box, or a free molecule
                product = _nearest_copy(reactant, product, box)
            self.model = QMMMImages(
                qmmm, reactant, n_images, environment=environment, active_radius=active_radius,
                freeze_beyond=freeze_beyond, restraint=restraint_constant, mm_tolerance=mm_tolerance, box=box,
                platform=platform, comm=comm, atoms=atoms,
            )
        atoms = self.model.path_atoms
        if np.allclose(reactant[atoms], product[atoms], atol=1e-6):
            raise InputError("reactant and product are the same structure on the path atoms: nothing to connect")
        self.n_images, self.climb = n_images, climb
        self.spring_constant, self.relax_every, self.max_step = spring_constant, relax_every, max_step
        if interpolation == "idpp" and len(atoms) > 1:
            self.initial_path = idpp_path(reactant, product, n_images, atoms)
        else:
            self.initial_path = linear_path(reactant, product, n_images)

    def run(self, fmax: float = 50.0, max_iterations: int = 500, *, checkpoint: str | Path | None = None,
            identity: str | None = None, callback=None) -> NEBResult:
        """Relax the band until the largest band force on one atom is below ``fmax`` (kJ/mol/nm).

        ``checkpoint``: a ``.npz`` written after every iteration; if it exists (same ``identity``)
        the run continues from its last iteration. ``identity`` defaults to a fingerprint of the
        initial path, the path atoms and the band settings (give one that names the model and level
        too when several models share a folder). ``callback(iteration, row)`` after each iteration.
        """
        if identity is None:
            identity = fingerprint(type(self.model).__name__, self.model.path_atoms.tolist(), self.climb,
                                   self.spring_constant, self.relax_every, self.max_step,
                                   array_digest(self.initial_path))
        band = relax_band(
            self.model, self.initial_path, fmax=fmax, spring=self.spring_constant, climb=self.climb,
            max_iterations=max_iterations, max_step=self.max_step, relax_every=self.relax_every,
            checkpoint=checkpoint, identity=identity, callback=callback,
        )
        path = band.positions[:, self.model.path_atoms].reshape(len(band.positions), -1)
        interior = band.energies[1:-1]
        return NEBResult(
            positions=band.positions,
            total_energies=band.energies,
            path_length=path_length(path),
            max_forces=band.max_forces,
            ts_index=int(np.argmax(interior)) + 1 if band.climbing is None else band.climbing,
            converged=band.converged,
            iterations=band.iterations,
            resumed_from=band.resumed_from,
            history=band.history,
        )


def _nearest_copy(reactant: np.ndarray, product: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    """``product`` moved to lie as close to ``reactant`` as symmetry allows: each atom's nearest
    periodic image in a box, else the least-squares superposition (Kabsch) of the whole structure."""
    if box is not None:
        return reactant + minimum_image(product - reactant, box)
    a, b = reactant - reactant.mean(axis=0), product - product.mean(axis=0)
    u, _, vt = np.linalg.svd(b.T @ a)
    sign = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1.0, 1.0, sign]) @ vt
    return b @ rotation + reactant.mean(axis=0)
