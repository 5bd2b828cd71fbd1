"""``protocol: vibrations`` in a protocol file: QM/MM normal modes, IR spectrum and thermochemistry.

1. With ``optimize`` the structure is first minimised with microiterations
   (:mod:`bioqmmm.protocols.optimize`; the environment beyond ``environment_radius_nm`` frozen), and the
   environment is then relaxed once more to ``mm_tolerance_kjmol_nm`` so that the environment Hessian of
   the MM model is taken at its minimum.
2. For each method in ``hessians`` (``condensed``, ``partial``, ``full``; :mod:`bioqmmm.vibrations.active`)
   the Hessian of the active block (QM atoms plus MM atoms within ``active_radius_nm``), its normal modes
   (``isotopes`` override masses), IR intensities and quasi-RRHO thermochemistry.
3. Files per method: ``frequencies_<method>.csv``, ``modes_<method>.molden`` (Molden/Jmol/Avogadro);
   ``spectrum.png`` (the methods' IR spectra, Lorentzian-broadened), ``optimized.pdb``, ``result.json``.

A rerun resumes: the minimisation from its checkpoint, each Hessian from ``hessian_<method>.pkl``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from openmm import app

from bioqmmm.errors import InputError
from bioqmmm.protocols.context import RunContext
from bioqmmm.protocols.optimize import OptimizeSettings, run_optimization
from bioqmmm.protocols.registry import Protocol
from bioqmmm.protocols.settings import Declared, FieldError, setting
from bioqmmm.region.selection import resolve_qm_atoms
from bioqmmm.results import new_figure, quantity, write_pdb_models, write_results
from bioqmmm.simulation.checkpoint import staged
from bioqmmm.simulation.environment import qm_charges_on_atoms, relax_environment
from bioqmmm.vibrations.active import (
    ENVIRONMENT_MODELS,
    METHODS,
    VibrationalAnalysis,
    active_atoms,
    active_hessian,
    analyse,
    environment_atoms,
)
from bioqmmm.vibrations.analysis import write_molden

#: Half width at half maximum of the Lorentzians of ``spectrum.png``, cm⁻¹.
SPECTRUM_HWHM = 10.0


@dataclass(frozen=True)
class IsotopeSection(Declared):
    """Atoms (an mdtraj selection) given another mass, e.g. deuterium 2.014101778 amu."""

    atoms: str = setting(doc="mdtraj selection of the atoms")
    mass: float = setting(doc="their mass", unit="amu", check="positive")


@dataclass(frozen=True)
class VibrationsSettings(Declared):
    """QM/MM vibrational analysis (module docstring)."""

    hessians: tuple[Literal[METHODS], ...] = setting(("condensed",), doc="condensed, partial and/or full")
    active_radius_nm: float = setting(0.0, doc="MM atoms this close to the QM region join the active block",
                                      check="non_negative")
    environment_radius_nm: float = setting(0.5, doc="atoms this close to the QM region are the flexible environment",
                                           check="non_negative")
    environment_hessian: Literal[ENVIRONMENT_MODELS] = setting(
        "mm", doc="condensed: environment products of the mm model (fixed QM charges) or of qmmm")
    optimize: bool = setting(True, doc="minimise first (frequencies need a stationary point)")
    fmax_kjmol_nm: float = setting(2.0, doc="minimisation criterion on the inner atoms", check="positive")
    max_steps: int = setting(500, doc="minimisation steps at most", check="positive_int")
    mm_tolerance_kjmol_nm: float = setting(0.1, doc="RMS force of the final environment relaxation",
                                           check="positive")
    isotopes: tuple[IsotopeSection, ...] = setting((), doc="mass changes (default masses: most abundant isotopes)")
    temperature_k: float = setting(298.15, doc="thermochemistry temperature", check="positive")
    quasi_harmonic_cutoff: float | None = setting(100.0, doc="Grimme's quasi-RRHO ν₀ (null: plain RRHO)",
                                                  unit="cm⁻¹", check="positive")

    def check(self) -> None:
        if not self.hessians:
            raise FieldError("hessians", f"give at least one of {', '.join(METHODS)}")
        if len(set(self.hessians)) != len(self.hessians):
            raise FieldError("hessians", "a method is listed twice")
        if self.environment_radius_nm <= self.active_radius_nm and "partial" not in self.hessians:
            raise FieldError("environment_radius_nm", "must exceed active_radius_nm: no environment would be left")


def isotope_masses(topology: app.Topology, isotopes) -> dict[int, float]:
    """Atom index → mass (amu) from the ``isotopes`` sections; a selection matching nothing is an error."""
    masses: dict[int, float] = {}
    for section in isotopes:
        atoms = resolve_qm_atoms(topology, section.atoms)
        if not atoms:
            raise InputError(f"isotopes: {section.atoms!r} selects no atom")
        masses.update({int(a): section.mass for a in atoms})
    return masses


def run(context: RunContext, settings: VibrationsSettings) -> dict:
    """The ``vibrations`` protocol (serial)."""
    qmmm, out, box = context.qmmm, context.output, context.box
    positions = np.asarray(context.positions, dtype=float)
    masses = isotope_masses(qmmm.topology, settings.isotopes)
    figures: dict[str, Any] = {**context.record}
    if settings.optimize:
        outcome = run_optimization(
            qmmm, positions, OptimizeSettings(fmax_kjmol_nm=settings.fmax_kjmol_nm, max_steps=settings.max_steps,
                                              freeze_beyond_nm=settings.environment_radius_nm or None,
                                              active_radius_nm=settings.active_radius_nm, energy_change_kjmol=0.01),
            out / "optimization", box=box, platform=context.platform, progress=context.progress,
            identity=context.identity, poll=context.poll)
        positions = outcome.positions
        figures["optimization"] = outcome.figures()
    atoms = active_atoms(qmmm, positions, settings.active_radius_nm)
    environment = environment_atoms(qmmm, positions, atoms, settings.environment_radius_nm)
    if len(environment):
        qmmm.energy_and_forces(positions, box)
        frozen = np.setdiff1d(np.arange(len(positions)), environment)
        positions, _ = relax_environment(qmmm, positions, qm_charges=qm_charges_on_atoms(qmmm), frozen=frozen,
                                         tolerance=settings.mm_tolerance_kjmol_nm, box=box, platform=context.platform)
    _, forces = qmmm.energy_and_forces(positions, box)
    figures["max_force_active"] = quantity(float(np.linalg.norm(forces[atoms], axis=1).max()), "kJ/mol/nm")
    figures["active_atoms"], figures["environment_atoms"] = len(atoms), len(environment)
    write_pdb_models(out / "optimized.pdb", qmmm.topology, [positions], box, centre_atoms=qmmm.qm_atoms)
    files = ["optimized.pdb"]
    analyses: dict[str, VibrationalAnalysis] = {}
    for method in settings.hessians:
        hessian = staged(out / f"hessian_{method}.pkl", context.identity, lambda method=method: active_hessian(
            qmmm, positions, atoms, environment, method=method, environment_model=settings.environment_hessian,
            box=box))
        analyses[method] = analyse(qmmm, positions, hessian, masses=masses, temperature=settings.temperature_k,
                                   quasi_harmonic_cutoff=settings.quasi_harmonic_cutoff)
        figures[method] = method_figures(analyses[method])
        files += write_modes(out, method, qmmm.topology, positions, analyses[method])
    _plot_spectra(out / "spectrum.png", analyses)
    files.append("spectrum.png")
    return write_results(out, "vibrations", {**figures, "files": sorted(files + ["result.json", "summary.txt"])})


def method_figures(analysis: VibrationalAnalysis) -> dict[str, Any]:
    """Key figures of one Hessian route for ``result.json``."""
    modes, thermo, hessian = analysis.modes, analysis.thermochemistry, analysis.hessian
    return {
        "modes": len(modes.frequencies),
        "imaginary_frequencies": quantity(modes.imaginary.round(1).tolist(), "cm^-1"),
        "highest_frequencies": quantity(modes.frequencies[-3:].round(1).tolist(), "cm^-1"),
        "zero_point_energy": quantity(thermo.zpe, "kJ/mol"),
        "vibrational_free_energy": quantity(thermo.free_energy, "kJ/mol"),
        "vibrational_entropy": quantity(thermo.entropy, "J/mol/K"),
        "qmmm_evaluations": hessian.qmmm_evaluations,
        "environment_products": hessian.environment_products,
        "seconds": quantity(hessian.seconds, "s"),
    }


def write_modes(out: Path, name: str, topology: app.Topology, positions: np.ndarray,
                analysis: VibrationalAnalysis) -> list[str]:
    """``frequencies_<name>.csv`` and ``modes_<name>.molden`` of ``analysis``; returns the file names."""
    modes, atoms = analysis.modes, analysis.hessian.atoms
    elements = [atom.element for atom in topology.atoms()]
    symbols = [elements[i].symbol if elements[i] is not None else "X" for i in atoms]
    write_molden(out / f"modes_{name}.molden", symbols, np.asarray(positions)[atoms], modes)
    intensities = modes.intensities if modes.intensities is not None else np.full(len(modes.frequencies), np.nan)
    with open(out / f"frequencies_{name}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mode", "wavenumber_cm", "ir_intensity_km_mol", "reduced_mass_amu"])
        for k, (nu, ir, mu) in enumerate(zip(modes.frequencies, intensities, modes.reduced_masses, strict=True)):
            writer.writerow([k + 1, f"{nu:.2f}", f"{ir:.3f}", f"{mu:.4f}"])
    return [f"frequencies_{name}.csv", f"modes_{name}.molden"]


def _plot_spectra(path: Path, analyses: dict[str, VibrationalAnalysis]) -> None:
    fig, (axis,) = new_figure()
    top = max(float(a.modes.frequencies.max()) for a in analyses.values()) + 200
    grid = np.linspace(0, top, 4000)
    for method, analysis in analyses.items():
        modes = analysis.modes
        weights = modes.intensities if modes.intensities is not None else np.ones(len(modes.frequencies))
        real = modes.frequencies > 0
        curve = (weights[real, None] * SPECTRUM_HWHM / np.pi
                 / ((grid[None] - modes.frequencies[real, None]) ** 2 + SPECTRUM_HWHM**2)).sum(axis=0)
        axis.plot(grid, curve, label=f"{method} ({real.sum()} real modes)")
    axis.set_xlabel("wavenumber / cm$^{-1}$")
    axis.set_ylabel("IR absorbance (km/mol per cm$^{-1}$)")
    axis.legend(fontsize="small")
    fig.savefig(path, dpi=120)


PROTOCOL = Protocol("vibrations", "QM/MM normal modes (condensed, partial or full Hessian), IR, thermochemistry",
                    VibrationsSettings, run, length_keys=("max_steps",))
