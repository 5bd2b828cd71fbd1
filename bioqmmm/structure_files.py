"""Structure files read against a System's own atoms (band endpoints, window starts).

    structure = read_structure(path, "endpoint structure")    # OpenMM PDBFile or PDBxFile
    check_same_atoms(path, topology, structure.topology)       # same atoms, same order, or InputError
"""

from __future__ import annotations

from pathlib import Path

from openmm import app

from bioqmmm.errors import InputError


def read_structure(path: Path, what: str) -> app.PDBFile | app.PDBxFile:
    """The PDB or mmCIF file ``path`` (by its suffix); a missing or unreadable file is an InputError naming
    ``what`` it was read as."""
    if not path.exists():
        raise InputError(f"{what} {path} does not exist")
    try:
        return app.PDBxFile(str(path)) if path.suffix.lower() in (".cif", ".mmcif") else app.PDBFile(str(path))
    except Exception as exc:  # OpenMM's readers raise plain exceptions for malformed files
        raise InputError(f"cannot read {what} {path}: {exc}") from exc


def check_same_atoms(path: Path, topology: app.Topology, theirs: app.Topology) -> None:
    """``theirs`` (read from ``path``) must have ``topology``'s atoms in its order (residue and atom names)."""
    if theirs.getNumAtoms() != topology.getNumAtoms():
        raise InputError(f"{path}: {theirs.getNumAtoms()} atoms per model, the system has {topology.getNumAtoms()}")
    for mine, atom in zip(topology.atoms(), theirs.atoms(), strict=True):
        if (mine.residue.name, mine.name) != (atom.residue.name, atom.name):
            raise InputError(f"{path}: atom {atom.index + 1} is {atom.residue.name} {atom.name}, the system has "
                             f"{mine.residue.name} {mine.name} there (same atoms, same order needed)")
