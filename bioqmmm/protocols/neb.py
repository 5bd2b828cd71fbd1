"""``protocol: neb`` in a protocol file: endpoints, band, optional transition-state refinement, files.

1. Reactant (the system's structure, or ``reactant``) and ``product`` (a structure, or the reactant
   driven by ``product_distances``, :mod:`bioqmmm.protocols.drive`); with ``optimize_endpoints``
   both are optimised (microiterations; :mod:`bioqmmm.protocols.optimize`) at the level and with the
   active region of the band, as two replicas of the replica runner (in parallel under mpirun),
   into ``OUTPUT/endpoints/{reactant,product}/``.
2. The band (:class:`bioqmmm.paths.neb.NEB`), checkpointed to ``neb_checkpoint.npz`` after
   every iteration; a rerun continues from the last one.
3. With ``ts_refine``, eigenvector following from the climbing image along the band's tangent
   (:mod:`bioqmmm.paths.tsopt`) and its harmonic frequencies.
4. Files: ``profile.csv``/``profile.png`` (energy along the path, max force per image),
   ``images.pdb`` (one model per image), ``images.dcd``, ``ts.pdb``, ``neb_history.csv``,
   ``result.json``/``summary.txt``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from openmm import Vec3, app, unit

from bioqmmm.errors import InputError
from bioqmmm.parallel.replicas import Replica, run_replicas
from bioqmmm.paths.band import tangents
from bioqmmm.paths.neb import NEB, NEBResult
from bioqmmm.paths.qmmm_images import partition
from bioqmmm.paths.tsopt import TSResult, refine_transition_state
from bioqmmm.protocols import optimize as optimize_protocol
from bioqmmm.protocols.context import RunContext
from bioqmmm.protocols.drive import check_restrained_atoms, drive
from bioqmmm.protocols.optimize import ActiveRegionKeys, OptimizeSettings, run_optimization
from bioqmmm.protocols.registry import Protocol
from bioqmmm.protocols.settings import Declared, FieldError, setting
from bioqmmm.region.selection import resolve_qm_atoms
from bioqmmm.results import new_figure, quantity, read_result, write_pdb_models, write_results
from bioqmmm.simulation.environment import ConstraintProjector
from bioqmmm.simulation.identity import array_digest, fingerprint
from bioqmmm.simulation.imaging import MoleculeImager
from bioqmmm.structure_files import check_same_atoms, read_structure

ENDPOINTS = ("reactant", "product")


@dataclass(frozen=True)
class DistanceSection(Declared):
    """A target distance between two atoms, each an mdtraj selection of exactly one atom."""

    atoms: tuple[str, ...] = setting(doc="two mdtraj selections of one atom each")
    distance_nm: float = setting(doc="the distance to drive the pair to", check="positive")

    def check(self) -> None:
        if len(self.atoms) != 2:
            raise FieldError("atoms", f"give two atom selections, not {len(self.atoms)}")


@dataclass(frozen=True)
class NEBSettings(ActiveRegionKeys):
    """Nudged elastic band with climbing image between the system's structure (or ``reactant``) and
    ``product`` (module docstring). ``reactant``/``product`` are PDB or mmCIF files with
    every atom of the system in its order, or only some residues (matched by chain, residue number
    and name, and atom name), the rest taken from the system. Instead of ``product``,
    ``product_distances`` drives the reactant to the product by restrained optimisations
    (:mod:`bioqmmm.protocols.drive`; force constant ``drive_force_constant_kjmol_nm2``)."""

    product: str | None = setting(None, doc="product structure (PDB/mmCIF: all atoms, or some residues)")
    product_distances: tuple[DistanceSection, ...] = setting((), doc="drive the reactant to these distances instead")
    drive_force_constant_kjmol_nm2: float = setting(50000.0, doc="restraint of the drive", check="positive")
    reactant: str | None = setting(None, doc="reactant structure (default: the system's)")
    n_images: int = setting(9, doc="images, both endpoints counted")
    climb: bool = setting(True, doc="climbing image on the highest interior image")
    interpolation: Literal["idpp", "linear"] = setting("idpp", doc="initial path")
    spring_constant_kjmol_nm2: float = setting(1000.0, doc="springs between images", check="positive")
    environment: Literal["relaxed", "restrained"] = setting("relaxed", doc="how the MM environment follows the band")
    restraint_kjmol_nm2: float = setting(1000.0, doc="restrained environment: restraint to its start",
                                         check="positive")
    relax_every: int = setting(10, doc="relaxed environment: iterations between relaxations", check="positive_int")
    optimize_endpoints: bool = setting(True, doc="optimise both endpoints first (as two replicas)")
    endpoint_fmax_kjmol_nm: float = setting(10.0, doc="endpoint optimisation criterion", check="positive")
    endpoint_max_steps: int = setting(200, doc="endpoint optimisation steps at most", check="positive_int")
    fmax_kjmol_nm: float = setting(25.0, doc="band converged below this force on any atom", check="positive")
    max_iterations: int = setting(300, doc="band iterations at most (a rerun with more continues)",
                                  check="positive_int")
    max_step_nm: float = setting(0.01, doc="largest move of one atom per iteration", check="positive")
    ts_refine: bool = setting(False, doc="refine the climbing image to a saddle (P-RFO) with frequencies")
    ts_fmax_kjmol_nm: float = setting(5.0, doc="transition-state criterion", check="positive")
    ts_max_steps: int = setting(50, doc="transition-state steps at most", check="positive_int")

    def check(self) -> None:
        if self.n_images < 3:
            raise FieldError("n_images", "counts both endpoints and must be at least 3")
        if (self.product is None) == (not self.product_distances):
            raise FieldError("product", "give exactly one of 'product' (a structure) and 'product_distances'")
        if self.product_distances and not self.optimize_endpoints:
            raise FieldError("optimize_endpoints", "a product driven by 'product_distances' must be optimised")


def read_endpoint(path: Path, topology: app.Topology, positions: np.ndarray) -> np.ndarray:
    """Positions (nm) from the PDB/mmCIF ``path``: every atom of ``topology`` in its order, or some
    residues matched by chain id, residue number and name and atom name (the rest from ``positions``)."""
    structure = read_structure(path, "endpoint structure")
    xyz = structure.getPositions(asNumpy=True).value_in_unit(unit.nanometer)

    def key(atom) -> tuple[str, str, str, str]:
        return atom.residue.chain.id, atom.residue.id, atom.residue.name, atom.name

    atoms = list(structure.topology.atoms())
    if len(atoms) == topology.getNumAtoms():
        check_same_atoms(path, topology, structure.topology)
        return np.array(xyz, dtype=float)
    index = {key(atom): atom.index for atom in topology.atoms()}
    if len(index) != topology.getNumAtoms():
        raise InputError(f"{path}: the system has atoms with the same chain, residue and name; give every atom")
    result = np.array(positions, dtype=float)
    for atom in atoms:
        if key(atom) not in index:
            chain, number, resname, name = key(atom)
            raise InputError(f"{path}: atom {name} of {resname} {number} (chain {chain!r}) is not in the system")
        result[index[key(atom)]] = xyz[atom.index]
    return result


def run(context: RunContext, settings: NEBSettings) -> dict:
    """The ``neb`` protocol on every rank (endpoints and images shared out); rank 0 writes the files."""
    qmmm, positions, box, comm, out = context.qmmm, context.positions, context.box, context.comm, context.output
    base = context.base
    topology = qmmm.topology
    start = comm.bcast(np.asarray(positions) if comm.rank == 0 else None)  # one start for every rank
    reactant = start if settings.reactant is None else read_endpoint(base / settings.reactant, topology, start)
    product = reactant if settings.product is None else read_endpoint(base / settings.product, topology, start)
    ends = {"reactant": reactant, "product": product}
    qm = list(qmmm.qm_atoms)
    if settings.product is not None and np.allclose(reactant[qm], product[qm], atol=1e-6):
        raise InputError(f"{settings.product}: the product's QM atoms are where the reactant's are: nothing to connect")
    pairs = [[_one_atom(topology, selection) for selection in d.atoms] for d in settings.product_distances]
    check_restrained_atoms(qmmm, pairs)
    # one choice of path, environment and frozen atoms for the endpoints and the band alike
    atoms = partition(qmmm, reactant, settings.active_radius_nm, settings.freeze_beyond_nm)
    _same_frozen_atoms(reactant, product, atoms[2], settings.product or "the product")
    if settings.optimize_endpoints:
        ends = _optimized_endpoints(context, settings, ends, pairs, atoms)
    band_identity = fingerprint(context.identity, array_digest(ends["reactant"]), array_digest(ends["product"]))
    neb = NEB(
        qmmm, ends["reactant"], ends["product"], settings.n_images, settings.climb,
        spring_constant=settings.spring_constant_kjmol_nm2, interpolation=settings.interpolation,
        environment=settings.environment, restraint_constant=settings.restraint_kjmol_nm2,
        active_radius=settings.active_radius_nm, freeze_beyond=settings.freeze_beyond_nm,
        relax_every=settings.relax_every, max_step=settings.max_step_nm, mm_tolerance=settings.mm_tolerance_kjmol_nm,
        box=box, platform=context.platform, comm=comm, atoms=atoms,
    )
    result = _relax(neb, settings, out, band_identity, context.progress and comm.rank == 0)
    ts = _refine(qmmm, neb, result, settings, box, comm) if settings.ts_refine else None
    figures = {**context.record, **result.figures(), **({} if ts is None else _ts_figures(ts, result))}
    if comm.rank != 0:
        return {"protocol": "neb", **figures}
    files = write_band_files(out, result, topology, box, ts, centre_atoms=qmmm.qm_atoms)
    return write_results(out, "neb", {**figures, "files": sorted(files + ["result.json", "summary.txt"])})


def _relax(neb: NEB, settings: NEBSettings, out: Path, identity: str, progress: bool) -> NEBResult:
    from tqdm import tqdm

    with tqdm(total=settings.max_iterations, unit="iteration", disable=not progress, desc="NEB") as bar:
        def report(iteration: int, row: dict[str, float]) -> None:
            bar.n = iteration
            bar.set_postfix(fmax=f"{row['max_force']:.1f}", barrier=f"{row['max_energy']:.2f}")

        return neb.run(settings.fmax_kjmol_nm, settings.max_iterations, checkpoint=out / "neb_checkpoint.npz",
                       identity=identity, callback=report)


def _same_frozen_atoms(reactant: np.ndarray, product: np.ndarray, frozen: np.ndarray, label: str) -> None:
    """Frozen atoms never move, so both endpoints must have them in the same place."""
    if len(frozen):
        shift = np.linalg.norm(product[frozen] - reactant[frozen], axis=1)
        if shift.max() > 1e-4:
            atom = int(frozen[np.argmax(shift)])
            raise InputError(f"{label}: frozen atom {atom} is {shift.max():.4f} nm from where the reactant has it; "
                             "frozen atoms must coincide (same environment, or no freeze_beyond_nm)")


def _optimized_endpoints(context: RunContext, settings: NEBSettings, ends: dict[str, np.ndarray],
                         pairs: list[list[int]], atoms) -> dict[str, np.ndarray]:
    """Both endpoints optimised at the band's level, one per rank under mpirun (replica runner), with the
    freedom the band's images have: a relaxed environment by microiterations, a restrained one on the
    true QM/MM surface with the path atoms (its restraints vanish at an endpoint, their reference)."""
    qmmm, box, platform = context.qmmm, context.box, context.platform
    path, environment, frozen = atoms
    relaxed = settings.environment == "relaxed"
    inner = path if relaxed else np.union1d(path, environment)
    optimize = OptimizeSettings(
        fmax_kjmol_nm=settings.endpoint_fmax_kjmol_nm, max_steps=settings.endpoint_max_steps,
        microiterations=relaxed, mm_tolerance_kjmol_nm=settings.mm_tolerance_kjmol_nm,
    )
    folder = context.output / "endpoints"
    # what an endpoint depends on; the run length excluded, so a longer rerun continues the same optimisation
    identity = fingerprint(*context.inputs_at(None), optimize_protocol.PROTOCOL.identity_record(optimize),
                           settings.product_distances, settings.drive_force_constant_kjmol_nm2,
                           [array_digest(a) for a in (*atoms, ends["reactant"], ends["product"])])
    tags = {name: fingerprint(identity, name) for name in ENDPOINTS}

    def work(replica: Replica, poll) -> dict[str, Any]:
        x = ends[replica.name]
        if replica.name == "product" and pairs:  # drive the reactant there first
            x = drive(qmmm, x, pairs, [d.distance_nm for d in settings.product_distances],
                      settings.drive_force_constant_kjmol_nm2, optimize, folder / "product_drive", box=box,
                      platform=platform, identity=tags["product"], poll=poll, atoms=(inner, frozen))
        outcome = run_optimization(qmmm, x, optimize, folder / replica.name, box=box, platform=platform,
                                   identity=tags[replica.name], progress=False, poll=poll, atoms=(inner, frozen))
        return write_results(folder / replica.name, "optimize", {"identity": tags[replica.name], **outcome.figures()})

    def finished(replica: Replica) -> dict[str, Any] | None:
        record = read_result(folder / replica.name, tags[replica.name])
        done = record is not None and (record.get("converged")
                                       or record.get("iterations", 0) >= settings.endpoint_max_steps)
        return record if done else None

    results = run_replicas([Replica(name) for name in ENDPOINTS], work, folder, finished=finished, comm=context.comm)
    for name, record in results.items():
        if not record.get("converged"):
            raise InputError(f"the {name} optimisation did not converge in {settings.endpoint_max_steps} steps "
                             f"(see {folder / name}): raise endpoint_max_steps, or give a better {name}")
    optimised = {}
    for name in ENDPOINTS:
        with np.load(folder / name / "optimization_checkpoint.npz", allow_pickle=False) as data:
            optimised[name] = np.array(data["positions"])
    return optimised


def _one_atom(topology: app.Topology, selection: str) -> int:
    atoms = resolve_qm_atoms(topology, selection)
    if len(atoms) != 1:
        raise InputError(f"product_distances: {selection!r} selects {len(atoms)} atoms, not one")
    return atoms[0]


def _refine(qmmm, neb: NEB, result: NEBResult, settings: NEBSettings, box, comm) -> TSResult:
    """Eigenvector following from the climbing image along the band's tangent there."""
    atoms = neb.model.path_atoms
    path = result.positions[:, atoms].reshape(len(result.positions), -1)
    direction = tangents(path, result.total_energies)[result.ts_index - 1]
    projector = ConstraintProjector(qmmm.system)

    def evaluate(x: np.ndarray) -> tuple[float, np.ndarray]:
        energy, forces = qmmm.energy_and_forces(x, box)
        return energy, projector(forces, x)

    masses = np.array([qmmm.system.getParticleMass(int(i)).value_in_unit(unit.dalton) for i in atoms])
    return refine_transition_state(
        evaluate, result.ts_positions, atoms, masses, direction=direction,
        whole_system=box is None and len(atoms) == len(result.ts_positions),
        fmax=settings.ts_fmax_kjmol_nm, max_steps=settings.ts_max_steps, comm=comm,
    )


def _ts_figures(ts: TSResult, result: NEBResult) -> dict[str, Any]:
    reactant, product = result.total_energies[0], result.total_energies[-1]
    return {"ts_refinement": {
        "converged": ts.converged,
        "steps": ts.iterations,
        "max_force": quantity(ts.max_force, "kJ/mol/nm"),
        "barrier_forward": quantity(ts.energy - reactant, "kJ/mol"),
        "barrier_reverse": quantity(ts.energy - product, "kJ/mol"),
        "imaginary_frequencies": quantity(list(ts.imaginary_frequencies), "cm^-1 (negative = imaginary)"),
        "lowest_frequencies": quantity(list(ts.frequencies[:6]), "cm^-1"),
    }}


def write_band_files(out: Path, result: NEBResult, topology: app.Topology, box=None,
                     ts: TSResult | None = None, centre_atoms=()) -> list[str]:
    """Profile table and plot, all images (multi-model PDB and DCD), the TS structure and the history; in a
    box, structures are imaged around ``centre_atoms`` (:mod:`bioqmmm.simulation.imaging`)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "profile.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "path_length_nm", "energy_kjmol", "max_force_kjmol_nm"])
        for i, (s, e, f) in enumerate(zip(result.path_length, result.energies, result.max_forces, strict=True)):
            writer.writerow([i, f"{s:.6f}", f"{e:.6f}", f"{f:.4f}"])
    with open(out / "neb_history.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(result.history[0]))
        writer.writeheader()
        writer.writerows(result.history)
    vectors = None if box is None else unit.Quantity([Vec3(*map(float, v)) for v in box], unit.nanometer)
    write_pdb_models(out / "images.pdb", topology, result.positions, box, centre_atoms)
    imager = MoleculeImager(topology, centre_atoms)
    with open(out / "images.dcd", "wb") as handle:
        dcd = app.DCDFile(handle, topology, 1.0 * unit.picosecond)
        for x in result.positions:
            dcd.writeModel(imager(x, box) * unit.nanometer, periodicBoxVectors=vectors)
    files = ["profile.csv", "profile.png", "neb_history.csv", "images.pdb", "images.dcd", "ts.pdb"]
    write_pdb_models(out / "ts.pdb", topology, [result.ts_positions if ts is None else ts.positions], box, centre_atoms)
    if ts is not None:
        write_pdb_models(out / "ts_climbing_image.pdb", topology, [result.ts_positions], box, centre_atoms)
        files.append("ts_climbing_image.pdb")
    _plot(out / "profile.png", result, ts)
    return files


def _plot(path: Path, result: NEBResult, ts: TSResult | None) -> None:
    fig, (profile, forces) = new_figure(2, 2.8)
    profile.plot(result.path_length, result.energies, marker="o", color="C0")
    profile.plot(result.path_length[result.ts_index], result.energies[result.ts_index], marker="*", markersize=14,
                 color="C3", label=f"highest image: {result.barrier:.1f} kJ/mol")
    if ts is not None:
        profile.axhline(ts.energy - result.total_energies[0], color="C3", linestyle=":",
                        label=f"refined TS: {ts.energy - result.total_energies[0]:.1f} kJ/mol")
    profile.set_ylabel("E − E$_\\mathrm{reactant}$ / kJ mol$^{-1}$")
    profile.legend(fontsize="small")
    state = "converged" if result.converged else "not converged"
    profile.set_title(f"NEB, {len(result.positions)} images, {result.iterations} iterations ({state})",
                      fontsize="medium")
    forces.bar(result.path_length, np.maximum(result.max_forces, 1e-3), width=0.6 * np.min(np.diff(result.path_length)))
    forces.set_yscale("log")
    forces.set_ylabel("max |F| / kJ mol$^{-1}$ nm$^{-1}$")
    forces.set_xlabel("path length / nm (path atoms)")
    fig.savefig(path, dpi=120)



PROTOCOL = Protocol("neb", "reaction path: nudged elastic band with climbing image, endpoints, TS refinement",
                    NEBSettings, run, parallel=True,
                    length_keys=("max_iterations", "endpoint_max_steps", "ts_refine", "ts_fmax_kjmol_nm",
                                 "ts_max_steps"))
