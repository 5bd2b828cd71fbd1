"""Protein–protein (antibody–antigen) interface: hot spots, QM/MM refinement, binding scores, alanine scan.

1. The partners (chain ids) and the model: bridging waters kept, other solvent replaced by OBC2 implicit
   solvent (:mod:`bioqmmm.interface.model`). Chains that do not exist or partners that do not touch
   stop the run before any energy is computed.
2. Interface residues (heavy atoms within ``contact_cutoff_nm`` of the other partner), buried area,
   hydrogen bonds and salt bridges (:mod:`bioqmmm.interface.contacts`), and the exact per-residue MM
   interaction energy (:mod:`bioqmmm.interface.energies`).
3. The QM region: interface residues with at least ``min_buried_nm2`` buried, most attractive MM
   interaction first, within ``qm_budget_atoms`` (:mod:`bioqmmm.interface.hotspots`).
4. Refinement (``refine_steps`` > 0): QM/MM optimisation of the QM region with the residues within
   ``flexible_shell_nm`` relaxing, everything else fixed (:mod:`bioqmmm.interface.refine`).
5. Scores at the refined geometry: MM-GBSA and QM/MM-corrected binding scores of the wild type and of
   every alanine mutant (:mod:`bioqmmm.interface.scoring`), shared over MPI ranks, each variant stored
   as it is done (a rerun continues); agreement with measured ΔΔG when ``measured_ddg`` names a file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bioqmmm.errors import CalculationError, InputError
from bioqmmm.interface.contacts import buried_area, hydrogen_bonds, interface_residues, salt_bridges
from bioqmmm.interface.counterpoise import check_counterpoise
from bioqmmm.interface.energies import nonbonded_parameters, pair_energies, per_residue
from bioqmmm.interface.hotspots import atom_keys, pick_region
from bioqmmm.interface.model import Structure, create_systems, gb_forcefield, interface_structure
from bioqmmm.interface.mutation import (
    ONE_LETTER,
    find_mutated,
    in_disulfide,
    label,
    parse_mutations,
    residue_key,
    scan_label,
    truncate_to_alanine,
)
from bioqmmm.interface.partners import WATER, find_partners
from bioqmmm.interface.refine import refine, relax_mm
from bioqmmm.interface.report import plot_measured, plot_scan, write_table
from bioqmmm.interface.scoring import score
from bioqmmm.interface.validation import agreement, read_measured
from bioqmmm.protocols.context import RunContext
from bioqmmm.protocols.optimize import OptimizeSettings
from bioqmmm.protocols.registry import Protocol
from bioqmmm.protocols.settings import Declared, FieldError, setting
from bioqmmm.results import quantity, write_pdb_models, write_results

WILD_TYPE = "wild_type"


@dataclass(frozen=True)
class InterfaceSettings(Declared):
    """Keys of the interface protocol (module docstring)."""

    partners: str | None = setting(None, doc="chain ids 'H,L:C' (None: H,L against the rest, or two chains)")
    contact_cutoff_nm: float = setting(0.45, doc="heavy-atom distance that makes a residue an interface residue",
                                       check="positive")
    min_buried_nm2: float = setting(0.05, doc="buried area a QM candidate needs", check="non_negative")
    qm_budget_atoms: int = setting(80, doc="QM atoms at most, link atoms included", check="positive_int")
    relax_shell_nm: float = setting(0.8, doc="MM-minimise residues this close to the interface first, heavy "
                                    "atoms restrained (0: no relaxation)", check="non_negative")
    refine_steps: int = setting(20, doc="QM/MM optimisation steps (0: score the structure as given)",
                                check="non_negative")
    refine_fmax_kjmol_nm: float = setting(50.0, doc="refinement converged below this largest QM-region force",
                                          check="positive")
    flexible_shell_nm: float = setting(0.5, doc="residues this close to the QM region relax with it",
                                       check="non_negative")
    scan: Literal["interface", "none"] = setting("interface", doc="alanine-scan every interface residue")
    mutations: tuple[str, ...] = setting((), doc="more variants: 'H:D32A' or 'H:D32A,C:K97A' (double)")
    measured_ddg: str | None = setting(None, doc="CSV of measured ΔΔG (columns mutation, ddG_kcal_mol): its "
                                       "mutations are scored and compared")
    relax_partners_nm: float | None = setting(None, doc="relax each separated partner (MM, implicit solvent) "
                                              "within this distance of its interface; None: rigid partners",
                                              check="positive")
    counterpoise: bool = setting(False, doc="add the Boys–Bernardi estimate of the QM part's basis-set "
                                 "superposition error (PySCF levels)")
    qm_scan: Literal["all", "region", "none"] = setting("all", doc="variants that get the QM/MM correction: all, "
                                                        "those mutating a QM residue, none")

    def check(self) -> None:
        for text in self.mutations:
            try:
                parse_mutations(text)
            except InputError as exc:
                raise FieldError("mutations", str(exc)) from exc


def _variants(structure: Structure, settings: InterfaceSettings, candidates: list[int], measured: dict) -> dict:
    residues = list(structure.topology.residues())
    variants: dict[str, tuple] = {WILD_TYPE: ()}
    if settings.scan == "interface":
        for index in candidates:
            if residues[index].name not in ("GLY", "PRO", "ALA") and residues[index].name in ONE_LETTER \
                    and not in_disulfide(residues[index]):
                variants[scan_label(residues[index])] = parse_mutations(scan_label(residues[index]))
    for text in list(settings.mutations) + list(measured):
        mutations = parse_mutations(text)
        for m in mutations:
            find_mutated(structure.topology, m)  # a wrong residue stops the run here, before any QM
        variants[",".join(str(m) for m in mutations)] = mutations
    return variants


def _evaluate(structure, setup, mutations, region, level, qm_residues, settings, threads) -> dict:
    variant = structure
    if mutations:
        variant = truncate_to_alanine(structure, [find_mutated(structure.topology, m) for m in mutations])
    touches_qm = any(residue_key(find_mutated(structure.topology, m)) in qm_residues for m in mutations)
    with_qm = settings.qm_scan == "all" or (settings.qm_scan == "region" and (touches_qm or not mutations))
    try:
        result = score(variant, setup, region if with_qm else None, level if with_qm else None, threads,
                       settings.counterpoise, settings.relax_partners_nm)
        failure = {}
    except CalculationError as exc:  # one variant's SCF failure leaves its MM-GBSA score and the other variants
        result = score(variant, setup, None, None, threads, relax_shell=settings.relax_partners_nm)
        failure = {"qm_error": str(exc)}
    return {**result.record(), "qm_charges": result.qm_charges, **failure}


def _score_variants(context: RunContext, variants: dict, evaluate) -> dict[str, dict]:
    """Each rank scores its share (stored in variants/ as it goes); every rank gets all results."""
    folder = context.output / "variants"
    folder.mkdir(exist_ok=True)
    comm, done, failure = context.comm, {}, None
    for name in sorted(variants)[comm.rank::comm.size]:
        path = folder / (name.replace(":", "_").replace(",", "+") + ".json")
        stored = json.loads(path.read_text()) if path.exists() else None
        if stored is None or stored.get("identity") != context.identity:
            started = time.perf_counter()
            try:
                stored = {"identity": context.identity, **evaluate(variants[name]),
                          "seconds": time.perf_counter() - started}
            except InputError as exc:  # every rank stops with it, not only this one
                failure = _Failure("InputError", f"variant {name}: {exc}")
                break
            path.with_suffix(".tmp").write_text(json.dumps(stored))
            os.replace(path.with_suffix(".tmp"), path)
        done[name] = stored
    merged: dict[str, dict] = {}
    for part, problem in comm.allgather((done, failure)):
        if problem is not None:
            raise InputError(problem.message)
        merged.update(part)
    return merged


def run(context: RunContext, settings: InterfaceSettings) -> dict:
    """The ``interface`` protocol (module docstring)."""
    started = time.perf_counter()
    if context.forcefield is None:
        raise InputError("the interface protocol needs a prepared complex or a pdb file (system: prepared/pdb)")
    if settings.counterpoise:
        check_counterpoise(context.level)
    partners = find_partners(context.topology, settings.partners)
    structure, notes = interface_structure(context.topology, context.positions, partners,
                                           context.forcefield.templates)
    setup = gb_forcefield(context.forcefield)
    found = interface_residues(structure, settings.contact_cutoff_nm)
    if not found:
        raise InputError(f"partners {partners.label(0)} and {partners.label(1)} do not touch: no heavy atoms within "
                         f"{settings.contact_cutoff_nm} nm of each other")
    measured = read_measured(context.base / settings.measured_ddg) if settings.measured_ddg else {}
    variants = _variants(structure, settings, found, measured)
    implicit, vacuum = create_systems(structure, setup)
    charges = nonbonded_parameters(vacuum, structure.side)[0]
    residues = list(structure.topology.residues())
    buried = buried_area(structure)
    contacts = hydrogen_bonds(structure) + salt_bridges(structure)
    e_residue = per_residue(structure, pair_energies(structure, vacuum))
    candidates = sorted((i for i in found if buried[i] >= settings.min_buried_nm2 and residues[i].name not in WATER),
                        key=lambda i: e_residue[i])
    ranked = [(i, f"MM interaction {e_residue[i]:+.0f} kJ/mol (rank {k + 1} of {len(candidates)}), "
                  f"buried {buried[i]:.2f} nm²" + _contact_text(residues[i], contacts))
              for k, i in enumerate(candidates)]
    picks, qm_atoms, qm_charge, passed_over = pick_region(structure, ranked, contacts, settings.qm_budget_atoms,
                                                          charges)
    region = frozenset(atom_keys(structure.topology)[i] for i in qm_atoms)
    atoms = list(structure.topology.atoms())
    qm_residues = {residue_key(atoms[i].residue) for i in qm_atoms}
    logging.getLogger("bioqmmm.region.boundary").setLevel(logging.ERROR)  # one note per model would repeat

    input_positions = structure.positions.copy()
    interface_atoms = np.array([a.index for a in atoms if a.residue.index in set(found)])
    if settings.relax_shell_nm > 0:
        structure.positions = _on_rank_zero(context.comm, lambda: relax_mm(
            structure, implicit, interface_atoms, settings.relax_shell_nm, context.threads))
    refinement = None
    if settings.refine_steps > 0:
        optimise = OptimizeSettings(fmax_kjmol_nm=settings.refine_fmax_kjmol_nm, max_steps=settings.refine_steps)
        refinement = _on_rank_zero(context.comm, lambda: refine(
            structure, implicit, qm_atoms, context.level, shell_nm=settings.flexible_shell_nm, settings=optimise,
            output=context.output / "refine", identity=context.identity, interface_atoms=interface_atoms,
            contacts=contacts, threads=context.threads, progress=context.progress))
        structure.positions = refinement.positions
    if settings.relax_shell_nm > 0 or refinement is not None:  # the table describes the structure scored
        buried, contacts = buried_area(structure), hydrogen_bonds(structure) + salt_bridges(structure)
        e_residue = per_residue(structure, pair_energies(structure, vacuum))
    results = _score_variants(context, variants, lambda mutations: _evaluate(
        structure, setup, mutations, region, context.level, qm_residues, settings, context.threads))
    return _on_rank_zero(context.comm, lambda: _report(
        context, settings, structure, input_positions, partners, notes, found, buried, e_residue, contacts, picks,
        qm_atoms, qm_charge, passed_over, refinement, results, measured, started))


def _on_rank_zero(comm, work):
    """``work()`` on rank 0, its result (or its error, raised on every rank) broadcast to all ranks."""
    outcome = None
    if comm.rank == 0:
        try:
            outcome = work()
        except (InputError, CalculationError) as exc:
            outcome = _Failure(type(exc).__name__, str(exc))
    outcome = comm.bcast(outcome)
    if isinstance(outcome, _Failure):
        raise {"InputError": InputError}.get(outcome.kind, CalculationError)(outcome.message)
    return outcome


@dataclass(frozen=True)
class _Failure:
    kind: str
    message: str


def _contact_text(residue, contacts) -> str:
    own = [c for c in contacts if any(n.startswith(label(residue) + ":") for n in c.names)]
    return "".join(f"; {c.kind.replace('_', ' ')} {c.names[0]}–{c.names[1]} {c.distance:.2f} nm" for c in own)


def _report(context, settings, structure, input_positions, partners, notes, found, buried, e_residue, contacts, picks,
            qm_atoms, qm_charge, passed_over, refinement, results, measured, started) -> dict:
    out = context.output
    write_pdb_models(out / "interface.pdb", structure.topology, [input_positions, structure.positions], None)
    residues = list(structure.topology.residues())
    wild = results[WILD_TYPE]
    ddg = {level: {name: (None if r[level] is None or wild[level] is None else r[level] - wild[level])
                   for name, r in results.items() if name != WILD_TYPE} for level in ("mmgbsa", "qmmm")}
    picked = {p.residue: p for p in picks}
    rows = []
    for i in found:
        res = residues[i]
        name = scan_label(res)
        rows.append({
            "residue": label(res), "partner": partners.label(int(structure.side[next(res.atoms()).index])),
            "buried_nm2": round(float(buried[i]), 4), "e_int_mm_kjmol": round(float(e_residue[i]), 3),
            "qm": picked[label(res)].piece if label(res) in picked else "",
            "ddg_mmgbsa_kjmol": _round(ddg["mmgbsa"].get(name)), "ddg_qmmm_kjmol": _round(ddg["qmmm"].get(name)),
            "ddg_measured_kjmol": _round(measured.get(name)),
            "contacts": _contact_text(res, contacts).lstrip("; "),
        })
    write_table(out / "residues.csv", rows)
    write_table(out / "variants.csv", [{"variant": n, **{k: v for k, v in r.items() if k not in ("identity",)}}
                                       for n, r in sorted(results.items())])
    scanned = [r for r in rows if r["ddg_mmgbsa_kjmol"] is not None]
    if scanned:
        plot_scan(out / "scan.png", [r["residue"] for r in scanned], [r["ddg_mmgbsa_kjmol"] for r in scanned],
                  [r["ddg_qmmm_kjmol"] for r in scanned])
    figures = {
        **context.record,
        "partners": str(partners),
        "model": notes,
        "interface_residues": len(found),
        "buried_area": quantity(float(buried[found].sum()), "nm^2"),
        "hydrogen_bonds": sum(c.kind == "hbond" for c in contacts),
        "salt_bridges": sum(c.kind == "salt_bridge" for c in contacts),
        "qm_region": {"atoms": len(qm_atoms), "charge": qm_charge,
                      "residues": [{"residue": p.residue, "piece": p.piece, "why": p.reason} for p in picks],
                      "passed_over": passed_over},
        "binding": {k: (None if v is None else quantity(v, "kJ/mol")) for k, v in wild.items()
                    if k in ("interaction_mm", "desolvation", "partner_relaxation", "mmgbsa", "qm_correction",
                             "counterpoise", "qmmm")},
        "charge_transfer": None if wild.get("charge_transfer") is None else quantity(wild["charge_transfer"], "e"),
        "decomposition": _decomposition(structure, e_residue, wild, ddg, rows),
        "variants": len(results),
    }
    if refinement is not None:
        figures["refinement"] = {**refinement.figures, "flexible_atoms": refinement.moved,
                                 "interface_heavy_atom_rmsd": quantity(refinement.interface_rmsd, "nm"),
                                 "contacts": refinement.contacts, "protonation_flags": refinement.protonation_flags}
    if measured:
        stats = {level: agreement(ddg[level], measured) for level in ("mmgbsa", "qmmm")}
        figures["measured"] = {"file": settings.measured_ddg, **stats}
        plot_measured(out / "measured.png", measured, {"MM-GBSA": ddg["mmgbsa"], "QM/MM-corrected": ddg["qmmm"]})
    figures["wall_time"] = quantity(time.perf_counter() - started, "s")
    return write_results(out, "interface", figures)


def _decomposition(structure, e_residue, wild, ddg, rows) -> dict:
    """Per-residue MM interaction summed over partner A (= the MM interaction exactly), and what the
    single-residue alanine scan leaves of each binding score (ΔG + Σ ΔΔG over the scanned residues, each ΔΔG
    being minus the residue's share: backbone, Gly/Pro/Ala, and the non-additivity of the scan)."""
    side_of_residue = np.array([structure.side[next(r.atoms()).index] for r in structure.topology.residues()])
    record = {"sum_residues_partner_a": quantity(float(e_residue[side_of_residue == 0].sum()), "kJ/mol"),
              "sum_residues_partner_b": quantity(float(e_residue[side_of_residue == 1].sum()), "kJ/mol"),
              "interaction_mm": quantity(wild["interaction_mm"], "kJ/mol")}
    for level in ("mmgbsa", "qmmm"):
        values = [r[f"ddg_{level}_kjmol"] for r in rows if r[f"ddg_{level}_kjmol"] is not None]
        if wild[level] is not None and values:
            record[f"scan_remainder_{level}"] = quantity(wild[level] + sum(values), "kJ/mol")
    return record


def _round(value):
    return None if value is None else round(float(value), 3)


PROTOCOL = Protocol("interface", "protein–protein interface: hot spots, QM/MM refinement, binding scores, "
                    "alanine scan", InterfaceSettings, run, parallel=True, own_region=True)
