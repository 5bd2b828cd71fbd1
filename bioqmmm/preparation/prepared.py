"""A prepared system, and its folder: structure (PDB + mmCIF), System XML, force-field XML, report.

Folder layout written by :meth:`Prepared.save` and read by :func:`load_prepared`::

    structure.pdb       prepared structure (PDB; CONECT records for ligand bonds)
    structure.cif       the same as mmCIF (no PDB size limits; read back by load_prepared)
    system.xml          serialized OpenMM System
    forcefields/*.xml   generated or user ligand templates, so the ForceField can be rebuilt
    prepare.json        input, options, force-field files, versions, report (machine-readable)
    report.txt          the report, for people
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

from bioqmmm.errors import PreparationError
from bioqmmm.preparation.forcefields import ForceFieldSetup
from bioqmmm.preparation.report import Report

FILES = ("structure.pdb", "structure.cif", "system.xml", "prepare.json", "report.txt")


@dataclass
class Prepared:
    """A simulation-ready system: ``topology``, ``system``, ``positions`` (nm, N x 3), ``report``."""

    topology: app.Topology
    system: openmm.System
    positions: np.ndarray
    report: Report
    forcefield: ForceFieldSetup
    options: dict = field(default_factory=dict)
    source: str = ""

    @property
    def box(self) -> np.ndarray | None:
        """Periodic box vectors (3x3, nm, rows a, b, c) or None."""
        box = self.topology.getPeriodicBoxVectors()
        return None if box is None else np.array(box.value_in_unit(unit.nanometer))

    def save(self, folder: str | Path) -> Path:
        """Write the folder (see module docstring); files are replaced atomically."""
        folder = Path(folder)
        (folder / "forcefields").mkdir(parents=True, exist_ok=True)
        positions = self.positions * unit.nanometer
        _write(folder / "structure.pdb", lambda f: app.PDBFile.writeFile(self.topology, positions, f, keepIds=True))
        _write(folder / "structure.cif", lambda f: app.PDBxFile.writeFile(self.topology, positions, f, keepIds=True))
        _write(folder / "system.xml", lambda f: f.write(openmm.XmlSerializer.serialize(self.system)))
        for stale in (folder / "forcefields").glob("*.xml"):
            if stale.name not in self.forcefield.extra:
                stale.unlink()  # prepare() reads forcefields/*.xml beside its input: no leftovers from an older run
        for name, text in self.forcefield.extra.items():
            _write(folder / "forcefields" / name, lambda f, text=text: f.write(text))
        meta = {
            "source": self.source,
            "options": self.options,
            "forcefield_files": self.forcefield.files,
            "extra_forcefield_files": sorted(self.forcefield.extra),
            "residue_templates": {str(k): v for k, v in self.forcefield.templates.items()},
            "atoms": self.topology.getNumAtoms(),
            "versions": {"openmm": openmm.__version__, **_versions()},
            "report": self.report.to_dict(),
        }
        _write(folder / "prepare.json", lambda f: json.dump(meta, f, indent=1))
        _write(folder / "report.txt", lambda f: f.write(f"Prepared from {self.source}\n\n{self.report}\n"))
        return folder


def load_prepared(folder: str | Path) -> Prepared:
    """Read a folder written by :meth:`Prepared.save`."""
    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).exists()]
    if missing:
        raise PreparationError(f"{folder} is not a prepared folder: missing {', '.join(missing)}")
    meta = json.loads((folder / "prepare.json").read_text())
    structure = app.PDBxFile(str(folder / "structure.cif"))
    system = openmm.XmlSerializer.deserialize((folder / "system.xml").read_text())
    if system.getNumParticles() != structure.topology.getNumAtoms():
        raise PreparationError(f"{folder}: system.xml has {system.getNumParticles()} particles but structure.cif "
                               f"{structure.topology.getNumAtoms()} atoms")
    extra = {name: (folder / "forcefields" / name).read_text() for name in meta["extra_forcefield_files"]}
    setup = ForceFieldSetup(meta["forcefield_files"], extra, {int(k): v for k, v in meta["residue_templates"].items()})
    return Prepared(
        structure.topology,
        system,
        np.array(structure.getPositions(asNumpy=True).value_in_unit(unit.nanometer)),
        Report.from_dict(meta["report"]),
        setup,
        meta["options"],
        meta["source"],
    )


def _write(path: Path, writer) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        writer(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("pdbfixer", "gemmi")}
