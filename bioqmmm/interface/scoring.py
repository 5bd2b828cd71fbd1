"""Binding scores of a structure: MM-GBSA and its QM/MM-corrected form, for the wild type and mutants.

The QM/MM correction replaces the MM description of the QM region's interactions by QM/MM (electrostatic
embedding, link atoms) in each of the three vacuum models (complex, partner A, partner B, all at the
complex geometry): δ_X = E_QM/MM(X) − E_MM(X), and ΔE_QM/MM − ΔE_MM = δ_AB − δ_A − δ_B; every MM term
outside the QM region cancels within each model. The QM/MM-corrected score is
ΔG_QM/MM = ΔG_MM-GBSA + δ_AB − δ_A − δ_B (the desolvation stays the MM-GBSA one), and an alanine
mutant's ΔΔG = ΔG(mutant) − ΔG(wild type) at either level.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bioqmmm.errors import CalculationError
from bioqmmm.interface.counterpoise import counterpoise as cp_energy
from bioqmmm.interface.energies import BindingMM, mm_binding, nonbonded_parameters
from bioqmmm.interface.hotspots import AtomKey, map_region, region_charge
from bioqmmm.interface.model import Structure, potential_energy
from bioqmmm.preparation.forcefields import ForceFieldSetup
from bioqmmm.qm.factory import Level, create_engine
from bioqmmm.qmmm.system import QMMMSystem
from bioqmmm.region.region import QMRegion

NAMES = {2: "complex", 0: "partner_a", 1: "partner_b"}


@dataclass
class Score:
    """Binding terms of one structure (kJ/mol); ``qm`` holds δ of each model when a QM region is scored."""

    mm: BindingMM
    per_atom: np.ndarray
    qm: dict[str, float] = field(default_factory=dict)
    qm_charges: dict[str, int] = field(default_factory=dict)
    #: QM (Mulliken) charge of partner A's part of the region in the complex minus its integer charge (e):
    #: electrons moved to partner B's part (near 0 for partners far apart, unless the method's
    #: delocalisation error spreads them, as GFN2-xTB does between distant ions).
    charge_transfer: float | None = None
    #: Boys–Bernardi estimate of the QM part's basis-set superposition error (kJ/mol), when asked for
    counterpoise: float | None = None
    counterpoise_error: str | None = None

    @property
    def correction(self) -> float | None:
        if not self.qm:
            return None
        return self.qm["complex"] - self.qm["partner_a"] - self.qm["partner_b"] + (self.counterpoise or 0.0)

    @property
    def qmmm(self) -> float | None:
        return None if self.correction is None else self.mm.score + self.correction

    def record(self) -> dict[str, float | None]:
        return {**self.mm.record(), "qm_correction": self.correction, "qmmm": self.qmmm,
                "charge_transfer": self.charge_transfer, "counterpoise": self.counterpoise,
                **({"counterpoise_error": self.counterpoise_error} if self.counterpoise_error else {})}


def score(structure: Structure, setup: ForceFieldSetup, region: frozenset[AtomKey] | None, level: Level | None,
          threads: int | None = None, counterpoise: bool = False, relax_shell: float | None = None) -> Score:
    """MM-GBSA terms of ``structure`` and, with a QM ``region`` (atom keys) and ``level``, the QM/MM correction
    (with the counterpoise estimate of its basis-set superposition error when ``counterpoise``); with
    ``relax_shell`` (nm) the separated partners relax (:func:`~bioqmmm.interface.energies.mm_binding`)."""
    mm, per_atom, models = mm_binding(structure, setup, threads, relax_shell)
    result = Score(mm, per_atom)
    complex_model = None
    if region is None or level is None:
        return result
    for key, (system, part) in models.items():
        atoms = map_region(region, part.topology)
        name = NAMES[key]
        if not atoms:
            result.qm[name], result.qm_charges[name] = 0.0, 0
            continue
        charges = nonbonded_parameters(system, part.side)[0]
        charge = region_charge(atoms, charges, f"the QM region of the {name.replace('_', ' ')}", part.topology)
        qm_region = QMRegion.select(part.topology, atoms, charge=charge, multiplicity=1)
        qmmm = QMMMSystem(part.topology, system, qm_region, engine=create_engine(level, threads))
        energy = qmmm.energy(part.positions)
        result.qm[name] = energy - potential_energy(system, part.positions, threads)
        result.qm_charges[name] = charge
        if key == 2:
            result.charge_transfer = _charge_transfer(qmmm, part, charges)
            complex_model = (qmmm, part)
    if counterpoise and complex_model is not None:
        qmmm, part = complex_model
        boundary = qmmm.boundary
        points = boundary.qm_sites.positions(part.positions[list(boundary.particles)])
        side = np.concatenate([part.side[list(qmmm.qm_atoms)], part.side[[link.qm_host for link in qmmm.links]]])
        try:
            result.counterpoise = cp_energy(list(qmmm.region.symbols), points, side,
                                            (result.qm_charges["partner_a"], result.qm_charges["partner_b"]), level)
        except CalculationError as exc:  # the QM/MM terms stand; the score says it lacks the correction
            result.counterpoise_error = str(exc)
    return result


def _charge_transfer(qmmm: QMMMSystem, part: Structure, charges: np.ndarray) -> float:
    """Partner A's QM charge in the complex (each link atom counted with its host) minus its integer charge."""
    atoms = list(qmmm.qm_atoms)
    qm_charges = np.array(qmmm.last_qm.qm.atomic_charges, dtype=float)
    on_atoms = qm_charges[: len(atoms)].copy()
    for k, link in enumerate(qmmm.links):
        on_atoms[atoms.index(link.qm_host)] += qm_charges[len(atoms) + k]
    mine = [k for k, i in enumerate(atoms) if part.side[i] == 0]
    return float(on_atoms[mine].sum() - region_charge([atoms[k] for k in mine], charges, "partner A's QM part",
                                                     part.topology))
