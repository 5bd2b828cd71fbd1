"""``protocol: finite_size``: the energy of a charged QM region in a periodic host at infinite dilution.

The file's system is the *defect cell* (a periodic PDB file; its ``qm`` block selects the QM region, e.g. a
substituted ion) and ``host_pdb`` the same cell without the defect. For each n in ``repeats`` the n×n×n
supercell with the defect cell at its origin is relaxed at QM/MM (``relax: all``), and
E(L) = E_defect(L) − E_host(L) is fitted by E∞ + A/L + B/L³ (:mod:`bioqmmm.periodic.extrapolation`).
The analytic A, k_e (ξ/2)(q²/ε_r − q_QM²) for a cube, uses the defect's net charge q, the QM region's
charge q_QM and the host's static dielectric tensor, computed from the relaxed host's force constants
(:mod:`bioqmmm.periodic.dielectric`; 1 without relaxation) unless ``dielectric`` gives it. With
``mm_reference`` the same series runs with the defect wholly MM (q_QM = 0), which checks the dielectric
part of A on its own. Files: ``finite_size.csv``, ``finite_size.png`` (E vs 1/L with the fits),
``result.json``. Each cell's energy is stored as it is done (``cells/``): a rerun continues.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bioqmmm.periodic.cells import Cell
from bioqmmm.periodic.dielectric import gamma_force_constants, static_dielectric
from bioqmmm.periodic.extrapolation import FiniteSizeFit, analytic_a, fit
from bioqmmm.periodic.model import CellModel
from bioqmmm.periodic.setup import build_supercell, check_repeats, defect_cell, host_cell, qm_charge_change, qmmm_model
from bioqmmm.protocols.context import RunContext
from bioqmmm.protocols.registry import Protocol
from bioqmmm.protocols.settings import Declared, FieldError, setting
from bioqmmm.results import new_figure, quantity, write_results
from bioqmmm.simulation.checkpoint import staged

SERIES = ("qmmm", "mm")


@dataclass(frozen=True)
class FiniteSizeSettings(Declared):
    """Keys of the finite_size protocol (module docstring)."""

    host_pdb: str = setting(doc="the defect-free cell (PDB with CRYST1, same box as the system's cell)")
    repeats: tuple[int, ...] = setting((2, 3, 4, 5), doc="supercells n×n×n of the cell (four or more sizes)")
    relax: Literal["all", "none"] = setting("all", doc="relax every atom of each supercell, or none (frozen host, "
                                            "ε = 1)")
    fmax_kjmol_nm: float = setting(0.1, doc="relaxed when every force component is below this", check="positive")
    dielectric: float | None = setting(None, doc="host's relative permittivity (None: from the relaxed host's force "
                                       "constants, or 1 with relax none)", check="positive")
    a_tolerance: float = setting(0.05, doc="relative tolerance between fitted and analytic A", check="positive")
    mm_reference: bool = setting(True, doc="also run the series with the defect wholly MM")
    lj_switch_nm: float | None = setting(0.1, doc="switch Lennard-Jones off smoothly over this width below the "
                                         "cut-off (None: as the force field builds it)", check="positive")
    ewald_tolerance: float = setting(1e-6, doc="PME and far-field mesh tolerance of the supercells",
                                     check="positive")

    def check(self) -> None:
        if len(set(self.repeats)) != len(self.repeats) or len(self.repeats) < 3 or min(self.repeats) < 1:
            raise FieldError("repeats", "give three or more different positive sizes (four or more for an "
                             "uncertainty)")


def run(context: RunContext, settings: FiniteSizeSettings) -> dict:
    """The ``finite_size`` protocol (serial)."""
    out = context.output
    defect = defect_cell(context)
    host = host_cell(settings.host_pdb, context, defect)
    repeats = sorted(settings.repeats)
    check_repeats(defect.box, defect.system, repeats)
    qm_charge = float(context.qmmm.charge)
    charge = defect.net_charge() + qm_charge_change(context) - host.net_charge()
    (out / "cells").mkdir(exist_ok=True)
    lengths = [n * abs(np.linalg.det(defect.box)) ** (1.0 / 3.0) for n in repeats]

    def relaxed_energy(model: CellModel, cell: Cell) -> float:
        if settings.relax == "none":
            return model.energy(cell.positions, cell.box)
        return model.relax(cell.positions, cell.box, settings.fmax_kjmol_nm)[1]

    def cell_energy(series: str, n: int) -> float:
        def compute() -> float:
            if series == "host":
                cell = build_supercell(host, (n,) * 3, None, settings.ewald_tolerance, settings.lj_switch_nm)
                return relaxed_energy(CellModel(cell.system), cell)
            cell = build_supercell(host, (n,) * 3, defect, settings.ewald_tolerance, settings.lj_switch_nm)
            model = qmmm_model(cell, context, settings.ewald_tolerance)[1] if series == "qmmm" else \
                CellModel(cell.system)
            return relaxed_energy(model, cell)
        return staged(out / "cells" / f"{series}_{n}.pkl", context.identity, compute)

    dielectric = staged(out / "cells" / "dielectric.pkl", context.identity,
                        lambda: _host_dielectric(host, repeats[0], settings))
    host_energies = [cell_energy("host", n) for n in repeats]
    figures: dict = {**context.record, "defect_charge": quantity(charge, "e"), "qm_charge": quantity(qm_charge, "e"),
                     "dielectric_tensor": np.round(dielectric, 4).tolist(),
                     "dielectric_constant": float(np.trace(dielectric) / 3.0),
                     "dielectric_source": "given" if settings.dielectric is not None else
                     ("host force constants" if settings.relax == "all" else "frozen host"),
                     "repeats": repeats, "lengths": quantity(lengths, "nm")}
    fits: dict[str, FiniteSizeFit] = {}
    for series in SERIES[: 2 if settings.mm_reference else 1]:
        energies = [cell_energy(series, n) - e_host for n, e_host in zip(repeats, host_energies, strict=True)]
        a_expected = analytic_a(defect.box, charge, qm_charge if series == "qmmm" else 0.0, dielectric)
        fits[series] = fit(lengths, energies, a_expected, settings.a_tolerance)
        if context.progress:
            print(f"finite_size {series}: E∞ = {fits[series].e_inf:.3f} ± {fits[series].e_inf_error:.3f} kJ/mol, "
                  f"A = {fits[series].a:.3f} (analytic {a_expected:.3f}) kJ/mol·nm", flush=True)
    figures.update({series: fit_figures(result) for series, result in fits.items()})
    _write_table(out / "finite_size.csv", repeats, fits)
    _plot(out / "finite_size.png", fits)
    return write_results(out, "finite_size", {
        **figures, "warnings": [f"{s}: {w}" for s, f in fits.items() for w in f.warnings],
        "files": ["finite_size.csv", "finite_size.png", "result.json", "summary.txt"]})


def _host_dielectric(host: Cell, n: int, settings: FiniteSizeSettings) -> np.ndarray:
    """The host's static dielectric tensor from its relaxed n×n×n supercell (or the given/frozen value)."""
    if settings.dielectric is not None:
        return np.eye(3) * settings.dielectric
    if settings.relax == "none":
        return np.eye(3)
    cell = build_supercell(host, (n,) * 3, None, settings.ewald_tolerance, settings.lj_switch_nm)
    model = CellModel(cell.system)
    positions = model.relax(cell.positions, cell.box, settings.fmax_kjmol_nm)[0]
    k_gamma = gamma_force_constants(model, positions, cell.box, host.system.getNumParticles())
    return static_dielectric(k_gamma, host.charges(), host.volume)


def fit_figures(result: FiniteSizeFit) -> dict:
    """One series' fit for ``result.json`` (fitted values with their standard errors as ``uncertainty``)."""
    def fitted(value: float, error: float | None, unit: str) -> dict:
        return {"value": value, "uncertainty": error, "unit": unit}

    return {
        "energies": quantity(list(result.energies), "kJ/mol"),
        "e_inf": fitted(result.e_inf, result.e_inf_error, "kJ/mol"),
        "a_fit": fitted(result.a, result.a_error, "kJ/mol nm"),
        "a_analytic": quantity(result.a_analytic, "kJ/mol nm"),
        "a_deviation_percent": None if result.a_deviation is None else 100.0 * result.a_deviation,
        "b_fit": fitted(result.b, result.b_error, "kJ/mol nm^3"),
        "e_inf_fixed_a": fitted(result.e_inf_fixed_a, result.e_inf_fixed_a_error, "kJ/mol"),
        "residual_rms": quantity(result.residual_rms, "kJ/mol"),
    }


def _write_table(path, repeats, fits: dict[str, FiniteSizeFit]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["repeats", "L_nm", *[f"E_{s}_kJ_mol" for s in fits], *[f"fit_{s}_kJ_mol" for s in fits]])
        first = next(iter(fits.values()))
        for k, n in enumerate(repeats):
            writer.writerow([n, f"{first.lengths[k]:.6f}", *[f"{f.energies[k]:.6f}" for f in fits.values()],
                             *[f"{f.predict([f.lengths[k]])[0]:.6f}" for f in fits.values()]])


def _plot(path, fits: dict[str, FiniteSizeFit]) -> None:
    """E(L) − E∞ against 1/L for each series (so that series of very different total energies share an axis),
    with the fit and the analytic leading term."""
    fig, axes = new_figure(rows=1, height=3.6)
    ax = axes[0]
    labels = {"qmmm": "QM/MM defect", "mm": "MM defect"}
    for (series, result), colour in zip(fits.items(), ("C0", "C1"), strict=False):
        x = np.linspace(0.0, 1.0 / min(result.lengths), 100)
        ax.plot(1.0 / np.asarray(result.lengths), np.asarray(result.energies) - result.e_inf, "o", color=colour,
                label=f"{labels[series]}: E∞ = {result.e_inf:.2f} ± {result.e_inf_error:.2f} kJ/mol")
        ax.plot(x, result.a * x + result.b * x**3, "-", color=colour, label=f"fit, A = {result.a:.1f} kJ/mol·nm")
        if result.a_analytic is not None:
            ax.plot(x, result.a_analytic * x, ":", color=colour, label=f"analytic A = {result.a_analytic:.1f}")
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    ax.set_xlabel("1/L (nm⁻¹)")
    ax.set_ylabel("E(L) − E∞ (kJ/mol)")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)


PROTOCOL = Protocol(
    name="finite_size",
    description="charged QM region in a periodic host: E(L) over supercells fitted to E∞ + A/L + B/L³, analytic A",
    settings=FiniteSizeSettings,
    run=run,
)
