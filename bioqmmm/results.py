"""What every protocol leaves in its output folder: ``result.json``, ``summary.txt`` and PNG plots.

``result.json`` holds key figures as ``{"value": ..., "unit": ...}`` records (plain numbers for
counts), written atomically; ``summary.txt`` is the same as an aligned table for people.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from openmm import Vec3, app, unit

from bioqmmm.simulation.imaging import MoleculeImager


def quantity(value: float | Sequence, unit: str) -> dict[str, Any]:
    """A number (or a list of numbers, or of lists: a matrix) with its unit, as stored in ``result.json``."""
    return {"value": _floats(value), "unit": unit}


def _floats(value: float | Sequence) -> float | list:
    return [_floats(v) for v in value] if isinstance(value, Sequence) else float(value)


def write_results(outdir: str | Path, protocol: str, figures: dict[str, Any]) -> dict[str, Any]:
    """Write ``result.json`` and ``summary.txt`` into ``outdir``; return the JSON record."""
    out = Path(outdir)
    record = {"protocol": protocol, **figures}
    tmp = out / "result.json.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(tmp, out / "result.json")
    (out / "summary.txt").write_text(format_summary(record) + "\n")
    return record


def read_result(outdir: str | Path, identity: str) -> dict[str, Any] | None:
    """The ``result.json`` record in ``outdir`` if there is one and it belongs to ``identity`` (else None):
    how a rerun finds work that is already done."""
    try:
        record = json.loads((Path(outdir) / "result.json").read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("identity") == identity else None


def format_summary(record: dict[str, Any]) -> str:
    """``key  value unit`` lines, aligned."""
    lines = []
    for key, value in record.items():
        if isinstance(value, dict) and set(value) != {"value", "unit"}:  # a group: one line per entry
            lines += [(f"{key} {sub}".replace("_", " "), _text(v)) for sub, v in value.items()]
        else:
            lines.append((key.replace("_", " "), _text(value)))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in lines)


def _text(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"value", "unit"}:
        number = value["value"]
        return f"{_numbers(number)} {value['unit']}"
    return str(value)


def _numbers(value: Any) -> str:
    if isinstance(value, list):
        return f"[{', '.join(_numbers(v) for v in value)}]"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def new_figure(rows: int = 1, height: float = 3.2):
    """A matplotlib Figure on the Agg canvas (whatever pyplot's backend) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]


def plot_md(rows: list[dict[str, float]], path: str | Path, title: str) -> None:
    """Energy components relative to the first report, temperature and SCF cycles against time."""
    import numpy as np

    t = np.array([r["time_ps"] for r in rows])
    fig, (energy, temperature, scf) = new_figure(3, 2.4)
    for key, label in (("qm_kjmol", "QM"), ("mm_kjmol", "MM"), ("potential_kjmol", "potential")):
        values = np.array([r[key] for r in rows])
        energy.plot(t, values - values[0], marker="o", markersize=2, label=label)
    total = np.array([r["potential_kjmol"] + r["kinetic_kjmol"] for r in rows])
    energy.plot(t, total - total[0], color="k", label="total")
    energy.set_ylabel("ΔE / kJ mol$^{-1}$")
    energy.legend(fontsize="small", ncol=4)
    energy.set_title(title, fontsize="medium")
    temperature.plot(t, [r["temperature_k"] for r in rows])
    temperature.set_ylabel("T / K")
    scf.plot(t, [r["scf_cycles"] for r in rows], drawstyle="steps-mid")
    scf.set_ylabel("SCF cycles")
    scf.set_xlabel("time / ps")
    fig.savefig(path, dpi=120)


def write_pdb_models(path: str | Path, topology: app.Topology, models, box=None, centre_atoms=()) -> None:
    """A PDB file with one MODEL per positions array (nm) in ``models``; ``box`` (3, 3) nm or None (CRYST1).

    In a box, each model is imaged (:class:`~bioqmmm.simulation.imaging.MoleculeImager`): molecules whole,
    ``centre_atoms`` (the QM region) at the centre.
    """
    if box is not None:
        imager = MoleculeImager(topology, centre_atoms)
        models = [imager(x, box) for x in models]
        topology = copy.copy(topology)
        topology.setPeriodicBoxVectors([Vec3(*map(float, v)) for v in np.asarray(box)] * unit.nanometer)
    with open(path, "w") as handle:
        app.PDBFile.writeHeader(topology, handle)
        for i, x in enumerate(models):
            app.PDBFile.writeModel(topology, np.asarray(x) * unit.nanometer, handle, modelIndex=i + 1)
        app.PDBFile.writeFooter(topology, handle)
