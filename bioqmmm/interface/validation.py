"""Agreement of predicted binding free-energy changes with measured ones.

Measured values are read from a CSV file with the AB-Bind columns ``mutation`` (``CHAIN:WtNumMut``, several
joined by commas) and ``ddG_kcal_mol`` (Sirin et al., Protein Sci. 25, 393 (2016)). Pearson r,
Spearman ρ, RMSE, and for hot spots (ΔΔG ≥ 2 kcal/mol, Bogan & Thorn, J. Mol. Biol. 280, 1 (1998)) the
fraction of measured hot spots predicted as hot (recall) and of predicted hot spots that are (precision).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy import stats

from bioqmmm.errors import InputError
from bioqmmm.units import KCAL_KJ

HOT_SPOT_KCAL = 2.0


def read_measured(path: str | Path) -> dict[str, float]:
    """{mutation text: ΔΔG kJ/mol} of a measured-ΔΔG CSV file (kcal/mol in the file)."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise InputError(f"cannot read measured ΔΔG file {path}: {exc}") from exc
    if not rows or not {"mutation", "ddG_kcal_mol"} <= set(rows[0]):
        raise InputError(f"{path}: needs columns 'mutation' and 'ddG_kcal_mol'")
    return {row["mutation"].replace(" ", ""): float(row["ddG_kcal_mol"]) * KCAL_KJ for row in rows}


def agreement(predicted: dict[str, float], measured: dict[str, float]) -> dict[str, float | int]:
    """Statistics over the mutations in both (kJ/mol in; RMSE and mean error reported in kcal/mol)."""
    names = [m for m in measured if m in predicted and predicted[m] is not None]
    if len(names) < 3:
        return {"n": len(names)}
    x = np.array([predicted[m] for m in names]) / KCAL_KJ
    y = np.array([measured[m] for m in names]) / KCAL_KJ
    hot_measured, hot_predicted = y >= HOT_SPOT_KCAL, x >= HOT_SPOT_KCAL
    both = int(np.sum(hot_measured & hot_predicted))
    return {
        "n": len(names),
        "pearson_r": float(stats.pearsonr(x, y)[0]),
        "spearman_rho": float(stats.spearmanr(x, y)[0]),
        "rmse_kcal_mol": float(np.sqrt(np.mean((x - y) ** 2))),
        "mean_error_kcal_mol": float(np.mean(x - y)),
        "hot_spots_measured": int(hot_measured.sum()),
        "hot_spot_recall": both / max(int(hot_measured.sum()), 1),
        "hot_spot_precision": both / max(int(hot_predicted.sum()), 1),
    }
