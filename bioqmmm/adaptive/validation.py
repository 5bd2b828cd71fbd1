"""Checking an adaptive set-up with two MM models: energy conservation and structure across the buffer.

With a second MM model standing in for QM (:func:`~bioqmmm.adaptive.models.mm_builder`), the same NVE
run is made twice from the same start and velocities: once adaptive, once with a fixed partition (the
core at the high level, every group at the low one). :func:`two_model_nve` returns for each the drift of
the total energy and the structure seen from the core — the number density of groups in shells around
the centre and the O–O radial distribution of the waters near it — each with its block-average error,
so a spurious layer at the buffer shows as a difference beyond the errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import openmm
from openmm import unit

from bioqmmm.adaptive.hamiltonian import AdaptiveHamiltonian
from bioqmmm.adaptive.models import mm_builder
from bioqmmm.adaptive.partition import BufferedPartition
from bioqmmm.simulation.composite import particle_masses
from bioqmmm.simulation.reporters import degrees_of_freedom, energy_drift
from bioqmmm.units import minimum_image


@dataclass(frozen=True)
class Profile:
    """A histogram over ``edges`` (nm): block mean and its standard error."""

    edges: np.ndarray
    mean: np.ndarray
    error: np.ndarray


@dataclass(frozen=True)
class NVERun:
    """drift (kJ/mol/ns/dof), fluctuation (kJ/mol) of the total energy; density: groups per nm³ in shells
    around the centre; rdf: O–O g(r) of waters within ``near`` of the centre; evaluations per step,
    exchanges and steps over the buffer cap (adaptive run only)."""

    drift: float
    fluctuation: float
    density: Profile
    rdf: Profile
    evaluations_per_step: float = 1.0
    exchanges: int = 0
    capped_steps: int = 0


def _blocks(samples: np.ndarray, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    parts = np.array_split(samples, blocks)
    means = np.array([p.mean(axis=0) for p in parts])
    return means.mean(axis=0), means.std(axis=0, ddof=1) / np.sqrt(blocks)


def _structure(frames: list[np.ndarray], box: np.ndarray, partition: BufferedPartition, oxygens: np.ndarray,
               near: float, edges: np.ndarray, blocks: int) -> tuple[Profile, Profile]:
    shells = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    density, rdf = [], []
    bulk = len(oxygens) / abs(np.linalg.det(box))
    for x in frames:
        r, _ = partition.distances(x, box)
        density.append(np.histogram(r, edges)[0] / shells)
        centres = oxygens[r < near]
        d = np.linalg.norm(minimum_image(x[centres][:, None, :] - x[oxygens][None, :, :], box), axis=-1)
        counts = np.histogram(d[d > 1e-9], edges)[0]
        rdf.append(counts / max(len(centres), 1) / (shells * bulk))
    return (Profile(edges, *_blocks(np.array(density), blocks)), Profile(edges, *_blocks(np.array(rdf), blocks)))


def two_model_nve(low: openmm.System, high: openmm.System, positions: np.ndarray, box: np.ndarray,
                  core: Sequence[int], groups: Sequence[Sequence[int]], oxygens: Sequence[int], *, r_inner: float,
                  r_outer: float, max_buffer_groups: int = 7, picoseconds: float = 20.0, timestep_fs: float = 2.0,
                  sample_steps: int = 25, temperature_k: float = 300.0, seed: int = 1, blocks: int = 10,
                  edges: np.ndarray | None = None, threads: int | None = 1) -> tuple[NVERun, NVERun]:
    """(adaptive, fixed) Verlet runs of ``picoseconds`` from ``positions`` (nm) in the periodic ``box`` (nm).

    ``core`` is at the high level throughout; ``groups`` move by the permuted scheme between ``r_inner`` and
    ``r_outer`` (nm). ``oxygens``: one atom per group, in group order (the O–O g(r)). ``edges``: radial bins (nm;
    default 0.2–0.7 nm in 0.025 nm steps)."""
    edges = np.arange(0.2, 0.7001, 0.025) if edges is None else np.asarray(edges)
    masses = particle_masses(low)
    partition = BufferedPartition(core, groups, masses, r_inner, r_outer, max_buffer_groups)
    adaptive = AdaptiveHamiltonian(partition, mm_builder(low, high, core, groups, "CPU", threads), low, core=core,
                                   free_core=False, platform="CPU", threads=threads)
    fixed = mm_builder(low, high, core, groups, "CPU", threads)(frozenset()).system
    oxygens = np.asarray(oxygens, dtype=int)
    steps = int(round(picoseconds * 1000.0 / timestep_fs))
    runs = []
    for system in (adaptive.system, fixed):
        integrator = openmm.VerletIntegrator(timestep_fs * 1e-3)
        integrator.setConstraintTolerance(1e-8)
        context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"),
                                 {"Threads": str(threads)} if threads else {})
        context.setPeriodicBoxVectors(*box)
        context.setPositions(positions)
        context.setVelocitiesToTemperature(temperature_k * unit.kelvin, seed)
        times, totals, frames = [], [], []
        with adaptive.typed_errors():
            for _ in range(steps // sample_steps):
                integrator.step(sample_steps)
                state = context.getState(getEnergy=True, getPositions=True)
                times.append(state.getTime().value_in_unit(unit.picosecond))
                totals.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(
                    unit.kilojoule_per_mole))
                frames.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        drift, fluctuation = energy_drift(times, totals, degrees_of_freedom(system))
        density, rdf = _structure(frames, box, partition, oxygens, r_outer + 0.1, edges, blocks)
        runs.append(NVERun(drift, fluctuation, density, rdf))
    adaptive_run = NVERun(runs[0].drift, runs[0].fluctuation, runs[0].density, runs[0].rdf,
                          adaptive.evaluations / steps, len(adaptive.exchanges), adaptive.capped_steps)
    return adaptive_run, runs[1]
