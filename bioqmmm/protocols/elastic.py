"""``protocol: elastic``: the elastic tensor of a crystal with a QM point defect, by stress–strain.

The file's system is the crystal's cell with the defect (its ``qm`` block selects the QM region); the
supercell of ``repeats`` copies has the defect cell at its origin and, with ``host_pdb``, defect-free
host cells elsewhere. The supercell is relaxed, strained by ±h along the six Voigt components for each
of ``amplitudes`` and relaxed again, and C = ∂S/∂E is taken by central differences of the second
Piola–Kirchhoff stress, itself the strain derivative of the QM/MM energy
(:mod:`bioqmmm.periodic.elastic`). Alongside: the same supercell wholly MM (``mm_reference``) and the
defect-free host supercell (with ``host_pdb``), so the defect's and the QM treatment's effects are
visible. Files: ``elastic.csv`` (C of each model, GPa, with errors), ``elastic.png``, ``result.json``;
each model's tensor is stored when done (``models/``): a rerun continues.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np

from bioqmmm.periodic.elastic import ElasticTensor, elastic_tensor
from bioqmmm.periodic.model import CellModel
from bioqmmm.periodic.setup import build_supercell, check_repeats, defect_cell, host_cell, qmmm_model
from bioqmmm.protocols.context import RunContext
from bioqmmm.protocols.registry import Protocol
from bioqmmm.protocols.settings import Declared, FieldError, setting
from bioqmmm.results import new_figure, quantity, write_results
from bioqmmm.simulation.checkpoint import staged

LABELS = {"qmmm": "defect, QM/MM", "mm": "defect, MM", "host": "host, MM"}


@dataclass(frozen=True)
class ElasticSettings(Declared):
    """Keys of the elastic protocol (module docstring)."""

    repeats: tuple[int, int, int] = setting((2, 2, 2), doc="copies of the cell along a, b, c")
    amplitudes: tuple[float, ...] = setting((0.005, 0.01), doc="strain amplitudes h (two: error estimate)")
    relax: bool = setting(True, doc="relax the atoms at every strain (False: homogeneous strain only)")
    fmax_kjmol_nm: float = setting(0.1, doc="relaxed when every force component is below this", check="positive")
    host_pdb: str | None = setting(None, doc="defect-free cell (same box) filling the other copies; its own C "
                                   "is reported too")
    mm_reference: bool = setting(True, doc="also the same supercell wholly MM")
    lj_switch_nm: float | None = setting(0.1, doc="switch Lennard-Jones off smoothly over this width below the "
                                         "cut-off (None: as the force field builds it)", check="positive")
    ewald_tolerance: float = setting(1e-6, doc="PME and far-field mesh tolerance", check="positive")

    def check(self) -> None:
        if len(self.amplitudes) != 2 or min(self.amplitudes) <= 0 or max(self.amplitudes) > 0.05 or \
                self.amplitudes[0] == self.amplitudes[1]:
            raise FieldError("amplitudes", "give two different strain amplitudes in (0, 0.05]")
        if min(self.repeats) < 1:
            raise FieldError("repeats", "copies must be positive")


def run(context: RunContext, settings: ElasticSettings) -> dict:
    """The ``elastic`` protocol (serial)."""
    out = context.output
    defect = defect_cell(context)
    host = host_cell(settings.host_pdb, context, defect) if settings.host_pdb else None
    check_repeats(defect.box, defect.system, settings.repeats)
    (out / "models").mkdir(exist_ok=True)

    def tensor(name: str) -> ElasticTensor:
        def compute() -> ElasticTensor:
            cell = build_supercell(host or defect, settings.repeats, defect if name != "host" else None,
                                   settings.ewald_tolerance, settings.lj_switch_nm)
            model = qmmm_model(cell, context, settings.ewald_tolerance)[1] if name == "qmmm" else \
                CellModel(cell.system)
            positions = cell.positions
            if settings.relax:
                positions = model.relax(positions, cell.box, settings.fmax_kjmol_nm)[0]

            def relax(strained, box):
                return model.relax(strained, box, settings.fmax_kjmol_nm)[0]

            report = (lambda text: print(f"elastic {name}: {text}", flush=True)) if context.progress else None
            return elastic_tensor(model, positions, cell.box, settings.amplitudes,
                                  relax if settings.relax else None, report)
        return staged(out / "models" / f"{name}.pkl", context.identity, compute)

    names = ["qmmm"] + (["mm"] if settings.mm_reference else []) + (["host"] if host is not None else [])
    tensors = {name: tensor(name) for name in names}
    figures = {**context.record, "repeats": list(settings.repeats), "amplitudes": list(settings.amplitudes),
               **{name: tensor_figures(t) for name, t in tensors.items()}}
    for name in names[1:]:
        figures[f"qmmm_minus_{name}"] = quantity((tensors["qmmm"].c - tensors[name].c).round(4).tolist(), "GPa")
    _write_table(out / "elastic.csv", tensors)
    _plot(out / "elastic.png", tensors)
    return write_results(out, "elastic", {**figures, "files": ["elastic.csv", "elastic.png", "result.json",
                                                                "summary.txt"]})


def tensor_figures(tensor: ElasticTensor) -> dict:
    """One model's elastic tensor and checks for ``result.json``."""
    return {
        "c": quantity(tensor.c.round(4).tolist(), "GPa"),
        "error": quantity(tensor.error.round(5).tolist(), "GPa"),
        "max_error": quantity(float(np.nanmax(tensor.error)), "GPa"),
        "cubic": {k: round(v, 5) for k, v in tensor.cubic().items()},
        "eigenvalues": quantity(tensor.eigenvalues.round(4).tolist(), "GPa"),
        "positive_definite": bool(tensor.eigenvalues.min() > 0.0),
        "major_asymmetry": quantity(tensor.major_asymmetry, "GPa"),
        "stress_asymmetry": quantity(tensor.stress_asymmetry, "GPa"),
        "reference_stress": quantity(tensor.stress.round(5).tolist(), "GPa"),
        "relaxations": tensor.relaxations,
    }


def _write_table(path, tensors: dict[str, ElasticTensor]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "I", "J", "C_GPa", "error_GPa"])
        for name, tensor in tensors.items():
            for i in range(6):
                for j in range(6):
                    writer.writerow([name, i + 1, j + 1, f"{tensor.c[i, j]:.6f}", f"{tensor.error[i, j]:.6f}"])


def _plot(path, tensors: dict[str, ElasticTensor]) -> None:
    fig, axes = new_figure(rows=1, height=3.4)
    ax = axes[0]
    keys = ("c11", "c12", "c44", "bulk_modulus")
    width = 0.8 / len(tensors)
    for k, (name, tensor) in enumerate(tensors.items()):
        cubic = tensor.cubic()
        errors = [tensor.error[0, 0], tensor.error[0, 1], tensor.error[3, 3], np.nan]
        ax.bar(np.arange(len(keys)) + k * width, [cubic[key] for key in keys], width, yerr=errors,
               label=LABELS[name], capsize=3)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, ["C11", "C12", "C44", "B"])
    ax.set_ylabel("GPa")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)


PROTOCOL = Protocol(
    name="elastic",
    description="elastic tensor of a crystal with a QM point defect by stress–strain (Voigt C, checks, MM alongside)",
    settings=ElasticSettings,
    run=run,
)
