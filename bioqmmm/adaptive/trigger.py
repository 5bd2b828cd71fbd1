"""Growing the QM region where the chemistry goes: bond stress and condensed Fukui indices.

Each candidate C (a set of atoms next to the QM region R: a side chain, a backbone fragment, a substrate)
gets the score

    S_C = a · σ_C + b · f_C

* **bond stress** σ_C: over the bonds at the R–C interface (both atoms in R ∪ C, one of them an interface
  atom: an atom of R bonded to C or of C bonded to R — the cut bond and its neighbours), the largest
  force-field bond force relative to its thermal scale, |k (r − r₀)| / √(k k_BT) = |r − r₀| √(k / k_BT),
  with k and r₀ of the reference force field's harmonic bond (the same for a QM bond: its MM terms are
  what the force field would pull with). ~1 at equilibrium, large for a bond pulled apart.
* **condensed Fukui index** f_C: from N+1- and N−1-electron single points of R in the same embedding,
  f⁺_A = q_A(N) − q_A(N+1) and f⁻_A = q_A(N−1) − q_A(N) (atomic charges, link atoms added to their hosts;
  Yang & Mortier, J. Am. Chem. Soc. 1986, 108, 5708), f_C = the largest max(f⁺_A, f⁻_A) over the
  interface atoms A of R (for a candidate bonded to nothing in R: the QM atoms within 0.4 nm of it).

A candidate joins the region when S_C exceeds ``threshold`` and leaves it (if it was added) after
``patience`` checks in a row below ``threshold − hysteresis``. Each grown region is validated by the
boundary rules (:meth:`~bioqmmm.region.region.QMRegion.select`: no ring, double, aromatic or peptide
cuts); candidates whose union with the region would break them are refused when the trigger is made.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import openmm
from openmm import app

from bioqmmm.errors import InputError
from bioqmmm.qm.base import QMEngine
from bioqmmm.qmmm.surgery import mm_charges
from bioqmmm.region.region import QMRegion
from bioqmmm.region.selection import resolve_qm_atoms
from bioqmmm.units import kt_kjmol

#: Candidates not bonded to the region take the Fukui indices of QM atoms this close to them (nm).
NONBONDED_INTERFACE_NM = 0.4


@dataclass(frozen=True)
class Candidate:
    """A group that may join the QM region: ``name`` (its selection), Topology ``atoms``, QM ``charge`` (e)."""

    name: str
    atoms: tuple[int, ...]
    charge: int


@dataclass(frozen=True)
class Score:
    """S = a σ + b f of one candidate at one check, with its parts."""

    candidate: str
    stress: float
    fukui: float
    score: float


@dataclass(frozen=True)
class TriggerRule:
    """Weights ``a`` (stress) and ``b`` (Fukui), the growth ``threshold``, the ``hysteresis`` below it that
    shrinks, and ``patience`` (checks in a row below it before a candidate leaves).

    The defaults keep a quiet region quiet: thermal bond stress is a |z| score (rarely above 3 over a few
    bonds) and the Fukui index of a small region's edge atom reaches ~0.6 (5 × 0.6 = 3), so S stays below 8
    until a bond is pulled ~5 thermal widths (~10 % for a C–C bond) or the edge turns reactive."""

    stress_weight: float = 1.0
    fukui_weight: float = 5.0
    threshold: float = 8.0
    hysteresis: float = 2.0
    patience: int = 3


def _bond_table(system: openmm.System) -> dict[frozenset[int], tuple[float, float]]:
    """(r₀ nm, k kJ/mol/nm²) of every harmonic bond of the reference force field."""
    table = {}
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for index in range(force.getNumBonds()):
                i, j, r0, k = force.getBondParameters(index)
                table[frozenset((i, j))] = (r0.value_in_unit(openmm.unit.nanometer),
                                            k.value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer**2))
    return table


class RegionTrigger:
    """Scores of the candidates around a QM region and the region's next state.

    topology, system: the reference model. candidates: :class:`Candidate` s (made with :meth:`candidates`).
    base: the region without any candidate. rule: :class:`TriggerRule`. temperature_k: of the stress scale.
    engine: a QM engine of the region's level for the N ± 1 single points (one not used by the dynamics).
    allow_polar_cut: whether grown regions may cut polar single bonds (as the ``qm`` block allows).
    """

    def __init__(self, topology: app.Topology, system: openmm.System, base: QMRegion,
                 candidates: Sequence[Candidate], rule: TriggerRule, temperature_k: float, engine: QMEngine,
                 allow_polar_cut: bool = False) -> None:
        self.topology, self.system, self.base = topology, system, base
        self.allow_polar_cut = allow_polar_cut
        self.candidates = tuple(candidates)
        self.rule, self.kt, self.engine = rule, kt_kjmol(temperature_k), engine
        self._bonds = _bond_table(system)
        self._neighbours: dict[int, set[int]] = {}
        for bond in topology.bonds():
            a, b = bond[0].index, bond[1].index
            self._neighbours.setdefault(a, set()).add(b)
            self._neighbours.setdefault(b, set()).add(a)
        self._charges = mm_charges(system)
        self.below = {c.name: 0 for c in self.candidates}
        self.region(frozenset(c.name for c in self.candidates))  # every candidate at once passes the cut rules

    @staticmethod
    def candidates(topology: app.Topology, system: openmm.System, base: QMRegion,
                   selections: Sequence[str]) -> list[Candidate]:
        """One candidate per selection (its atoms outside ``base``), charge = its rounded MM charge."""
        charges = mm_charges(system)
        made = []
        for selection in selections:
            atoms = tuple(i for i in resolve_qm_atoms(topology, selection) if i not in set(base.atoms))
            if not atoms:
                raise InputError(f"trigger candidate {selection!r} has no atom outside the QM region")
            made.append(Candidate(selection, atoms, int(round(float(charges[list(atoms)].sum())))))
        return made

    def region(self, added: frozenset[str]) -> QMRegion:
        """The validated QM region of the base plus the candidates named in ``added``."""
        chosen = [c for c in self.candidates if c.name in added]
        atoms = sorted(set(self.base.atoms).union(*(c.atoms for c in chosen)))
        base = self.base
        try:
            return QMRegion.select(self.topology, atoms, charge=base.charge + sum(c.charge for c in chosen),
                                   multiplicity=base.multiplicity, boundary_charges=base.boundary_charges,
                                   allow_polar_cut=self.allow_polar_cut)
        except InputError as exc:
            names = ", ".join(sorted(added)) or "none"
            raise InputError(f"trigger candidates ({names}) make a QM region the boundary rules refuse: {exc}") \
                from exc

    def _interface(self, region_atoms: set[int], candidate: Candidate, positions: np.ndarray) -> tuple[set, set]:
        inside = {a for a in region_atoms if self._neighbours.get(a, set()) & set(candidate.atoms)}
        outside = {c for c in candidate.atoms if self._neighbours.get(c, set()) & region_atoms}
        if not inside:
            d = np.linalg.norm(positions[sorted(region_atoms)][:, None] - positions[list(candidate.atoms)][None],
                               axis=-1)
            inside = {a for a, near in zip(sorted(region_atoms), d.min(axis=1) < NONBONDED_INTERFACE_NM,
                                           strict=True) if near}
        return inside, outside

    def stress(self, region_atoms: set[int], candidate: Candidate, positions: np.ndarray) -> float:
        """σ_C: the largest |r − r₀| √(k / k_BT) over the interface bonds (0 if there are none)."""
        inside, outside = self._interface(region_atoms, candidate, positions)
        interface = inside | outside
        pool = region_atoms | set(candidate.atoms)
        worst = 0.0
        for a in interface:
            for b in self._neighbours.get(a, set()) & pool:
                parameters = self._bonds.get(frozenset((a, b)))
                if parameters is None or parameters[1] == 0.0:
                    continue
                r0, k = parameters
                r = float(np.linalg.norm(positions[a] - positions[b]))
                worst = max(worst, abs(r - r0) * np.sqrt(k / self.kt))
        return worst

    def fukui(self, qmmm, positions: np.ndarray, box: np.ndarray | None) -> dict[int, float]:
        """max(f⁺, f⁻) of every QM atom of ``qmmm`` (link atoms added to their hosts) at ``positions`` (nm)."""
        region = qmmm.region
        sites = qmmm.kernel.boundary
        qm_pos = sites.qm_sites.positions(positions, box)
        mm_pos = sites.charge_sites.positions(positions, box)
        charges = []
        ion = region.multiplicity + 1 if region.multiplicity == 1 else region.multiplicity - 1  # one electron more/less
        for extra, multiplicity in ((0, region.multiplicity), (1, ion), (-1, ion)):  # electrons added
            variant = dataclasses.replace(region, charge=region.charge - extra, multiplicity=multiplicity)
            result = qmmm.embedding.evaluate(self.engine, variant, qm_pos, mm_pos, sites.site_charges, box)
            q = np.array(result.qm.atomic_charges, dtype=float)
            on_atoms = q[: len(region.atoms)].copy()
            index = {atom: k for k, atom in enumerate(region.atoms)}
            for link, value in zip(region.links, q[len(region.atoms):], strict=True):
                on_atoms[index[link.qm_host]] += value
            charges.append(on_atoms)
        neutral, plus, minus = charges
        f = np.maximum(neutral - plus, minus - neutral)
        return dict(zip(region.atoms, f.tolist(), strict=True))

    def scores(self, qmmm, positions: np.ndarray, box: np.ndarray | None = None) -> list[Score]:
        """S of every candidate not yet in ``qmmm``'s region, and of those in it (their interface with the rest)."""
        region_atoms = set(qmmm.region.atoms)
        fukui = self.fukui(qmmm, positions, box)
        out = []
        for candidate in self.candidates:
            rest = region_atoms - set(candidate.atoms)
            inside, _ = self._interface(rest, candidate, positions)
            f = max((fukui[a] for a in inside if a in fukui), default=0.0)
            sigma = self.stress(rest, candidate, positions)
            out.append(Score(candidate.name, sigma, f, self.rule.stress_weight * sigma + self.rule.fukui_weight * f))
        return out

    def decide(self, added: frozenset[str], scores: Sequence[Score]) -> frozenset[str]:
        """The candidates in the region after this check: grown above the threshold, shrunk after
        ``patience`` checks below threshold − hysteresis (hysteresis keeps a region from flickering)."""
        new = set(added)
        for score in scores:
            if score.candidate not in added:
                if score.score > self.rule.threshold:
                    new.add(score.candidate)
                continue
            if score.score < self.rule.threshold - self.rule.hysteresis:
                self.below[score.candidate] += 1
                if self.below[score.candidate] >= self.rule.patience:
                    new.discard(score.candidate)
                    self.below[score.candidate] = 0
            else:
                self.below[score.candidate] = 0
        return frozenset(new)
