"""Solvent: an explicit water box with ions, or none (implicit solvent or vacuum)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from openmm import app, unit

from bioqmmm.preparation.report import Report
from bioqmmm.units import minimum_image

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
            report: Report, uncharged_net_charge: int = 0) -> None:
    """Add the water box and ions in place (explicit), or drop the crystal cell (implicit, vacuum).

    OpenMM neutralises the charges of the force field; ``uncharged_net_charge`` (e) is charge it cannot
    see (QM-only residues carry zero MM charges): as many counter-ions replace the waters farthest
    from the solute."""
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
    if uncharged_net_charge:
        _counter_ions(modeller, uncharged_net_charge, options, report)
    after = {name: sum(r.name == name for r in modeller.topology.residues()) for name in before}
    box = np.array(modeller.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
    report.change(
        "solvent",
        f"{options.box_shape} TIP3P box ({', '.join(f'{np.linalg.norm(v):.2f}' for v in box)} nm), padding "
        f"{options.padding_nm:g} nm: {after['HOH'] - before['HOH']} waters, {after['NA'] - before['NA']} "
        f"{options.positive_ion}, {after['CL'] - before['CL']} {options.negative_ion} "
        f"({options.ionic_strength_molar:g} M plus neutralisation)",
    )


def _counter_ions(modeller: app.Modeller, charge: int, options: SolventOptions, report: Report) -> None:
    """Replace |charge| waters, the farthest from any solute atom, by ions of the opposite sign."""
    positions = np.array(modeller.getPositions().value_in_unit(unit.nanometer))
    waters = [r for r in modeller.topology.residues() if r.name == "HOH"]
    solute = [a.index for a in modeller.topology.atoms() if a.residue.name not in ("HOH", "NA", "CL")]
    box = np.array(modeller.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
    oxygens = np.array([next(a.index for a in r.atoms() if a.element.symbol == "O") for r in waters])
    delta = minimum_image(positions[oxygens][:, None, :] - positions[solute][None, :, :], box)
    nearest = np.linalg.norm(delta, axis=2).min(axis=1)
    chosen = np.argsort(-nearest, kind="stable")[: abs(charge)]
    name, element, label = ("NA", "Na", options.positive_ion) if charge < 0 else ("CL", "Cl", options.negative_ion)
    ions = app.Topology()
    chain = ions.addChain()
    for _ in chosen:
        ions.addAtom(name, app.Element.getBySymbol(element), ions.addResidue(name, chain))
    modeller.delete([waters[i] for i in chosen])
    modeller.add(ions, positions[oxygens[chosen]] * unit.nanometer)
    report.change("solvent", f"{abs(charge)} {label} in place of the farthest waters, for the net charge {charge:+d} "
                             "of the QM-only residues (their templates carry no charges)")
