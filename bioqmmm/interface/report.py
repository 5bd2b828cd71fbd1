"""The interface protocol's files: the per-residue table (CSV) and the figures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from bioqmmm.results import new_figure
from bioqmmm.units import KCAL_KJ


def write_table(path: Path, rows: list[dict]) -> None:
    """One row per residue (or mutant), columns in the order of the first row."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_scan(path: Path, names: list[str], mm: list[float], qm: list[float | None]) -> None:
    """Per-residue alanine-scan ΔΔG (kcal/mol): MM-GBSA and QM/MM-corrected bars side by side."""
    fig, (axis,) = new_figure(1, 3.6)
    x = np.arange(len(names))
    axis.bar(x - 0.2, np.array(mm) / KCAL_KJ, 0.4, label="MM-GBSA")
    axis.bar(x + 0.2, [np.nan if v is None else v / KCAL_KJ for v in qm], 0.4, label="QM/MM-corrected")
    axis.axhline(0.0, color="k", lw=0.5)
    axis.set_xticks(x, names, rotation=90, fontsize="x-small")
    axis.set_ylabel("ΔΔG (→Ala) / kcal mol$^{-1}$")
    axis.legend(fontsize="small")
    fig.savefig(path, dpi=120)


def plot_measured(path: Path, measured: dict[str, float], predicted: dict[str, dict[str, float | None]]) -> None:
    """Predicted against measured ΔΔG (kcal/mol) for each level."""
    fig, (axis,) = new_figure(1, 4.6)
    values = list(measured.values())
    low, high = min(values + [0.0]) / KCAL_KJ - 1, max(values) / KCAL_KJ + 1
    for level, marker in zip(predicted, "os", strict=False):
        pairs = [(measured[m], v) for m, v in predicted[level].items() if m in measured and v is not None]
        if pairs:
            x, y = (np.array(p) / KCAL_KJ for p in zip(*pairs, strict=True))
            axis.scatter(x, y, marker=marker, label=level)
            low, high = min(low, y.min() - 1), max(high, y.max() + 1)
    axis.plot([low, high], [low, high], color="k", lw=0.5)
    axis.set_xlabel("measured ΔΔG / kcal mol$^{-1}$")
    axis.set_ylabel("predicted ΔΔG / kcal mol$^{-1}$")
    axis.legend(fontsize="small")
    fig.savefig(path, dpi=120)
