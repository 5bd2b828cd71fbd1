"""Preparation of real entries (shipped 1AKI and 2DSX, ../shared/data/pdb, openmmtools' T4 lysozyme L99A complex).

Each result must build an OpenMM System that minimises without NaN, its report must name the fixes
the entry needs, and preparing the written structure again must change nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openmm
import openmmtools
import pytest
from conftest import shared_pdb
from openmm import app, unit

from bioqmmm import prepare
from bioqmmm.preparation.sources import SHIPPED

#: RXP470.1 at pH 7 (phosphinate, two carboxylates deprotonated: -3), from the HETNAM of 4GQL:
#: N-[(2S)-3-[(S)-(4-bromophenyl)(hydroxy)phosphoryl]-2-{[3-(3'-chlorobiphenyl-4-yl)-1,2-oxazol-5-yl]methyl}
#: propanoyl]-L-alpha-glutamyl-L-alpha-glutamine (deposited as an iso-glutamine: side-chain acid, C-terminal amide).
R47 = (
    "[O-]P(=O)(c1ccc(Br)cc1)C[C@@H](Cc1cc(no1)-c1ccc(cc1)-c1cccc(Cl)c1)C(=O)N[C@@H](CCC(=O)[O-])"
    "C(=O)N[C@@H](CCC(=O)[O-])C(N)=O"
)
T4_COMPLEX = Path(openmmtools.__file__).parent / "data" / "T4-lysozyme-L99A-implicit" / "complex.pdb"

CASES = {
    "4GQL.pdb": {"ligand_smiles": {"R47": R47}},
    "1VFB.cif": {},
    "cm_md_ccpbiosim.pdb": {},
    "2PVB.pdb": {},
    "1DQJ_ABBind_prepared.pdb": {},
    "1AKI": {"solvent": "explicit", "padding_nm": 0.8},  # shipped in bioqmmm/data (the others: ../shared only)
    "2DSX": {},
}


def _minimise(prepared) -> tuple[float, float]:
    context = openmm.Context(prepared.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(prepared.positions)
    before = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 30)
    state = context.getState(getEnergy=True, getPositions=True)
    assert np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)).all()
    return before, state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


@pytest.fixture(scope="module")
def prepared_cases(tmp_path_factory):
    """Each case prepared once (vacuum unless stated), with its output folder."""
    cache = tmp_path_factory.mktemp("ligands")

    def run(name: str):
        path = T4_COMPLEX if name == "T4" else name if name in SHIPPED else shared_pdb(name)
        options = {"solvent": "vacuum", "cache_dir": cache, **CASES.get(name, {})}
        prepared = prepare(path, **options)
        out = tmp_path_factory.mktemp(name.split(".")[0])
        prepared.save(out)
        return prepared, out, options

    return run


@pytest.mark.parametrize("name", [name if name in SHIPPED or name == "T4" else  # T4: openmmtools' own file
                                  pytest.param(name, marks=pytest.mark.shared_data) for name in [*CASES, "T4"]])
def test_real_entry_prepares_minimises_and_reruns_unchanged(prepared_cases, name):
    prepared, out, options = prepared_cases(name)
    before, after = _minimise(prepared)
    assert np.isfinite(after) and after < before
    again = prepare(out / "structure.pdb", **options)
    assert again.report.changes == [], "\n".join(e.text() for e in again.report.changes)
    assert again.topology.getNumAtoms() == prepared.topology.getNumAtoms()


def _changes(prepared, kind):
    return [e for e in prepared.report.changes if e.kind == kind]


def _decisions(prepared, kind):
    return [e for e in prepared.report.decisions if e.kind == kind]


@pytest.mark.shared_data
def test_4gql_metals_ligand_altlocs_and_riding_hydrogens(prepared_cases):
    prepared, _, _ = prepared_cases("4GQL.pdb")
    ions = sorted(a.element.symbol for a in prepared.topology.atoms() if len(list(a.residue.atoms())) == 1)
    assert ions == ["Ca", "Ca", "Ca", "Zn", "Zn"]
    assert any(e.residues == ("A:R47306",) for e in _changes(prepared, "altloc"))  # the ligand's two conformers
    assert _changes(prepared, "ligand-hydrogens")[0].residues == ("A:R47306",)
    assert "net charge -3" in _decisions(prepared, "ligand-parameters")[0].detail
    zinc_his = [e for e in _decisions(prepared, "protonation") if "binds Zn" in e.detail]
    assert {e.residues[0] for e in zinc_his} >= {"A:HIS218", "A:HIS222", "A:HIS228"}  # catalytic zinc ligands
    hydrogens = sum(a.element == app.element.hydrogen for a in prepared.topology.atoms())
    added = int(_changes(prepared, "hydrogens-added")[0].detail.split()[1])
    assert hydrogens > 1000 and added < 50  # complete riding hydrogens are kept, the few incomplete rebuilt


@pytest.mark.shared_data
def test_cm_chains_named_and_amber_histidines_kept(prepared_cases):
    prepared, _, _ = prepared_cases("cm_md_ccpbiosim.pdb")
    assert "blank chain ids set to A, B, C, D" in _changes(prepared, "chain-ids")[0].detail
    assert "net charge -2" in _decisions(prepared, "ligand-parameters")[0].detail  # chorismate dianion
    source = shared_pdb("cm_md_ccpbiosim.pdb").read_text().splitlines()
    amber = {line[17:20] for line in source if line.startswith("ATOM") and line[17:20] in ("HID", "HIE", "HIP")}
    chosen = {e.detail.split()[0] for e in _decisions(prepared, "protonation")}
    assert amber and amber <= chosen


@pytest.mark.shared_data
def test_1vfb_deposited_hydrogens_and_disulfides(prepared_cases):
    prepared, _, _ = prepared_cases("1VFB.cif")
    assert len(_changes(prepared, "hydrogens-stripped")[0].residues) > 300  # the old partial polar-H set
    bonds = {tuple(sorted((int(a.residue.id), int(b.residue.id)))) + (a.residue.chain.id,)
             for a, b in prepared.topology.bonds()
             if a.name == "SG" and b.name == "SG"}
    assert len(bonds) == len(_decisions(prepared, "disulfide")) == 6
    assert (30, 115, "C") in bonds  # lysozyme Cys30-Cys115


@pytest.mark.shared_data
def test_2pvb_acetyl_cap_ions_and_additives(prepared_cases):
    prepared, _, _ = prepared_cases("2PVB.pdb")
    first = next(prepared.topology.residues())
    assert first.name == "ACE" and any(b[0].residue is first and b[1].residue.name == "SER" for b in
                                       prepared.topology.bonds())
    removed = _changes(prepared, "additives-removed")[0].residues
    assert sorted(removed) == ["A:FMT150", "A:FMT151", "A:NH4200"]
    assert sum(a.element == app.element.calcium for a in prepared.topology.atoms()) == 2


@pytest.mark.shared_data
def test_1dqj_ter_records_inside_chain_h_are_ignored(prepared_cases):
    prepared, _, _ = prepared_cases("1DQJ_ABBind_prepared.pdb")
    merged = _changes(prepared, "chain-merged")
    assert len(merged) == 7 and all(e.residues[0].startswith("H:") for e in merged)
    assert sorted(c.id for c in prepared.topology.chains() if len(list(c.residues())) > 100) == ["C", "H", "L"]
    assert len(_changes(prepared, "altloc")) == 11
