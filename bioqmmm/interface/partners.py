"""The two binding partners of a complex, named by chain ids (``"H,L:C"``: antibody H and L, antigen C)."""

from __future__ import annotations

from dataclasses import dataclass

from openmm import app

from bioqmmm.errors import InputError

#: Residue names that are solvent or ions, never a partner's own chain content.
WATER = frozenset({"HOH", "WAT", "TIP3", "SOL", "H2O"})
IONS = frozenset({"NA", "CL", "K", "MG", "CA", "ZN", "Na+", "Cl-", "K+", "SO4", "PO4"})


@dataclass(frozen=True)
class Partners:
    """Chain ids of partner A and partner B; ``label(k)`` is the partner's name (its chain ids, comma-joined)."""

    a: tuple[str, ...]
    b: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.a or not self.b:
            raise InputError("each partner needs at least one chain id")
        shared = set(self.a) & set(self.b)
        if shared:
            raise InputError(f"chain(s) {', '.join(sorted(shared))} are in both partners")

    @classmethod
    def parse(cls, spec: str) -> Partners:
        """``"H,L:C"`` → partner A = chains H and L, partner B = chain C."""
        sides = str(spec).split(":")
        if len(sides) != 2:
            raise InputError(f"partners {spec!r}: write the two partners' chain ids as 'H,L:C'")
        a, b = (tuple(c.strip() for c in side.split(",") if c.strip()) for side in sides)
        return cls(a, b)

    def label(self, k: int) -> str:
        return ",".join((self.a, self.b)[k])

    def side_of(self, chain_id: str) -> int | None:
        """0 for partner A's chains, 1 for B's, None for any other chain."""
        return 0 if chain_id in self.a else 1 if chain_id in self.b else None

    def __str__(self) -> str:
        return f"{self.label(0)}:{self.label(1)}"


def polymer_chains(topology: app.Topology) -> list[str]:
    """Ids of the chains that hold anything but water and ions, in file order, each once."""
    ids: list[str] = []
    for chain in topology.chains():
        if any(r.name not in WATER and r.name not in IONS for r in chain.residues()) and chain.id not in ids:
            ids.append(chain.id)
    return ids


def find_partners(topology: app.Topology, spec: str | Partners | None = None) -> Partners:
    """The partners of ``topology``: ``spec`` checked against its chains, or detected.

    Detection: chains named H and L (an antibody's heavy and light chains) against every other chain;
    otherwise exactly two chains, one against the other. Anything else needs ``spec``.
    """
    chains = polymer_chains(topology)
    if spec is None:
        if {"H", "L"} <= set(chains) and len(chains) > 2:
            spec = Partners(("H", "L"), tuple(c for c in chains if c not in ("H", "L")))
        elif len(chains) == 2:
            spec = Partners((chains[0],), (chains[1],))
        else:
            raise InputError(f"cannot tell the two partners apart among chains {', '.join(chains)}: "
                             "give them, e.g. partners 'H,L:C'")
    partners = spec if isinstance(spec, Partners) else Partners.parse(spec)
    missing = [c for c in partners.a + partners.b if c not in chains]
    if missing:
        raise InputError(f"chain(s) {', '.join(missing)} of partners {partners} are not in the structure "
                         f"(its chains: {', '.join(chains)})")
    left = [c for c in chains if partners.side_of(c) is None]
    if left:
        raise InputError(f"chain(s) {', '.join(left)} belong to neither partner of {partners}: add each to a "
                         "partner")
    return partners
