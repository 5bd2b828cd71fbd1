"""Resolving a QM selection to OpenMM Topology atom indices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from openmm import app

from bioqmmm.errors import SelectionError


def describe_atom(atom: app.topology.Atom) -> str:
    """'ASP66:CB (index 1012)' style label for messages."""
    res = atom.residue
    return f"{res.name}{res.id}:{atom.name} (index {atom.index})"


def resolve_qm_atoms(topology: app.Topology, selection: str | Sequence[int]) -> tuple[int, ...]:
    """Atom indices of the QM region, sorted.

    ``selection`` is a list of Topology atom indices or an mdtraj selection string
    (e.g. ``"resname ALA"``, ``"resid 65 and sidechain"``).
    """
    n_atoms = topology.getNumAtoms()
    if isinstance(selection, str):
        import mdtraj

        try:
            indices = mdtraj.Topology.from_openmm(topology).select(selection)
        except Exception as exc:
            raise SelectionError(f"cannot parse QM selection {selection!r}: {exc}") from exc
        if len(indices) == 0:
            raise SelectionError(f"QM selection {selection!r} matches no atom")
        return tuple(int(i) for i in indices)
    indices = np.asarray(list(selection))
    if indices.size == 0:
        raise SelectionError("the QM selection is empty")
    if not np.issubdtype(indices.dtype, np.integer):
        raise SelectionError(f"QM atom indices must be integers, got {indices.dtype}")
    bad = indices[(indices < 0) | (indices >= n_atoms)]
    if bad.size:
        raise SelectionError(f"QM atom indices {bad.tolist()} are outside the topology (0..{n_atoms - 1})")
    if len(set(indices.tolist())) != len(indices):
        raise SelectionError("QM atom indices contain duplicates")
    return tuple(sorted(int(i) for i in indices))


def element_symbols(topology: app.Topology, qm_atoms: Sequence[int]) -> tuple[str, ...]:
    """Element symbols of the QM atoms; an atom without an element is an error."""
    atoms = list(topology.atoms())
    symbols = []
    for i in qm_atoms:
        if atoms[i].element is None:
            raise SelectionError(f"QM atom {describe_atom(atoms[i])} has no element (virtual site or extra particle)")
        symbols.append(atoms[i].element.symbol)
    return tuple(symbols)
