"""The QM region as one validated value: atoms, charge, multiplicity, covalent boundary.

:meth:`QMRegion.select` resolves a selection on a Topology, finds the bonds it cuts (refusing rings,
double, aromatic, peptide and, unless allowed, polar bonds), places one hydrogen link atom per cut and
checks the electron count against the charge and multiplicity, once, before anything is computed.
The QM/MM system (:class:`~bioqmmm.qmmm.system.QMMMSystem`), the protocols and the preparation step
take the region as it is; how the MM boundary charges are handed on (``boundary_charges``) is part
of it, the charges themselves come from the System it is embedded in
(:func:`~bioqmmm.region.boundary.build_boundary`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from openmm import app

from bioqmmm.errors import InputError
from bioqmmm.qm.base import atomic_number, check_electrons
from bioqmmm.region.boundary import SCHEMES, LinkAtom, find_links
from bioqmmm.region.selection import element_symbols, resolve_qm_atoms


@dataclass(frozen=True)
class QMRegion:
    """A validated QM region.

    atoms: Topology indices, sorted. symbols: their elements, then ``"H"`` for each link atom.
    charge (e) and multiplicity: of the QM region with its link atoms. links: one hydrogen cap per cut
    bond. boundary_charges: ``"RCD"``, ``"RC"`` or ``"shift"`` (:mod:`bioqmmm.region.boundary`).
    """

    atoms: tuple[int, ...]
    symbols: tuple[str, ...]
    charge: int
    multiplicity: int
    links: tuple[LinkAtom, ...] = ()
    boundary_charges: str = "RCD"

    def __post_init__(self) -> None:
        if not self.atoms:
            raise InputError("the QM region has no atoms")
        if len(self.symbols) != len(self.atoms) + len(self.links):
            raise InputError("a QM region needs one element symbol per atom and per link atom")
        if self.boundary_charges not in SCHEMES:
            raise InputError(f"unknown boundary charge scheme {self.boundary_charges!r}; choose one of "
                             f"{', '.join(SCHEMES)}")
        check_electrons(self.symbols, self.charge, self.multiplicity)

    @classmethod
    def select(cls, topology: app.Topology, selection: str | Sequence[int], *, charge: int, multiplicity: int,
               boundary_charges: str = "RCD", allow_polar_cut: bool = False,
               link_ratios: Mapping[tuple[str, str], float] | None = None) -> QMRegion:
        """The region ``selection`` (an mdtraj selection string or Topology indices) of ``topology``,
        its cuts checked and capped; ``charge`` (e) and ``multiplicity`` include the link atoms."""
        if isinstance(charge, bool) or int(charge) != charge:
            raise InputError(f"the QM charge must be an integer number of e, got {charge!r}")
        if isinstance(multiplicity, bool) or int(multiplicity) != multiplicity or multiplicity < 1:
            raise InputError(f"multiplicity must be a positive integer, got {multiplicity}")
        atoms = resolve_qm_atoms(topology, selection)
        links = find_links(topology, atoms, allow_polar_cut=allow_polar_cut, link_ratios=link_ratios)
        symbols = element_symbols(topology, atoms) + ("H",) * len(links)
        return cls(atoms, symbols, int(charge), int(multiplicity), links, boundary_charges)

    @staticmethod
    def atoms_of(region: QMRegion | Sequence[int]) -> list[int]:
        """The Topology indices of a region, or of a plain list of QM atoms."""
        return list(region.atoms) if isinstance(region, QMRegion) else [int(i) for i in region]

    @property
    def n_electrons(self) -> int:
        """Electrons of the QM region with its link atoms."""
        return sum(atomic_number(s) for s in self.symbols) - self.charge
