"""What an adaptive run writes as it goes: energies and region size (``adaptive.csv``), exchanges
(``exchanges.csv``)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from bioqmmm.adaptive.hamiltonian import AdaptiveHamiltonian
from bioqmmm.errors import CalculationError
from bioqmmm.simulation.reporters import CSVReporter, rows_up_to

COLUMNS = ("step", "time_ps", "potential_kjmol", "kinetic_kjmol", "total_kjmol", "temperature_k", "qm_groups",
           "buffer_groups", "dropped_groups", "evaluations", "wall_per_step_s")
EXCHANGE_COLUMNS = ("step", "group", "residue", "before", "after", "r_nm")


class AdaptiveReporter(CSVReporter):
    """A row of :data:`COLUMNS` every ``interval`` steps (kJ/mol, K, ps, s; groups counted at the reported
    structure, evaluations since the last row); the exchanges logged since then go to ``exchanges``
    (:data:`EXCHANGE_COLUMNS`). ``labels``: a residue label per group."""

    columns = COLUMNS

    def __init__(self, path: str | Path, exchanges: str | Path, interval: int, hamiltonian: AdaptiveHamiltonian,
                 labels: list[str], *, append: bool = False, resume_step: int = 0) -> None:
        self.hamiltonian, self.labels = hamiltonian, labels
        super().__init__(path, interval, hamiltonian.system, append=append, resume_step=resume_step)
        self.exchanges_path = Path(exchanges)
        kept = rows_up_to(self.exchanges_path, resume_step) if append and self.exchanges_path.exists() else []
        tmp = self.exchanges_path.with_name(self.exchanges_path.name + ".tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=EXCHANGE_COLUMNS)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, self.exchanges_path)
        self._exchange_handle = open(self.exchanges_path, "a", newline="")
        self._exchange_writer = csv.DictWriter(self._exchange_handle, fieldnames=EXCHANGE_COLUMNS)
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
