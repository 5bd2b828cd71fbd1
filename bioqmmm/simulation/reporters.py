"""QM/MM reporters: plain OpenMM reporters (``simulation.reporters.append(...)``).

:class:`CSVReporter` writes one resumable CSV row per report; :class:`QMMMReporter` one with the
energy components, temperature, SCF cycles, ⟨S²⟩ and timings. Its energy request evaluates the QM force at the reported
structure; the QM force caches that result, so the integrator's next step reuses it and the
report costs no extra QM calculation.
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

import openmm
from openmm import unit

from bioqmmm.errors import CalculationError

COLUMNS = (
    "step",
    "time_ps",
    "potential_kjmol",
    "qm_kjmol",
    "mm_kjmol",
    "kinetic_kjmol",
    "temperature_k",
    "scf_cycles",
    "spin_square",
    "qm_wall_s",
    "wall_per_step_s",
)


def degrees_of_freedom(system: openmm.System) -> int:
    """3 N(moving) − constraints − 3 if the centre of mass motion is removed."""
    moving = sum(1 for i in range(system.getNumParticles()) if system.getParticleMass(i).value_in_unit(unit.dalton) > 0)
    dof = 3 * moving - system.getNumConstraints()
    if any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces()):
        dof -= 3
    return dof


def kinetic_temperature(kinetic_kjmol: float, dof: int) -> float:
    """T = 2 K / (N_dof R), K, from the kinetic energy K in kJ/mol."""
    return 2 * kinetic_kjmol / (dof * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin))


class CSVReporter:
    """Append a CSV row of ``columns`` every ``interval`` steps: the energies, temperature and wall time per
    step common to every run, the rest from :meth:`fields` (subclasses).

    ``append=True`` keeps the rows already in the file (a resumed run), dropping any row past
    ``resume_step`` (written after the checkpoint the run resumes from).
    """

    columns: tuple[str, ...] = ()

    def __init__(self, path: str | Path, interval: int, system: openmm.System, *, append: bool = False,
                 resume_step: int = 0) -> None:
        self.path = Path(path)
        self.interval = int(interval)
        self._dof = degrees_of_freedom(system)
        self._handle, self._writer = open_csv(self.path, self.columns, append=append, resume_step=resume_step)
        self._clock: tuple[int, float] | None = None

    def describeNextReport(self, simulation):  # noqa: N802 (OpenMM reporter API)
        steps = self.interval - simulation.currentStep % self.interval
        return steps, False, False, False, True, False

    def fields(self, step: int, potential: float, kinetic: float) -> dict:
        """The row's columns beyond step, time, energies (kJ/mol), temperature and wall time per step."""
        raise NotImplementedError

    def report(self, simulation, state: openmm.State) -> None:
        step = simulation.currentStep
        potential = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        if not (math.isfinite(potential) and math.isfinite(kinetic)):
            raise CalculationError(f"non-finite energy at step {step} (potential {potential}, kinetic {kinetic})")
        now = time.perf_counter()
        per_step = (now - self._clock[1]) / max(step - self._clock[0], 1) if self._clock else float("nan")
        self._clock = (step, now)
        temperature = kinetic_temperature(kinetic, self._dof)
        row = {"step": step, "time_ps": state.getTime().value_in_unit(unit.picosecond), "potential_kjmol": potential,
               "kinetic_kjmol": kinetic, "temperature_k": temperature, "wall_per_step_s": per_step}
        self._writer.writerow({**row, **self.fields(step, potential, kinetic)})
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class QMMMReporter(CSVReporter):
    """Energy components, temperature, SCF cycles, ⟨S²⟩ and timings of a QMMMSystem run (columns
    :data:`COLUMNS`; kJ/mol, K, ps, s)."""

    columns = COLUMNS

    def __init__(self, path: str | Path, interval: int, qmmm, *, append: bool = False, resume_step: int = 0) -> None:
        self.qmmm = qmmm
        super().__init__(path, interval, qmmm.system, append=append, resume_step=resume_step)

    def fields(self, step: int, potential: float, kinetic: float) -> dict:
        last = self.qmmm.last_qm
        if last is None or self.qmmm.last_qm_step != step:
            raise CalculationError(f"internal error: no QM result for the reported step {step}")
        info = last.qm.info
        return {"qm_kjmol": last.energy, "mm_kjmol": potential - last.energy, "scf_cycles": info.scf_cycles,
                "spin_square": "" if info.spin_square is None else info.spin_square, "qm_wall_s": info.wall_time}


def open_csv(path: Path, columns: tuple[str, ...], *, append: bool, resume_step: int):
    """(file handle, csv.DictWriter) appending rows of ``columns`` to ``path``: a fresh file with its header, or
    (``append``) the rows up to ``resume_step`` kept, rewritten atomically so that a kill keeps the old file."""
    kept = rows_up_to(path, resume_step) if append and path.exists() else []
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(kept)
    os.replace(tmp, path)
    handle = open(path, "a", newline="")
    return handle, csv.DictWriter(handle, fieldnames=columns)


def read_rows(path: str | Path) -> list[dict[str, float]]:
    """Rows of a :class:`QMMMReporter` CSV as numbers (empty cells become NaN)."""
    with open(path, newline="") as handle:
        return [{k: float(v) if v != "" else math.nan for k, v in row.items()} for row in csv.DictReader(handle)]


def rows_up_to(path: Path, step: int) -> list[dict[str, str]]:
    """Complete rows with step <= ``step`` (a row cut short by a kill is dropped)."""
    kept = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                complete = None not in row.values() and int(float(row["step"])) <= step
            except (TypeError, ValueError):
                complete = False
            if complete:
                kept.append(row)
    return kept


def close_reporter(reporter) -> None:
    """Flush and close a reporter's file (DCDReporter and XTCReporter have no public close)."""
    close = getattr(reporter, "close", None)
    if close is not None:
        close()
        return
    for name in ("_out", "_dcd", "_xtc"):
        handle = getattr(reporter, name, None)
        if hasattr(handle, "close"):
            handle.close()


def energy_drift(times_ps, totals_kjmol, dof: int) -> tuple[float, float]:
    """Drift of the total energy as the slope of a straight-line fit, kJ/mol/ns per degree of freedom (signed),
    and the RMS fluctuation about that line (kJ/mol)."""
    import numpy as np

    times, totals = np.asarray(times_ps, dtype=float), np.asarray(totals_kjmol, dtype=float)
    fit = np.polyfit(times, totals, 1)
    return float(fit[0] * 1000.0 / dof), float((totals - np.polyval(fit, times)).std())
