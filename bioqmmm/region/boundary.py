"""Covalent QM/MM boundaries: cut bonds, hydrogen link atoms and boundary charges.

**Link atoms.** Each QM–MM bond Q1–M1 of the Topology is capped by a hydrogen at a fixed
fraction of the bond,

    r_L = r_Q1 + g (r_M1 − r_Q1),   g = d(Q1–H) / d(Q1–M1)

with standard bond lengths (:data:`XH_BOND_LENGTHS`, :data:`SINGLE_BOND_LENGTHS`). The link atom
is not a particle: its force goes to the hosts by the chain rule, F_Q1 += (1 − g) F_L and
F_M1 += g F_L.

**Boundary charges.** The charge of M1 would sit next to the link atom and over-polarise the QM
density; it is removed from the QM Hamiltonian and redistributed over the n bonds M1–M2
(q0 = q_M1 / n):

* ``"RCD"`` (default): 2 q0 at each M1–M2 midpoint and q_M2 − q0 on M2, which also keeps the
  M1–M2 bond dipoles (Lin & Truhlar, J. Phys. Chem. A 2005, 109, 3991);
* ``"RC"``: q0 at each M1–M2 midpoint (same reference);
* ``"shift"``: q_M2 + q0, plus a pair ±q0/(2ε) at r_M2 ± ε (r_M1 − r_M2), ε = 0.1, that restores
  the M1–M2 bond dipole (charge shift; Sherwood et al., J. Mol. Struct. THEOCHEM 2003, 632, 1).

Balanced charges (Wang & Truhlar, J. Chem. Theory Comput. 2010, 6, 359): the defect
δ = Σ_QM q_MM − Q_QM between the MM charges of the QM atoms and the declared QM charge is first
added to the M1 charges, so Q_QM + Σ(embedding charges) equals the total charge of the reference
System exactly (checked here, to 1e-10 e). Redistributed charges act only in the QM Hamiltonian;
the MM–MM electrostatics keep the force field's charges.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from openmm import app

from bioqmmm.errors import BioQMMMError, InputError, TopologyError
from bioqmmm.region.bonds import AMIDE, AROMATIC, SINGLE, UNKNOWN, bond_kind, is_polar, neighbour_map, ring_through
from bioqmmm.region.selection import describe_atom
from bioqmmm.units import minimum_image

logger = logging.getLogger(__name__)

SCHEMES = ("RCD", "RC", "shift")

#: Offset of the charge-shift dipole pair along M2 -> M1, as a fraction of the bond.
SHIFT_DIPOLE_OFFSET = 0.1

#: X-H bond lengths of the link atom, nm (Allen et al., J. Chem. Soc. Perkin Trans. 2 1987, S1).
XH_BOND_LENGTHS = {"C": 0.1090, "N": 0.1010, "O": 0.0960, "S": 0.1340, "P": 0.1420}

#: Single-bond lengths Q1-M1, nm, same source (sp3 values).
SINGLE_BOND_LENGTHS = {
    frozenset(("C",)): 0.1530,
    frozenset(("C", "N")): 0.1470,
    frozenset(("C", "O")): 0.1430,
    frozenset(("C", "S")): 0.1820,
    frozenset(("C", "P")): 0.1840,
    frozenset(("N",)): 0.1450,
    frozenset(("O", "P")): 0.1600,
    frozenset(("S",)): 0.2040,
}

#: Total-charge conservation tolerance, e.
CHARGE_TOLERANCE = 1e-10


@dataclass(frozen=True)
class LinkAtom:
    """A hydrogen cap on the cut bond ``qm_host``–``mm_host`` (Topology indices) at fraction ``ratio``."""

    qm_host: int
    mm_host: int
    ratio: float


@dataclass(frozen=True, eq=False)
class SiteMap:
    """Points defined on particles (local indices).

    The first ``len(atoms)`` points are the particles ``atoms`` themselves; point k after them is
    x_anchor + w (x_other − x_anchor), the difference taken by minimum image when a box is given.
    """

    atoms: np.ndarray
    anchor: np.ndarray
    other: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.atoms) + len(self.anchor)

    def positions(self, x: np.ndarray, box: np.ndarray | None = None) -> np.ndarray:
        """(n_points, 3) positions from particle positions ``x`` (nm)."""
        d = x[self.other] - x[self.anchor]
        if box is not None:
            d = minimum_image(d, box)
        return np.concatenate([x[self.atoms], x[self.anchor] + self.weight[:, None] * d])

    def spread(self, forces: np.ndarray, n_particles: int) -> np.ndarray:
        """Forces on the points mapped onto the particles (chain rule; the map is linear)."""
        out = np.zeros((n_particles, 3))
        k = len(self.atoms)
        out[self.atoms] += forces[:k]
        np.add.at(out, self.anchor, (1.0 - self.weight)[:, None] * forces[k:])
        np.add.at(out, self.other, self.weight[:, None] * forces[k:])
        return out


@dataclass(frozen=True, eq=False)
class Boundary:
    """How the QM force maps its particles to QM atoms + link atoms and to embedding charges.

    particles: Topology indices of the force's particles (QM atoms first, then MM atoms);
    qm_sites: QM atoms then link atoms; charge_sites with site_charges (e): the MM charges the
    QM region sees; charge_defect: δ = Σ_QM q_MM − Q_QM (e), put on the M1 atoms when there are cuts.
    """

    particles: tuple[int, ...]
    links: tuple[LinkAtom, ...]
    qm_sites: SiteMap
    charge_sites: SiteMap
    site_charges: np.ndarray
    charge_defect: float
    scheme: str


Cut = tuple[app.topology.Atom, app.topology.Atom, app.topology.Bond]


def cut_bonds(topology: app.Topology, qm_atoms: Sequence[int]) -> list[Cut]:
    """(QM atom, MM atom, bond) of every Topology bond that the QM region cuts, sorted by atom index."""
    qm = set(qm_atoms)
    cuts = []
    for bond in topology.bonds():
        a, b = bond[0], bond[1]
        if (a.index in qm) != (b.index in qm):
            cuts.append((a, b, bond) if a.index in qm else (b, a, bond))
    return sorted(cuts, key=lambda cut: (cut[0].index, cut[1].index))


def _symbol(atom: app.topology.Atom) -> str:
    if atom.element is None:
        raise TopologyError(f"atom {describe_atom(atom)} at the QM/MM boundary has no element")
    return atom.element.symbol


_BETTER_CUT = "cut a C–C single bond instead: Cα–Cβ for a side chain, Cα–C for a backbone segment"


def check_cut(cut: Cut, atoms: list[app.topology.Atom], neighbours: dict[int, set[int]], allow_polar_cut: bool) -> None:
    """Refuse cutting a bond to H, a ring, a double/aromatic/amide bond or (unless allowed) a polar bond."""
    inside, outside, bond = cut
    label = f"{describe_atom(inside)} – {describe_atom(outside)}"
    a, b = _symbol(inside), _symbol(outside)
    if "H" in (a, b):
        raise TopologyError(f"the QM region cuts the bond to hydrogen {label}: take each hydrogen with its heavy atom")
    ring = ring_through(neighbours, inside.index, outside.index)
    kind = bond_kind(bond, neighbours, atoms)
    if ring is not None:
        names = "-".join(atoms[i].name for i in ring)
        aromatic = "aromatic " if kind == AROMATIC else ""
        raise TopologyError(
            f"the QM region cuts the {aromatic}ring {names} of {inside.residue.name}{inside.residue.id} at {label}: "
            "take the whole ring into the QM region or leave all of it out"
        )
    if kind == AMIDE and inside.residue is not outside.residue:
        raise TopologyError(
            f"the QM region cuts the peptide bond {label} (partial double bond): cut the backbone at Cα–C instead "
            "(bioqmmm.region.protein.residues does this)"
        )
    if kind == UNKNOWN:
        raise TopologyError(
            f"the order of the cut bond {label} is unknown ({inside.residue.name} and {outside.residue.name} are not "
            "standard residues and the Topology carries no bond type): move the cut to a bond next to a saturated "
            "atom, or set the bond type in the Topology"
        )
    if kind != SINGLE:
        raise TopologyError(f"the QM region cuts the {kind} bond {label}: {_BETTER_CUT}")
    if is_polar(a, b) and not allow_polar_cut:
        raise TopologyError(
            f"the QM region cuts the polar bond {label} ({a}–{b}): {_BETTER_CUT}, or pass allow_polar_cut=True"
        )


def link_ratio(qm_symbol: str, mm_symbol: str, overrides: Mapping[tuple[str, str], float] | None = None) -> float:
    """g = d(Q1–H)/d(Q1–M1) for a cut bond between elements ``qm_symbol`` (QM) and ``mm_symbol`` (MM)."""
    if overrides and (qm_symbol, mm_symbol) in overrides:
        ratio = float(overrides[(qm_symbol, mm_symbol)])
    else:
        xh = XH_BOND_LENGTHS.get(qm_symbol)
        xy = SINGLE_BOND_LENGTHS.get(frozenset((qm_symbol, mm_symbol)))
        if xh is None or xy is None:
            raise TopologyError(
                f"no standard link-atom ratio for a cut {qm_symbol}(QM)–{mm_symbol}(MM) bond; "
                f"give one with link_ratios={{('{qm_symbol}', '{mm_symbol}'): g}}"
            )
        ratio = xh / xy
    if not 0.0 < ratio < 1.0:
        raise InputError(f"link-atom ratio for {qm_symbol}–{mm_symbol} must lie in (0, 1), got {ratio}")
    return ratio


def find_links(topology: app.Topology, qm_atoms: Sequence[int], *, allow_polar_cut: bool = False,
               link_ratios: Mapping[tuple[str, str], float] | None = None) -> tuple[LinkAtom, ...]:
    """One hydrogen link atom per bond the QM region cuts, each cut checked (:func:`check_cut`)."""
    atoms = list(topology.atoms())
    neighbours = neighbour_map(topology)
    links = []
    for cut in cut_bonds(topology, qm_atoms):
        check_cut(cut, atoms, neighbours, allow_polar_cut)
        inside, outside, _ = cut
        links.append(LinkAtom(inside.index, outside.index, link_ratio(_symbol(inside), _symbol(outside), link_ratios)))
    return tuple(links)


def build_boundary(
    topology: app.Topology,
    qm_atoms: Sequence[int],
    charges: np.ndarray,
    qm_charge: int,
    *,
    scheme: str = "RCD",
    allow_polar_cut: bool = False,
    link_ratios: Mapping[tuple[str, str], float] | None = None,
    links: Sequence[LinkAtom] | None = None,
) -> Boundary:
    """Find and check the cut bonds, place link atoms (unless ``links`` gives them, as a
    :class:`~bioqmmm.region.region.QMRegion` does) and build the embedding charges.

    ``charges``: MM charges of every particle (e); ``qm_charge``: declared QM charge (e).
    """
    if scheme not in SCHEMES:
        raise InputError(f"unknown boundary charge scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    atoms = list(topology.atoms())
    qm = set(qm_atoms)
    neighbours = neighbour_map(topology)
    if links is None:
        links = find_links(topology, qm_atoms, allow_polar_cut=allow_polar_cut, link_ratios=link_ratios)

    q = np.array(charges, dtype=float)
    defect = float(q[list(qm_atoms)].sum() - qm_charge)
    m1_hosts = sorted({link.mm_host for link in links})
    if m1_hosts or np.any(q[list(qm_atoms)]):
        _report_defect(defect, qm_charge, [atoms[i] for i in m1_hosts])
    else:  # e.g. a QM-only residue of the preparation: no MM charges to check the declared charge against
        logger.info("the QM atoms carry no MM charges: the declared QM charge %d is not checked against them",
                    qm_charge)
    extra: list[tuple[int, int, float, float]] = []  # anchor, other, weight, charge
    for hosts, share in _defect_shares(topology, qm_atoms, links, q, qm_charge, defect):
        q[hosts] += share / len(hosts)
    for m1 in m1_hosts:
        m2_atoms = sorted(neighbours[m1] - qm)
        if not m2_atoms:
            raise TopologyError(
                f"boundary atom {describe_atom(atoms[m1])} has no MM neighbour to take its charge: "
                "put it in the QM region"
            )
        clash = set(m2_atoms) & set(m1_hosts)
        if clash:
            raise TopologyError(
                f"boundary atoms {describe_atom(atoms[m1])} and {describe_atom(atoms[min(clash)])} are bonded to "
                "each other: move one of the cuts"
            )
        q0 = q[m1] / len(m2_atoms)
        q[m1] = 0.0
        for m2 in m2_atoms:
            if scheme == "RC":
                extra.append((m1, m2, 0.5, q0))
            elif scheme == "RCD":
                extra.append((m1, m2, 0.5, 2.0 * q0))
                q[m2] -= q0
            else:
                q[m2] += q0
                pair = q0 / (2.0 * SHIFT_DIPOLE_OFFSET)
                extra += [(m2, m1, SHIFT_DIPOLE_OFFSET, pair), (m2, m1, -SHIFT_DIPOLE_OFFSET, -pair)]

    charged = [i for i in np.flatnonzero(q).tolist() if i not in qm]
    environment = sorted(set(charged) | set(m1_hosts) | {i for e in extra for i in e[:2]})
    particles = tuple(qm_atoms) + tuple(environment)
    local = {atom: k for k, atom in enumerate(particles)}
    qm_sites = SiteMap(
        np.arange(len(qm_atoms)),
        np.array([local[link.qm_host] for link in links], dtype=int),
        np.array([local[link.mm_host] for link in links], dtype=int),
        np.array([link.ratio for link in links], dtype=float),
    )
    charge_sites = SiteMap(
        np.array([local[i] for i in charged], dtype=int),
        np.array([local[e[0]] for e in extra], dtype=int),
        np.array([local[e[1]] for e in extra], dtype=int),
        np.array([e[2] for e in extra], dtype=float),
    )
    site_charges = np.concatenate([q[charged], np.array([e[3] for e in extra], dtype=float)])
    if links:
        total = float(np.sum(charges))
        error = qm_charge + float(site_charges.sum()) - total
        if abs(error) > CHARGE_TOLERANCE:
            raise BioQMMMError(f"boundary charges do not conserve the total charge {total:.6f} e (error {error:.2e} e)")
    return Boundary(particles, tuple(links), qm_sites, charge_sites, site_charges, defect, scheme)


def _defect_shares(topology: app.Topology, qm_atoms: Sequence[int], links: Sequence[LinkAtom], q: np.ndarray,
                   qm_charge: int, defect: float) -> list[tuple[list[int], float]]:
    """(MM hosts, charge) pairs that together take the defect: each covalently connected piece of the QM
    region its own (its MM charge sum minus the nearest integer) when those integers add up to the
    declared charge, so that far-apart pieces (two side chains across an interface) do not exchange
    boundary charge; otherwise the whole defect spread over every host."""
    hosts = sorted({link.mm_host for link in links})
    if not hosts:
        return []
    qm = set(qm_atoms)
    neighbours = neighbour_map(topology)
    piece_of: dict[int, int] = {}
    for start in sorted(qm):
        if start in piece_of:
            continue
        stack, piece_of[start] = [start], start
        while stack:
            for nxt in neighbours[stack.pop()] & qm:
                if nxt not in piece_of:
                    piece_of[nxt] = start
                    stack.append(nxt)
    pieces: dict[int, list[int]] = {}
    for atom, piece in piece_of.items():
        pieces.setdefault(piece, []).append(atom)
    shares, integers = [], 0
    for atoms in pieces.values():
        total = float(q[atoms].sum())
        integers += round(total)
        own = sorted({link.mm_host for link in links if piece_of[link.qm_host] == piece_of[atoms[0]]})
        if own:
            shares.append((own, total - round(total)))
        elif abs(total - round(total)) > CHARGE_TOLERANCE:
            return [(hosts, defect)]
    return shares if integers == qm_charge else [(hosts, defect)]


def _report_defect(defect: float, qm_charge: int, m1_atoms: list[app.topology.Atom]) -> None:
    """Warn when the declared charge and the removed MM charges differ by more than 0.01 e.

    With cuts a fractional difference is expected (force-field charge groups rarely end at the
    cut) and is balanced on the M1 atoms; a declared charge that is not the integer nearest to
    the removed charge is most likely a mistake and is flagged as such.
    """
    if abs(defect) <= 0.01:
        return
    removed = qm_charge + defect
    nearest = round(removed)
    if nearest != qm_charge:
        verdict = f"the nearest integer is {nearest}: check the declared charge"
    elif m1_atoms:
        verdict = "expected for a cut through a residue"
    else:
        verdict = "the force-field charges of the QM atoms are not integral"
    where = (
        "; the difference is added to the boundary atom(s) " + ", ".join(describe_atom(a) for a in m1_atoms)
        + " before redistribution, so the total charge is conserved"
        if m1_atoms
        else "; the total charge of the QM/MM model differs from the reference System's by this amount"
    )
    logger.warning(
        "declared QM charge %d vs %.4f e of MM charges removed with the QM atoms (difference %+.4f e; %s)%s",
        qm_charge, removed, defect, verdict, where,
    )
