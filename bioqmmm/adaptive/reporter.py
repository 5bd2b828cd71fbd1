"""What an adaptive run writes as it goes: energies and region size (``adaptive.csv``), exchanges
(``exchanges.csv``), the trigger's scores and decisions (``trigger.csv``)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from bioqmmm.adaptive.hamiltonian import AdaptiveHamiltonian
from bioqmmm.adaptive.trigger import Score
from bioqmmm.errors import CalculationError
from bioqmmm.results import new_figure
from bioqmmm.simulation.reporters import CSVReporter, degrees_of_freedom, open_csv

COLUMNS = ("step", "time_ps", "potential_kjmol", "kinetic_kjmol", "total_kjmol", "temperature_k", "qm_groups",
           "buffer_groups", "dropped_groups", "evaluations", "wall_per_step_s")
EXCHANGE_COLUMNS = ("step", "group", "residue", "before", "after", "r_nm")
TRIGGER_COLUMNS = ("step", "candidate", "stress", "fukui", "score", "in_region", "action")


class AdaptiveReporter(CSVReporter):
    """A row of :data:`COLUMNS` every ``interval`` steps (kJ/mol, K, ps, s; groups counted at the reported
    structure, evaluations since the last row); the exchanges logged since then go to ``exchanges``
    (:data:`EXCHANGE_COLUMNS`). ``labels``: a residue label per group."""

    columns = COLUMNS

    def __init__(self, path: str | Path, exchanges: str | Path, interval: int, hamiltonian: AdaptiveHamiltonian,
                 labels: list[str], *, append: bool = False, resume_step: int = 0) -> None:
        self.hamiltonian, self.labels = hamiltonian, labels
        super().__init__(path, interval, hamiltonian.system, append=append, resume_step=resume_step)
        self._exchange_handle, self._exchange_writer = open_csv(Path(exchanges), EXCHANGE_COLUMNS, append=append,
                                                                resume_step=resume_step)
        self.follow(hamiltonian)

    def follow(self, hamiltonian: AdaptiveHamiltonian) -> None:
        """Report on ``hamiltonian`` from now on (the QM region changed and with it the Hamiltonian)."""
        self.hamiltonian = hamiltonian
        self._dof = degrees_of_freedom(hamiltonian.system)
        self._logged = len(hamiltonian.exchanges)
        self._evaluations = hamiltonian.evaluations

    def fields(self, step: int, potential: float, kinetic: float) -> dict:
        weights = self.hamiltonian.last
        if weights is None or self.hamiltonian.last_step != step:
            raise CalculationError(f"internal error: no adaptive partition for the reported step {step}")
        for exchange in self.hamiltonian.exchanges[self._logged:]:
            self._exchange_writer.writerow({"step": exchange.step, "group": exchange.group,
                                            "residue": self.labels[exchange.group], "before": exchange.before,
                                            "after": exchange.after, "r_nm": exchange.r_nm})
        self._exchange_handle.flush()
        self._logged = len(self.hamiltonian.exchanges)
        evaluations, self._evaluations = self.hamiltonian.evaluations - self._evaluations, self.hamiltonian.evaluations
        return {"total_kjmol": potential + kinetic, "qm_groups": len(weights.inner),
                "buffer_groups": len(weights.buffer), "dropped_groups": len(weights.dropped),
                "evaluations": evaluations}

    def close(self) -> None:
        super().close()
        self._exchange_handle.close()


def read_exchanges(path: str | Path) -> list[dict]:
    """Rows of ``exchanges.csv``: step and group as integers, r_nm as a float, the rest as text."""
    with open(path, newline="") as handle:
        return [{**row, "step": int(row["step"]), "group": int(row["group"]), "r_nm": float(row["r_nm"])}
                for row in csv.DictReader(handle)]


class TriggerLog:
    """``trigger.csv``: at every check, one row per candidate — its stress, Fukui index and score, whether it
    is in the region after the check, and ``grow``/``shrink`` when that changed."""

    def __init__(self, path: str | Path, *, append: bool = False, resume_step: int = 0) -> None:
        self._handle, self._writer = open_csv(Path(path), TRIGGER_COLUMNS, append=append, resume_step=resume_step)

    def write(self, step: int, scores: Sequence[Score], before: frozenset[str], after: frozenset[str]) -> None:
        for score in scores:
            was, now = score.candidate in before, score.candidate in after
            self._writer.writerow({"step": step, "candidate": score.candidate, "stress": score.stress,
                                   "fukui": score.fukui, "score": score.score, "in_region": int(now),
                                   "action": "" if was == now else ("grow" if now else "shrink")})
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def read_trigger(path: str | Path) -> list[dict]:
    """Rows of ``trigger.csv`` with numbers as numbers."""
    with open(path, newline="") as handle:
        return [{**row, "step": int(row["step"]), "stress": float(row["stress"]), "fukui": float(row["fukui"]),
                 "score": float(row["score"]), "in_region": int(row["in_region"])} for row in csv.DictReader(handle)]


def plot_trigger(rows: list[dict], path: Path, grow: float, shrink: float) -> None:
    """Each candidate's score against the step, the growth and shrink thresholds, and region changes."""
    fig, (axis,) = new_figure(1, 3.0)
    for name in dict.fromkeys(r["candidate"] for r in rows):
        mine = [r for r in rows if r["candidate"] == name]
        axis.plot([r["step"] for r in mine], [r["score"] for r in mine], marker="o", markersize=2, label=name)
        for r in mine:
            if r["action"]:
                axis.annotate(r["action"], (r["step"], r["score"]), fontsize="x-small")
    axis.axhline(grow, color="grey", ls="--", lw=0.8)
    axis.axhline(shrink, color="grey", ls=":", lw=0.8)
    axis.set_xlabel("step")
    axis.set_ylabel("S = a σ + b f")
    axis.legend(fontsize="small")
    fig.savefig(path, dpi=120)
