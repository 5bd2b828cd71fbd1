"""``protocol: ts`` in a protocol file: a transition state inside its environment, its modes and its IRC.

1. The guess: the system's structure, ``start`` (a structure file), or the ``midpoint`` of the QM atoms
   of the system's structure (reactant) and ``product``.
2. Microiterative eigenvector following with the environment-condensed Hessian
   (:mod:`bioqmmm.paths.solvated_ts`): QM atoms follow the transition mode, the flexible environment
   within ``environment_radius_nm`` is relaxed after each step, the rest is frozen.
3. Normal modes of the condensed Hessian at the saddle (one imaginary); if the search converged, the
   IRC in both directions (:mod:`bioqmmm.paths.irc`). Steepest descent slows to a crawl near a minimum,
   so each IRC end is then minimised (:mod:`bioqmmm.protocols.optimize`, microiterations, the same
   atoms free) and the minimum is compared (QM-atom RMSD after superposition) with the reactant and,
   when given, the product.
4. Files: ``ts.pdb``, ``modes_ts.molden``, ``frequencies_ts.csv``, ``irc.pdb`` (one model per point),
   ``irc.csv``, ``irc.png``, ``irc_forward_minimum/``, ``irc_backward_minimum/``, ``result.json``/``summary.txt``.

A rerun resumes: the saddle and the IRC are kept in ``ts_stage.pkl``/``irc_stage.pkl`` (with the run's
identity; an unconverged search is continued from its last point, with ``max_steps`` more steps) and the end
minimisations checkpoint as the ``optimize`` protocol does.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from openmm import app

from bioqmmm.errors import InputError
from bioqmmm.paths.irc import IRCResult
from bioqmmm.paths.solvated_ts import SolvatedTS, irc_in_environment, refine_in_environment
from bioqmmm.protocols.context import RunContext
from bioqmmm.protocols.neb import read_endpoint
from bioqmmm.protocols.optimize import OptimizationOutcome, OptimizeSettings, run_optimization
from bioqmmm.protocols.registry import Protocol
from bioqmmm.protocols.settings import Declared, FieldError, setting
from bioqmmm.protocols.vibrations import write_modes
from bioqmmm.results import new_figure, quantity, write_pdb_models, write_results
from bioqmmm.simulation.checkpoint import staged
from bioqmmm.vibrations.active import ENVIRONMENT_MODELS


@dataclass(frozen=True)
class TSSettings(Declared):
    """Transition state with a relaxing environment, its frequencies and IRC (module docstring)."""

    guess: Literal["start", "midpoint"] = setting("start", doc="the system's structure (or `start`), or the "
                                                  "midpoint of its QM atoms and the product's")
    start: str | None = setting(None, doc="guess structure (PDB/mmCIF: all atoms, or some residues)")
    product: str | None = setting(None, doc="product structure: for the midpoint guess and to name the IRC ends")
    environment_radius_nm: float = setting(0.5, doc="atoms this close to the QM region relax; the rest is frozen",
                                           check="non_negative")
    environment_hessian: Literal[ENVIRONMENT_MODELS] = setting(
        "mm", doc="environment products: mm (fixed QM charges, MM cost) or qmmm (exact)")
    fmax_kjmol_nm: float = setting(10.0, doc="converged below this force on a QM atom", check="positive")
    max_steps: int = setting(100, doc="eigenvector-following steps at most", check="positive_int")
    trust_nm: float = setting(0.003, doc="initial trust radius (largest move of one atom)", check="positive")
    mm_tolerance_kjmol_nm: float = setting(0.5, doc="RMS force at which an environment relaxation stops",
                                           check="positive")
    irc: bool = setting(True, doc="follow the IRC from the saddle in both directions")
    irc_step: float = setting(0.01, doc="IRC step in mass-weighted coordinates", unit="amu^½ nm", check="positive")
    irc_max_steps: int = setting(60, doc="IRC steps per direction at most", check="positive_int")
    irc_fmax_kjmol_nm: float = setting(20.0, doc="an IRC branch ends below this force, and its end is minimised "
                                       "to it", check="positive")
    end_max_steps: int = setting(200, doc="minimisation steps at most for each IRC end", check="positive_int")

    def check(self) -> None:
        if self.guess == "midpoint" and self.product is None:
            raise FieldError("product", "the midpoint guess needs a product structure")
        if self.guess == "midpoint" and self.start is not None:
            raise FieldError("start", "give either a start structure or the midpoint guess")


def kabsch_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD (nm) of point sets ``a`` and ``b`` (n, 3) after optimal superposition (Kabsch)."""
    p, q = a - a.mean(axis=0), b - b.mean(axis=0)
    u, _, vt = np.linalg.svd(p.T @ q)
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1, 1, d]) @ vt
    return float(np.sqrt(((p @ rotation - q) ** 2).sum(axis=1).mean()))


def run(context: RunContext, settings: TSSettings) -> dict:
    """The ``ts`` protocol (serial)."""
    from tqdm import tqdm

    qmmm, base, out, box = context.qmmm, context.base, context.output, context.box
    topology, reactant = qmmm.topology, np.asarray(context.positions, dtype=float)
    product = None if settings.product is None else read_endpoint(base / settings.product, topology, reactant)
    qm = np.asarray(qmmm.qm_atoms, dtype=int)
    start = reactant if settings.start is None else read_endpoint(base / settings.start, topology, reactant)
    if settings.guess == "midpoint":
        if np.allclose(reactant[qm], product[qm], atol=1e-6):
            raise InputError(f"{settings.product}: its QM atoms are where the reactant's are: no midpoint to take")
        start = reactant.copy()
        start[qm] = 0.5 * (reactant[qm] + product[qm])
    with tqdm(total=settings.max_steps, unit="step", disable=not context.progress, desc="TS") as bar:
        def report(iteration: int, energy: float, largest: float) -> None:
            bar.n = iteration
            bar.set_postfix(energy=f"{energy:.2f}", fmax=f"{largest:.1f}")

        def irc_report(branch: str, point: int, energy: float, largest: float) -> None:
            bar.set_description(f"IRC {branch}")
            bar.total, bar.n = settings.irc_max_steps, point
            bar.set_postfix(energy=f"{energy:.2f}", fmax=f"{largest:.1f}")

        def search(x: np.ndarray) -> SolvatedTS:
            return refine_in_environment(
                qmmm, x, environment_radius=settings.environment_radius_nm,
                environment_model=settings.environment_hessian, fmax=settings.fmax_kjmol_nm,
                max_steps=settings.max_steps, trust=settings.trust_nm, mm_tolerance=settings.mm_tolerance_kjmol_nm,
                box=box, platform=context.platform, report=report)

        stage = out / "ts_stage.pkl"
        resumed = stage.exists()
        saddle = staged(stage, context.identity, lambda: search(start))
        if resumed and not saddle.ts.converged:  # a rerun continues an unconverged search where it stopped
            stage.unlink()
            last = saddle.ts.positions
            saddle = staged(stage, context.identity, lambda: search(last))
        irc = None
        if settings.irc and saddle.ts.converged:
            irc = staged(out / "irc_stage.pkl", context.identity, lambda: irc_in_environment(
                qmmm, saddle, step=settings.irc_step, max_steps=settings.irc_max_steps,
                fmax=settings.irc_fmax_kjmol_nm, mm_tolerance=settings.mm_tolerance_kjmol_nm, box=box,
                platform=context.platform, report=irc_report))
    ends = {} if irc is None else {
        name: run_optimization(
            qmmm, branch.positions[-1],
            OptimizeSettings(fmax_kjmol_nm=settings.irc_fmax_kjmol_nm, max_steps=settings.end_max_steps,
                             freeze_beyond_nm=settings.environment_radius_nm or None,
                             mm_tolerance_kjmol_nm=settings.mm_tolerance_kjmol_nm),
            out / f"irc_{name}_minimum", box=box, platform=context.platform, identity=context.identity,
            progress=context.progress, poll=context.poll)
        for name, branch in (("forward", irc.forward), ("backward", irc.backward))}
    figures = {**context.record, **_figures(saddle, irc, ends, qm, {"reactant": reactant, "product": product})}
    files = _write(out, topology, box, saddle, irc, qmmm.qm_atoms) + [f"irc_{name}_minimum/" for name in ends]
    return write_results(out, "ts", {**figures, "files": sorted(files + ["result.json", "summary.txt"])})


def _figures(saddle: SolvatedTS, irc: IRCResult | None, ends: dict[str, OptimizationOutcome], qm: np.ndarray,
             references: dict[str, np.ndarray | None]) -> dict[str, Any]:
    ts, modes = saddle.ts, saddle.analysis.modes
    figures: dict[str, Any] = {
        "converged": ts.converged,
        "steps": ts.iterations,
        "gradient_calls": ts.gradient_calls,
        "max_force_qm": quantity(ts.max_force, "kJ/mol/nm"),
        "max_force_environment": quantity(saddle.max_force_environment, "kJ/mol/nm"),
        "environment_atoms": len(saddle.environment),
        "ts_energy": quantity(ts.energy, "kJ/mol"),
        "imaginary_frequencies": quantity(modes.imaginary.round(1).tolist(), "cm^-1 (negative = imaginary)"),
        "lowest_real_frequencies": quantity(modes.frequencies[modes.frequencies > 0][:4].round(1).tolist(), "cm^-1"),
        "hessian": {"method": "condensed", "qmmm_evaluations": saddle.analysis.hessian.qmmm_evaluations,
                    "environment_products": saddle.analysis.hessian.environment_products},
    }
    if irc is None:
        return figures
    summary: dict[str, Any] = {"gradient_calls": irc.gradient_calls}
    for name, branch in (("forward", irc.forward), ("backward", irc.backward)):
        minimum = ends[name]
        rmsd = {label: kabsch_rmsd(minimum.positions[qm], x[qm]) for label, x in references.items() if x is not None}
        summary[name] = {
            "steps": len(branch.energies),
            "reached_minimum": branch.reached_minimum,
            "max_force": quantity(branch.max_force, "kJ/mol/nm"),
            "energy_below_ts": quantity(irc.ts_energy - branch.energies[-1], "kJ/mol"),
            "minimised": {"converged": minimum.converged, "steps": minimum.iterations,
                          "energy_below_ts": quantity(irc.ts_energy - minimum.final_energy, "kJ/mol")},
            "rmsd_to": {label: quantity(value, "nm") for label, value in rmsd.items()},
            "ends_at": min(rmsd, key=rmsd.get),
        }
    figures["irc"] = summary
    return figures


def _write(out: Path, topology: app.Topology, box, saddle: SolvatedTS, irc: IRCResult | None,
           centre_atoms) -> list[str]:
    files = write_modes(out, "ts", topology, saddle.ts.positions, saddle.analysis)
    write_pdb_models(out / "ts.pdb", topology, [saddle.ts.positions], box, centre_atoms)
    files.append("ts.pdb")
    if irc is None:
        return files
    arc, energies, positions = irc.path()
    write_pdb_models(out / "irc.pdb", topology, positions, box, centre_atoms)
    with open(out / "irc.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arc_amu_half_nm", "energy_kjmol_relative_to_ts"])
        writer.writerows([[f"{s:.5f}", f"{e - irc.ts_energy:.4f}"] for s, e in zip(arc, energies, strict=True)])
    fig, (axis,) = new_figure()
    axis.plot(arc, energies - irc.ts_energy, marker="o", markersize=3)
    axis.set_xlabel("IRC arc length / amu$^{1/2}$ nm (backward < 0 < forward)")
    axis.set_ylabel("E − E(TS) / kJ mol$^{-1}$")
    fig.savefig(out / "irc.png", dpi=120)
    return files + ["irc.pdb", "irc.csv", "irc.png"]


PROTOCOL = Protocol("ts", "transition state in an environment: microiterative P-RFO, condensed-Hessian modes, IRC",
                    TSSettings, run, length_keys=("max_steps", "irc_max_steps", "end_max_steps"))
