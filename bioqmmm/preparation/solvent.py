"""Solvent: an explicit water box with ions, or none (implicit solvent or vacuum)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from openmm import app, unit

from bioqmmm.preparation.report import Report

#: Water molecules per nm^3 above which an existing periodic box counts as already solvated
#: (bulk water 33.4 nm^-3; a crystal's waters fill its cell at ~1-3 nm^-3).
SOLVATED_WATER_DENSITY = 15.0

BOX_SHAPES = ("cube", "dodecahedron", "octahedron")


@dataclass(frozen=True)
class SolventOptions:
    kind: str = "explicit"  # "explicit", "implicit", "vacuum"
    padding_nm: float = 1.0
    box_shape: str = "cube"
    ionic_strength_molar: float = 0.15
    positive_ion: str = "Na+"
    negative_ion: str = "Cl-"


def already_solvated(topology: app.Topology) -> bool:
    """A periodic box already filled with water (e.g. a prepared structure read back)."""
    box = topology.getPeriodicBoxVectors()
    if box is None:
        return False
    volume = abs(np.linalg.det(np.array(box.value_in_unit(unit.nanometer))))
    waters = sum(r.name == "HOH" for r in topology.residues())
    return waters / volume >= SOLVATED_WATER_DENSITY


def solvate(modeller: app.Modeller, forcefield: app.ForceField, templates: dict, options: SolventOptions,
            report: Report) -> None:
    """Add the water box and ions in place (explicit), or drop the crystal cell (implicit, vacuum)."""
    if options.kind != "explicit":
        modeller.topology.setPeriodicBoxVectors(None)
        return
    if already_solvated(modeller.topology):
        report.decide("solvent", "structure is already in a periodic water box: box and solvent kept")
        return
    before = {name: sum(r.name == name for r in modeller.topology.residues()) for name in ("HOH", "NA", "CL")}
    modeller.addSolvent(
        forcefield,
        model="tip3p",
        padding=options.padding_nm * unit.nanometer,
        boxShape=options.box_shape,
        ionicStrength=options.ionic_strength_molar * unit.molar,
        positiveIon=options.positive_ion,
        negativeIon=options.negative_ion,
        neutralize=True,
        residueTemplates=templates,
    )
    after = {name: sum(r.name == name for r in modeller.topology.residues()) for name in before}
    box = np.array(modeller.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
    report.change(
        "solvent",
        f"{options.box_shape} TIP3P box ({', '.join(f'{np.linalg.norm(v):.2f}' for v in box)} nm), padding "
        f"{options.padding_nm:g} nm: {after['HOH'] - before['HOH']} waters, {after['NA'] - before['NA']} "
        f"{options.positive_ion}, {after['CL'] - before['CL']} {options.negative_ion} "
        f"({options.ionic_strength_molar:g} M plus neutralisation)",
    )
