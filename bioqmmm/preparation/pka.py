"""Protonation states from predicted pKa values (PROPKA 3), the fixed rules, and the user's overrides.

PROPKA (Olsson, Søndergaard, Rostkowski & Jensen, J. Chem. Theory Comput. 7, 525 (2011); Søndergaard et
al., J. Chem. Theory Comput. 7, 2284 (2011)) predicts each titratable group's pKa from the heavy-atom
structure. A group is protonated when its pKa exceeds the pH. The states OpenMM's Amber templates
offer: Asp ASP/ASH, Glu GLU/GLH, His HID/HIE/HIP, Lys LYS/LYN, Cys CYS/CYM (CYX in a disulfide). A
neutral His gets its tautomer from the hydrogen-bond network (OpenMM's Modeller). Tyr, Arg and the
termini have one template each here: a prediction against it is reported, not applied.

Without predictions (``protonation="rules"``, or a residue PROPKA does not list) the state follows
OpenMM's fixed model pKa values (:data:`RULE_PKA`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
from openmm import app, unit

from bioqmmm.errors import InputError

#: States that each titratable residue may take, by residue name (Amber names, as OpenMM's Modeller).
STATES = {
    "ASP": ("ASP", "ASH"),
    "GLU": ("GLU", "GLH"),
    "HIS": ("HID", "HIE", "HIP"),
    "LYS": ("LYS", "LYN"),
    "CYS": ("CYS", "CYM", "CYX"),
}
#: (protonated, deprotonated) state of each residue whose state a pKa decides; His's neutral state is None
#: (tautomer left to the hydrogen-bond network).
PAIRS = {"ASP": ("ASH", "ASP"), "GLU": ("GLH", "GLU"), "HIS": ("HIP", None), "LYS": ("LYS", "LYN"),
         "CYS": ("CYS", "CYM")}
#: The pH at or below which OpenMM's Modeller.addHydrogens protonates a residue given no variant (openmm/app/
#: data/hydrogens.xml: the ``maxph`` of HD2, HE2, HZ3, HG; His is neutral only above 6.5, in Modeller.py).
RULE_PKA = {"ASP": 4.4, "GLU": 4.4, "HIS": 6.5, "LYS": 10.0, "CYS": 8.5}
#: PROPKA's value for a group it does not titrate (a disulfide cysteine).
NOT_TITRATED = 99.0
#: |pKa − pH| below which a state is a close call the report asks the user to look at.
CLOSE_CALL = 1.0
#: OpenMM's Modeller makes every His HIP below this pH unless given a variant; with predictions the
#: Modeller runs at least at this pH, every other titratable residue having its variant set.
HIS_NEUTRAL_PH = 7.0


@dataclass(frozen=True)
class Site:
    """A titratable group: residue label (``A:GLU35``), PROPKA group (``GLU``, ``N+``, ``C-``), predicted and
    model pKa, and the state chosen (None where the residue's template decides)."""

    label: str
    group: str
    pka: float
    model_pka: float
    state: str | None = None
    note: str = ""


def predict(topology: app.Topology, positions: np.ndarray, label: Callable[[app.Residue], str]) -> list[Site]:
    """PROPKA 3 pKa values of the titratable groups of a structure's heavy atoms (positions in nm).

    PROPKA sees a copy with hydrogens dropped (it places its own) and with chain letters and residue numbers of
    its own (:func:`_propka_names`), so that insertion codes, long mmCIF chain ids, numbers beyond 9999 and
    repeated chain ids all map back to their residue; ``label(residue)`` names the residues in the result.
    Disulfide cysteines (PROPKA: 99.99) are left out.
    """
    import propka.run

    copy, xyz, residue_of = _propka_names(topology, positions)
    text = io.StringIO()
    app.PDBFile.writeFile(copy, xyz * unit.nanometer, text, keepIds=True)
    logger = logging.getLogger("propka")
    level = logger.level
    logger.setLevel(logging.ERROR)  # PROPKA logs its banner and per-group notes at INFO/WARNING
    try:
        molecule = propka.run.single("structure.pdb", optargs=["--quiet"], stream=io.StringIO(text.getvalue()),
                                     write_pka=False)
    finally:
        logger.setLevel(level)
    sites = []
    for group in molecule.conformations["AVR"].groups:
        residue = residue_of.get((group.atom.chain_id, int(group.atom.res_num)))
        if residue is not None and group.residue_type in TITRATING_GROUPS and group.pka_value < NOT_TITRATED:
            sites.append(Site(label(residue), group.residue_type, float(group.pka_value), float(group.model_pka)))
    return sites


#: PROPKA's groups reported here (residues and termini; ligand groups are PROPKA's own business).
TITRATING_GROUPS = ("ARG", "TYR", "ASP", "GLU", "HIS", "LYS", "CYS", "N+", "C-")
#: Chain letters for PROPKA's copy; each takes up to 9999 residues.
_CHAIN_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _propka_names(topology: app.Topology, positions: np.ndarray):
    """A heavy-atom copy of ``topology`` whose residues are numbered 1..9999 per chain letter, in order, with
    the positions (nm) of its atoms and {(letter, number): original residue}."""
    copy = app.Topology()
    xyz, residue_of = [], {}
    chain, source_chain, count, letters = None, None, 0, iter(_CHAIN_LETTERS)
    for residue in topology.residues():
        heavy = [a for a in residue.atoms() if a.element is not None and a.element != app.element.hydrogen]
        if not heavy:
            continue
        if chain is None or count == 9999 or residue.chain.index != source_chain:
            letter = next(letters, None)
            if letter is None:
                raise InputError("the structure has too many chains and residues for PROPKA's file format; use "
                                 "protonation='rules'")
            chain, source_chain, count = copy.addChain(letter), residue.chain.index, 0
        count += 1
        new = copy.addResidue(residue.name, chain, str(count))
        residue_of[(chain.id, count)] = residue
        for atom in heavy:
            copy.addAtom(atom.name, atom.element, new)
            xyz.append(positions[atom.index])
    return copy, np.array(xyz), residue_of


def rule_state(name: str, ph: float) -> str | None:
    """The state OpenMM's fixed pKa rules give residue ``name`` at ``ph`` (None: His tautomer, or no choice)."""
    if name not in RULE_PKA:
        return None
    protonated, deprotonated = PAIRS[name]
    return protonated if ph <= RULE_PKA[name] else deprotonated


def predicted_state(site: Site, ph: float) -> str | None:
    """The state a predicted pKa gives at ``ph``: protonated when pKa > pH (None: neutral His, no choice)."""
    if site.group not in PAIRS:
        return None
    protonated, deprotonated = PAIRS[site.group]
    return protonated if site.pka > ph else deprotonated


def check_overrides(states: Mapping[str, str], topology: app.Topology, label) -> dict[int, str]:
    """``{"A:GLU35": "GLH", ...}`` as {residue index: state}; InputError for a residue that does not exist or
    a state that does not fit it (a disulfide cysteine is CYX). ``label(residue)`` gives a residue's label."""
    by_label = {label(r): r for r in topology.residues()}
    disulfide = _disulfide_residues(topology)
    chosen = {}
    for name, state in states.items():
        residue = by_label.get(name)
        if residue is None:
            similar = [k for k in by_label if k.split(":")[-1][3:] == name.split(":")[-1][3:]]
            hint = f"; residues with that number: {', '.join(similar)}" if similar else ""
            raise InputError(f"--state {name}={state}: no residue {name} in the structure{hint}")
        allowed = ("CYX",) if residue.index in disulfide else STATES.get(residue.name, ())
        if state.upper() not in allowed:
            fits = f"one of {', '.join(allowed)}" if allowed else "none (its protonation state is fixed)"
            fits += " (it is in a disulfide)" if residue.index in disulfide else ""
            raise InputError(f"--state {name}={state}: {state!r} does not fit {residue.name}; states: {fits}")
        chosen[residue.index] = state.upper()
    return chosen


@dataclass(frozen=True)
class Protonation:
    """How states are chosen: ``method`` "propka" or "rules", at ``ph``, with ``overrides`` ({label: state})
    that win over everything; ``is_qm(residue)``: residues of the future QM region (their neighbourhood is
    reported where predictions and rules disagree)."""

    method: str = "propka"
    ph: float = 7.0
    overrides: Mapping[str, str] | None = None
    is_qm: Callable[[app.Residue], bool] | None = None


def assign(topology: app.Topology, positions: np.ndarray, chosen: list[str | None], protonation: Protonation,
           label: Callable[[app.Residue], str]) -> tuple[list[Site], float]:
    """Fill ``chosen`` (one variant or None per residue; entries already set, from the input's hydrogens or a
    metal, are kept) from the predictions or the rules; overrides win. Returns the predicted sites and the pH
    to give OpenMM's Modeller (raised to :data:`HIS_NEUTRAL_PH` with predictions, so that it picks a neutral
    His's tautomer instead of HIP; every other titratable residue then has its variant)."""
    overrides = check_overrides(protonation.overrides or {}, topology, label)
    sites = predict(topology, positions, label) if protonation.method == "propka" else []
    modeller_ph = protonation.ph
    if protonation.method == "propka":
        predicted = {s.label: s for s in sites if s.group in PAIRS}
        disulfide = _disulfide_residues(topology)
        for residue in topology.residues():
            if residue.name not in PAIRS or chosen[residue.index] is not None or residue.index in disulfide:
                continue
            site = predicted.get(label(residue))
            chosen[residue.index] = (predicted_state(site, protonation.ph) if site is not None
                                     else rule_state(residue.name, protonation.ph))
        modeller_ph = max(protonation.ph, HIS_NEUTRAL_PH)
    for index, state in overrides.items():
        chosen[index] = state
    return sites, modeller_ph


def report_states(report, topology: app.Topology, positions: np.ndarray, used: list[str | None], sites: list[Site],
                  protonation: Protonation, label: Callable[[app.Residue], str]) -> None:
    """The titration table (every predicted site: pKa, model pKa, state) and the decisions to look at: close
    calls (|pKa − pH| < :data:`CLOSE_CALL`), states that differ from the rules in or next to the QM residues
    (within :data:`NEAR_QM_NM`), predictions no template can follow, and the overrides."""
    residues = {label(r): r for r in topology.residues()}
    ph = protonation.ph
    table = []
    for site in sites:
        residue = residues[site.label]
        if site.group in PAIRS:
            table.append(Site(site.label, site.group, site.pka, site.model_pka, used[residue.index] or residue.name))
            continue
        protonated = site.pka > ph
        usual = {"N+": True, "C-": False, "TYR": True, "ARG": True}[site.group]
        note = "" if protonated == usual else f"predicted {'protonated' if protonated else 'deprotonated'}; " \
                                               "no template for that state, kept as it is"
        table.append(Site(site.label, site.group, site.pka, site.model_pka, None, note))
    report.titration = {"method": "propka " + _propka_version() if protonation.method == "propka" else "rules",
                        "ph": ph, "sites": [asdict(s) for s in table]}
    close = [s.label for s in table if abs(s.pka - ph) < CLOSE_CALL]
    if close:
        report.decide("pka-close-call", f"predicted pKa within {CLOSE_CALL:g} of pH {ph:g}: check these states", close)
    if protonation.method == "propka":
        predicted = {s.label for s in table}
        missing = [label(r) for r in topology.residues() if r.name in PAIRS and label(r) not in predicted
                   and used[r.index] != "CYX"]
        if missing:
            report.decide("pka-missing", "no PROPKA prediction: state from the rules", missing)
    untemplated = [s.label for s in table if s.note]
    if untemplated:
        report.decide("pka-no-template", "predicted state has no template (Tyr, Arg, termini): kept", untemplated)
    if protonation.overrides:
        report.decide("state-override", "states given with --state: " + ", ".join(
            f"{k}={v.upper()}" for k, v in protonation.overrides.items()), list(protonation.overrides))
    if protonation.is_qm is not None:
        near = _near(topology, positions, protonation.is_qm)
        differ = [s.label for s in table if s.group in PAIRS and residues[s.label].index in near
                  and _differs(s.state, rule_state(s.group, ph))]
        if differ:
            report.decide("pka-vs-rules-near-qm", f"in or next to the QM residues, the predicted state differs from "
                          f"the rule at pH {ph:g}: check it matters for the mechanism", differ)


#: Residues with a heavy atom within this distance (nm) of a QM residue's are "next to" it.
NEAR_QM_NM = 0.5


def _disulfide_residues(topology: app.Topology) -> set[int]:
    return {a.residue.index for bond in topology.bonds() for a in bond if bond[0].name == bond[1].name == "SG"}


def _near(topology: app.Topology, positions: np.ndarray, is_qm: Callable[[app.Residue], bool]) -> set[int]:
    heavy = [a for a in topology.atoms() if a.element is not None and a.element != app.element.hydrogen]
    qm = [a.index for a in heavy if is_qm(a.residue)]
    if not qm:
        return set()
    xyz = np.asarray(positions)
    others = np.array([a.index for a in heavy])
    distance = np.min(np.linalg.norm(xyz[others][:, None] - xyz[qm][None], axis=2), axis=1)
    return {atom.residue.index for atom, d in zip(heavy, distance, strict=True) if d < NEAR_QM_NM}


def _differs(state: str | None, rule: str | None) -> bool:
    """A state differs from the rule's; a neutral His (HID or HIE) matches the rule's None (either tautomer)."""
    if rule is None:
        return state == "HIP"
    return state != rule


def _propka_version() -> str:
    import propka

    return propka.__version__
