"""``prepare``: from a PDB/mmCIF entry to a simulation-ready OpenMM System, with a report of every change.

Stages (each recorded in the report): read with checks -> clean (model, altlocs, names, additives,
waters, gaps and breaks, deposited hydrogens) -> complete (non-standard residues, missing residues
and atoms) -> hydrogens at pH -> ligand and ion parameters -> solvent -> System. Every option is
checked before the file is read, and every parameter problem is found before solvation.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from openmm import app, unit

from bioqmmm.errors import InputError, PreparationError
from bioqmmm.preparation.cleanup import CleanupOptions, clean
from bioqmmm.preparation.completion import add_hydrogens, complete, label, reproducible, to_topology
from bioqmmm.preparation.forcefields import base_files, parameterize
from bioqmmm.preparation.ligand_hydrogens import protonate_from_smiles, smiles_charges
from bioqmmm.preparation.pka import Protonation
from bioqmmm.preparation.prepared import Prepared
from bioqmmm.preparation.reading import read_source
from bioqmmm.preparation.report import Report
from bioqmmm.preparation.residues import CAPS
from bioqmmm.preparation.solvent import BOX_SHAPES, SolventOptions, solvate
from bioqmmm.preparation.sources import resolve_structure

SOLVENTS = ("explicit", "implicit", "vacuum")
NONBONDED_CUTOFF_NM = 1.0
#: Positions are rounded to the precision of the PDB/mmCIF files written (1e-4 nm), so that a saved and
#: reloaded system is the same system.
POSITION_DECIMALS = 4
DEFAULT_CACHE = Path.home() / ".cache" / "bioqmmm" / "ligands"

OPTIONS = {
    "ph": 7.0,
    "solvent": "explicit",
    "forcefield": "amber14",
    "padding_nm": 1.0,
    "box_shape": "cube",
    "ionic_strength_molar": 0.15,
    "keep_water": None,
    "keep_additives": False,
    "max_gap": 10,
    "long_gaps": "error",
    "chain_breaks": "cap",
    "qm_residues": (),
    "ligand_charges": None,
    "ligand_smiles": None,
    "forcefield_files": (),
    "cache_dir": None,
    "seed": 0,
    "protonation": "propka",
    "states": None,
}


def prepare(path: str | Path, **options) -> Prepared:
    """Prepare the structure in ``path`` (.pdb/.ent/.cif/.mmcif), or a PDB id: shipped (``1AKI``, ``2DSX``)
    or downloaded (:func:`~bioqmmm.preparation.sources.resolve_structure`).

    Options (all keywords; defaults in :data:`OPTIONS`):

    ``ph``; ``solvent`` ("explicit" TIP3P box with ions, "implicit" GBn2, "vacuum"); ``forcefield``
    ("amber14" or "charmm36"); ``padding_nm``, ``box_shape`` (cube, dodecahedron, octahedron),
    ``ionic_strength_molar`` (NaCl, plus neutralisation); ``keep_water`` (crystal waters; default:
    kept in explicit solvent only); ``keep_additives`` (crystallisation additives such as FMT, GOL,
    SO4); ``max_gap`` (longest run of missing residues that is built); ``long_gaps`` ("error" or
    "cap" with ACE/NME); ``chain_breaks`` without sequence information ("cap" or "termini");
    ``qm_residues`` (residues that will be entirely QM: ``"R47"``, ``"A:301"`` or ``"A:R47301"``;
    a ligand among them needs no MM charges); ``ligand_smiles`` ({resname: SMILES}: bond orders and
    protonation state of a ligand whose deposited hydrogens are missing or incomplete; hydrogens
    are placed from it); ``ligand_charges`` ({resname: net charge}, else from the SMILES or inferred
    from the hydrogens present); ``forcefield_files`` (user OpenMM XML, which wins over generated
    parameters; ``forcefields/*.xml`` beside the input is read too); ``cache_dir`` (GAFF2
    templates); ``seed`` (placement of built atoms, hydrogens and ions: the same input and seed give
    the same output); ``protonation`` ("propka": states from PROPKA 3 pKa values at ``ph``, or "rules":
    OpenMM's fixed model pKa values; :mod:`bioqmmm.preparation.pka`); ``states`` ({"A:GLU35": "GLH"}:
    states that win over any prediction).
    """
    opts = _check_options(options)
    path = resolve_structure(path)
    files = base_files(opts["forcefield"], opts["solvent"])
    user_files = [Path(p) for p in opts["forcefield_files"]] + sorted((path.parent / "forcefields").glob("*.xml"))
    for user in user_files:
        if not user.exists():
            raise InputError(f"force-field file {user} does not exist")
    report = Report()
    source = read_source(path)
    keep_water = opts["keep_water"] if opts["keep_water"] is not None else opts["solvent"] == "explicit"
    chains, box = clean(
        source,
        CleanupOptions(keep_water, opts["keep_additives"], opts["max_gap"], opts["long_gaps"], opts["chain_breaks"]),
        report,
    )
    lines = {r.label: source.where(r.origin or r.key) for chain in chains for r in chain.residues}
    _ligand_hydrogens(chains, dict(opts["ligand_smiles"] or {}), lines, report)
    topology, positions, variants, build = to_topology(chains, box)
    fixer = complete(topology, positions, build, report, seed=opts["seed"])
    qm_selected = list(opts["qm_residues"])
    is_qm = (lambda residue: any(_selects(s, residue) for s in qm_selected)) if qm_selected else None
    protonation = Protonation(opts["protonation"], float(opts["ph"]), dict(opts["states"] or {}), is_qm)
    modeller = add_hydrogens(fixer, variants, build, protonation, report, seed=opts["seed"])
    positions = np.array(modeller.positions.value_in_unit(unit.nanometer))
    caps = [label(r) for r in modeller.topology.residues() if r.name in CAPS]
    if caps and opts["forcefield"] != "amber14":
        raise PreparationError(f"{path}: {opts['forcefield']} in OpenMM has no ACE/NME cap residues "
                               f"({', '.join(caps)}); use forcefield='amber14' or chain_breaks='termini'")
    qm = list(opts["qm_residues"])
    unused = [s for s in qm if not any(_selects(s, r) for r in modeller.topology.residues())]
    if unused:
        raise InputError(f"qm_residues {unused} match no residue of {path}")
    setup = parameterize(
        modeller.topology,
        positions,
        files,
        user_files,
        lambda residue: any(_selects(s, residue) for s in qm),
        {**smiles_charges(opts["ligand_smiles"] or {}), **(opts["ligand_charges"] or {})},
        Path(opts["cache_dir"] or DEFAULT_CACHE),
        lambda residue: lines.get(label(residue), str(path)),
        report,
        amber=opts["forcefield"] == "amber14",
    )
    forcefield = setup.forcefield()
    _create_system(forcefield, modeller.topology, setup, path, periodic=False)  # every template, before solvation
    with reproducible(opts["seed"]):
        try:
            solvate(modeller, forcefield, setup.residue_templates(modeller.topology), _solvent_options(opts), report,
                    uncharged_net_charge=setup.qm_only_charge)
        except Exception as exc:  # OpenMM raises bare Exception/ValueError for template problems
            raise PreparationError(f"{path}: solvation failed: {exc}") from exc
    periodic = modeller.topology.getPeriodicBoxVectors() is not None
    system = _create_system(forcefield, modeller.topology, setup, path, periodic)
    recorded = {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()}
    recorded["forcefield_files"] = [str(p) for p in user_files]
    recorded["cache_dir"] = str(recorded["cache_dir"]) if recorded["cache_dir"] else None
    return Prepared(
        modeller.topology,
        system,
        np.round(modeller.positions.value_in_unit(unit.nanometer), POSITION_DECIMALS),
        report,
        setup,
        recorded,
        str(path),
    )


def _create_system(forcefield: app.ForceField, topology: app.Topology, setup, path: Path, periodic: bool):
    try:
        return forcefield.createSystem(
            topology,
            nonbondedMethod=app.PME if periodic else app.NoCutoff,
            nonbondedCutoff=NONBONDED_CUTOFF_NM * unit.nanometer,
            constraints=app.HBonds,
            rigidWater=True,
            residueTemplates=setup.residue_templates(topology),
        )
    except Exception as exc:  # OpenMM's template errors (bare Exception or ValueError) name the residue
        raise PreparationError(f"{path}: the prepared structure cannot be parameterised: {exc}") from exc


def _ligand_hydrogens(chains, smiles: dict[str, str], lines: dict[str, str], report: Report) -> None:
    ligands = [r for chain in chains for r in chain.residues if r.category == "ligand"]
    unknown = sorted(set(smiles) - {r.name for r in ligands})
    if unknown:
        raise InputError(f"ligand_smiles given for {unknown}, which are not ligands of this structure")
    rebuilt = [r.label for r in ligands
               if r.name in smiles and protonate_from_smiles(r, smiles[r.name], lines[r.label])]
    if rebuilt:
        report.change("ligand-hydrogens", "hydrogens placed from the given SMILES (its protonation state)", rebuilt)


def _selects(selector: str, residue: app.topology.Residue) -> bool:
    """Residue selector: resname, chain:number, or chain:resname+number."""
    chain, _, rest = selector.rpartition(":")
    if not chain:
        return residue.name == selector
    number = f"{residue.id}{residue.insertionCode.strip()}"
    return residue.chain.id == chain and rest in (number, f"{residue.name}{number}")


def _solvent_options(opts: dict) -> SolventOptions:
    return SolventOptions(opts["solvent"], opts["padding_nm"], opts["box_shape"], opts["ionic_strength_molar"])


def _check_options(options: dict) -> dict:
    unknown = [k for k in options if k not in OPTIONS]
    if unknown:
        hints = [f"{k!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, OPTIONS, 1)) else "")
                 for k in unknown]
        raise InputError(f"unknown preparation option(s) {', '.join(hints)}; known: {', '.join(OPTIONS)}")
    opts = {**OPTIONS, **options}
    choices = {"solvent": SOLVENTS, "box_shape": BOX_SHAPES, "long_gaps": ("error", "cap"),
               "chain_breaks": ("cap", "termini"), "protonation": ("propka", "rules")}
    for key, allowed in choices.items():
        if opts[key] not in allowed:
            raise InputError(f"option {key}={opts[key]!r} is not one of {', '.join(allowed)}")
    if not 0.0 <= float(opts["ph"]) <= 14.0:
        raise InputError(f"option ph={opts['ph']} is outside 0-14")
    if float(opts["padding_nm"]) <= 0 or float(opts["ionic_strength_molar"]) < 0 or int(opts["max_gap"]) < 0:
        raise InputError("padding_nm must be > 0, ionic_strength_molar >= 0 and max_gap >= 0")
    if isinstance(opts["qm_residues"], str):
        opts["qm_residues"] = (opts["qm_residues"],)
    if not isinstance(opts["forcefield_files"], Sequence) or isinstance(opts["forcefield_files"], str):
        opts["forcefield_files"] = (opts["forcefield_files"],)
    return opts
