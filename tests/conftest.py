"""Shared small systems for the tests (built from package data, seconds to make)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import app, unit

from bioqmmm.examples import forcefield, water_box
from bioqmmm.preparation.sources import resolve_structure

#: Tolerance of the finite-difference checks (../shared/TESTING.md): 1e-6 Eh/Bohr in kJ/mol/nm.
FD_ABS_TOL = 1e-6 * 49614.75


def _cluster(n_waters: int):
    top, _, pos = water_box(1.9)
    xyz = np.array(pos.value_in_unit(unit.nanometer))
    centre = xyz[0]
    residues = list(top.residues())
    dist = [np.linalg.norm(xyz[r._atoms[0].index] - centre) for r in residues]
    keep = set(np.argsort(dist)[:n_waters].tolist())
    modeller = app.Modeller(top, pos)
    modeller.delete([r for i, r in enumerate(residues) if i not in keep])
    system = forcefield().createSystem(
        modeller.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds, rigidWater=True
    )
    return modeller.topology, system, np.array(modeller.positions.value_in_unit(unit.nanometer))


@pytest.fixture(scope="session")
def water_cluster():
    """Non-periodic cluster of 12 TIP3P waters: (topology, system, positions nm)."""
    return _cluster(12)


@pytest.fixture(scope="session")
def small_water_box():
    """Periodic TIP3P box of edge 1.9 nm: (topology, system, positions nm)."""
    top, system, pos = water_box(1.9)
    return top, system, np.array(pos.value_in_unit(unit.nanometer))


def mm_energy(system: openmm.System, positions: np.ndarray, box=None) -> float:
    """Energy (kJ/mol) of a System on the Reference platform."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    if box is not None:
        context.setPeriodicBoxVectors(*box)
    context.setPositions(positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def directional_derivative(energy, positions: np.ndarray, direction: np.ndarray, h: float = 1e-5) -> float:
    """-dE/ds of ``energy(positions + s direction)`` at s = 0 by central difference (nm steps)."""
    return -(energy(positions + h * direction) - energy(positions - h * direction)) / (2 * h)


def assert_fd_forces(energy, positions: np.ndarray, forces: np.ndarray, atoms, h: float = 1e-5) -> None:
    """Each force component on ``atoms`` equals the central difference of the energy (TESTING.md tolerance)."""
    for atom in atoms:
        for axis in range(3):
            step = np.zeros_like(positions)
            step[atom, axis] = 1.0
            fd = directional_derivative(energy, positions, step, h)
            assert forces[atom, axis] == pytest.approx(fd, abs=FD_ABS_TOL, rel=2e-3), (atom, axis)


def switching_scan(qmmm_system, positions: np.ndarray, box_edge: float, qm=(0, 1, 2), steps: int = 51):
    """Move the water whose oxygen is nearest 0.7 nm from the QM centre radially by -0.15..0.35 nm (through a
    0.6-0.9 nm switching shell); return the QM energies (kJ/mol) and the work integral of the QM forces
    along the scan (trapezoid rule), which an exact gradient makes equal to the energy change."""
    context = openmm.Context(
        qmmm_system.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    group = {qmmm_system.qm_force_group}
    box = np.eye(3) * box_edge
    centre = positions[list(qm)].mean(axis=0)
    from bioqmmm.units import minimum_image

    d = np.linalg.norm(minimum_image(positions - centre, box), axis=1)
    oxygen = int(np.argmin(np.abs(d - 0.7) + 10 * (np.arange(len(positions)) % 3 != 0)))
    molecule = [oxygen, oxygen + 1, oxygen + 2]
    radial = minimum_image(positions[oxygen] - centre, box)
    radial /= np.linalg.norm(radial)
    shifts = np.linspace(-0.15, 0.35, steps)
    energies, work_rate = [], []
    for s in shifts:
        p = positions.copy()
        p[molecule] += s * radial
        context.setPositions(p)
        state = context.getState(getEnergy=True, getForces=True, groups=group)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        f = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        work_rate.append(-np.sum(f[molecule] @ radial))
    energies, work_rate = np.array(energies), np.array(work_rate)
    integral = np.concatenate([[0], np.cumsum(0.5 * (work_rate[1:] + work_rate[:-1]) * np.diff(shifts))])
    return energies - energies[0], integral


SHARED_PDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "pdb"


def shared_pdb(name: str) -> Path:
    """Path of a structure in ../shared/data/pdb; skip when absent, except in CI where it must exist."""
    path = SHARED_PDB / name
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing in CI")
        pytest.skip(f"{path} is absent (the shared data folder is not next to this clone)")
    return path


def _protein_in_vacuum(entry: str, variants: dict[str, str] | None = None, templates: dict[str, str] | None = None):
    """A shipped PDB ``entry`` (bioqmmm/data), crystal waters removed, hydrogens added at pH 7, Amber14 (+ ions),
    no cutoff: (top, system, pos nm)."""
    from bioqmmm.preparation.completion import reproducible

    pdb = app.PDBFile(str(resolve_structure(entry)))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.deleteWater()
    variants = variants or {}
    with reproducible(0) as platform:  # seeded placement, deterministic relaxation: the same hydrogens every run
        modeller.addHydrogens(pH=7.0, variants=[variants.get(f"{r.name}{r.id}") for r in modeller.topology.residues()],
                              platform=platform)
    templates = templates or {}
    residue_templates = {r: templates[r.name] for r in modeller.topology.residues() if r.name in templates}
    ff = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    system = ff.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, residueTemplates=residue_templates)
    return modeller.topology, system, np.array(modeller.positions.value_in_unit(unit.nanometer))


@pytest.fixture(scope="session")
def lysozyme():
    """Hen egg-white lysozyme (1AKI) in vacuum, 1960 atoms: (topology, system, positions nm)."""
    return _protein_in_vacuum("1AKI")


@pytest.fixture(scope="session")
def rubredoxin():
    """Rubredoxin (2DSX) with Fe(III) and its four Cys deprotonated (Amber CYM): (topology, system, positions)."""
    iron_cysteines = {f"CYS{i}": "CYX" for i in (6, 9, 39, 42)}  # no HG; the FE-free SG then matches CYM
    return _protein_in_vacuum("2DSX", variants=iron_cysteines, templates={"FE": "FE"})


def mpirun(*args: str, ranks: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """``mpirun -n ranks args`` (Open MPI from PyPI, installed with the test extra), output captured."""
    launcher = shutil.which("mpirun") or str(Path(sys.executable).parent / "mpirun")
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1", "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe"}
    return subprocess.run([launcher, "-n", str(ranks), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def shipped_protocol(tmp_path, name: str, output: str, **changes):
    """A shipped protocol file cut down (``changes`` to its protocol block), one thread per run so that serial
    and MPI runs evaluate bit for bit alike; paths made absolute. Returns the new file's path."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "protocols" / name).read_text())
    config["protocol"].update(changes)
    if "pdb" in config["system"]:
        config["system"]["pdb"] = str(root / "protocols" / config["system"]["pdb"])
    if config["protocol"].get("host_pdb"):
        config["protocol"]["host_pdb"] = str(root / "protocols" / config["protocol"]["host_pdb"])
    config["resources"] = {"threads": 1}
    config["output"] = str(tmp_path / output)
    path = tmp_path / f"{output}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
