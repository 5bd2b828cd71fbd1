"""Ligand parameters: graph and net charge perception, QM-only templates, GAFF2 + AM1-BCC through AmberTools."""

from __future__ import annotations

import io
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import app, unit
from rdkit import Chem
from rdkit.Chem import AllChem

from bioqmmm.errors import InputError
from bioqmmm.preparation import ligands
from bioqmmm.preparation.ligands import gaff2_template, infer_net_charge, ligand_graph, qm_only_template

ETHANOL_ATOMS = """\
HETATM    1 C1   EOH A   1      -0.854   0.224   0.242  1.00  0.00           C
HETATM    2 C2   EOH A   1       0.387  -0.359  -0.401  1.00  0.00           C
HETATM    3 O1   EOH A   1       1.532   0.384  -0.007  1.00  0.00           O
HETATM    4 H11  EOH A   1      -1.748  -0.328  -0.065  1.00  0.00           H
HETATM    5 H12  EOH A   1      -0.975   1.276  -0.036  1.00  0.00           H
HETATM    6 H13  EOH A   1      -0.777   0.189   1.333  1.00  0.00           H
HETATM    7 H21  EOH A   1       0.528  -1.403  -0.108  1.00  0.00           H
HETATM    8 H22  EOH A   1       0.310  -0.314  -1.492  1.00  0.00           H
HETATM    9 HO1  EOH A   1       1.597   0.331   0.961  1.00  0.00           H
"""
ETHANOL_CONECT = """\
CONECT    1    2    4    5    6
CONECT    2    3    7    8
CONECT    3    9
"""
ETHANOL_BONDS = {frozenset(pair.split("-")) for pair in "C1-C2 C2-O1 C1-H11 C1-H12 C1-H13 C2-H21 C2-H22 O1-HO1".split()}

ACETATE = """\
HETATM    1 C1   ACT A   1      -0.636  -0.078  -0.001  1.00  0.00           C
HETATM    2 C2   ACT A   1       0.872   0.100   0.001  1.00  0.00           C
HETATM    3 O1   ACT A   1       1.541  -0.963  -0.122  1.00  0.00           O
HETATM    4 O2   ACT A   1       1.265   1.294   0.126  1.00  0.00           O
HETATM    5 H11  ACT A   1      -1.054   0.293   0.940  1.00  0.00           H
HETATM    6 H12  ACT A   1      -0.913  -1.130  -0.112  1.00  0.00           H
HETATM    7 H13  ACT A   1      -1.074   0.485  -0.831  1.00  0.00           H
CONECT    1    2    5    6    7
CONECT    2    3    4
"""

#: A TIP3P water 6 Å away, so that each ligand template is shown to load next to amber14/tip3p.
WATER = """\
HETATM   20  O   HOH B   2       6.000   0.000   0.000  1.00  0.00           O
HETATM   21  H1  HOH B   2       6.957   0.000   0.000  1.00  0.00           H
HETATM   22  H2  HOH B   2       5.760   0.927   0.000  1.00  0.00           H
"""

CHORISMATE = "O=C([O-])C(=C)O[C@@H]1C=CC=C(C(=O)[O-])[C@@H]1O"


def _pdb(text: str) -> tuple[app.Topology, np.ndarray]:
    pdb = app.PDBFile(io.StringIO(text + "END\n"))
    return pdb.topology, np.array(pdb.positions.value_in_unit(unit.nanometer))


def _first_residue(text: str) -> tuple[app.topology.Residue, np.ndarray]:
    topology, positions = _pdb(text)
    return next(topology.residues()), positions


def _smiles_residue(smiles: str, heavy_atoms_only: bool = False) -> tuple[app.topology.Residue, np.ndarray]:
    """A one-residue Topology without bonds (ligand_graph perceives them) from an embedded SMILES."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=7) == 0
    if heavy_atoms_only:
        mol = Chem.RemoveHs(mol)
    topology = app.Topology()
    residue = topology.addResidue("LIG", topology.addChain("A"), id="1")
    for atom in mol.GetAtoms():
        element = app.Element.getByAtomicNumber(atom.GetAtomicNum())
        topology.addAtom(f"{atom.GetSymbol()}{atom.GetIdx() + 1}", element, residue)
    return residue, mol.GetConformer().GetPositions() / 10.0


def _bond_names(mol: Chem.Mol) -> set[frozenset[str]]:
    name = [a.GetPDBResidueInfo().GetName().strip() for a in mol.GetAtoms()]
    return {frozenset((name[b.GetBeginAtomIdx()], name[b.GetEndAtomIdx()])) for b in mol.GetBonds()}


def _amber14(xml: str | Path, topology: app.Topology) -> openmm.System:
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    forcefield.loadFile(io.StringIO(xml) if isinstance(xml, str) else str(xml))
    return forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff)


def _force(system: openmm.System, kind: type) -> openmm.Force:
    return next(f for f in system.getForces() if isinstance(f, kind))


def _bonded_atoms(system: openmm.System) -> set[int]:
    """Atoms in any bond, angle or torsion term of the System."""
    atoms: set[int] = set()
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            atoms.update(a for i in range(force.getNumBonds()) for a in force.getBondParameters(i)[:2])
        elif isinstance(force, openmm.HarmonicAngleForce):
            atoms.update(a for i in range(force.getNumAngles()) for a in force.getAngleParameters(i)[:3])
        elif isinstance(force, openmm.PeriodicTorsionForce):
            atoms.update(a for i in range(force.getNumTorsions()) for a in force.getTorsionParameters(i)[:4])
    return atoms


def test_ligand_graph_keeps_residue_order_and_topology_bonds():
    residue, positions = _first_residue(ETHANOL_ATOMS + ETHANOL_CONECT)
    mol = ligand_graph(residue, positions)
    assert [a.GetSymbol() for a in mol.GetAtoms()] == [a.element.symbol for a in residue.atoms()]
    assert [a.GetPDBResidueInfo().GetName().strip() for a in mol.GetAtoms()] == [a.name for a in residue.atoms()]
    assert _bond_names(mol) == ETHANOL_BONDS
    assert all(b.GetBondType() == Chem.BondType.SINGLE for b in mol.GetBonds())
    assert np.allclose(mol.GetConformer().GetPositions(), 10.0 * positions)  # Å


def test_ligand_graph_perceives_bonds_when_the_topology_has_none():
    topology, positions = _pdb(ETHANOL_ATOMS)
    assert topology.getNumBonds() == 0
    assert _bond_names(ligand_graph(next(topology.residues()), positions)) == ETHANOL_BONDS


@pytest.mark.parametrize(
    ("smiles", "charge"),
    [
        (CHORISMATE, -2),  # neutral chorismate "perceives" as a carbocation: rejected before -2 is tried
        ("CC(=O)[O-]", -1),
        ("CCO", 0),
        ("c1ccccc1", 0),
        ("C[NH3+]", 1),
        ("c1c[nH+]c[nH]1", 1),  # -1 comes first and "perceives" as a carbanion: rejected
    ],
)
def test_infer_net_charge_of_protonated_ligands(smiles, charge):
    residue, positions = _smiles_residue(smiles)
    assert infer_net_charge(ligand_graph(residue, positions), label="LIG A:1") == charge


@pytest.mark.parametrize("smiles", [CHORISMATE, "c1ccccc1"])  # benzene's bare ring would be C#C-rich, bent
def test_infer_net_charge_without_hydrogens_is_an_error(smiles):
    residue, positions = _smiles_residue(smiles, heavy_atoms_only=True)
    with pytest.raises(InputError, match="LIG A:1") as error:
        infer_net_charge(ligand_graph(residue, positions), label="LIG A:1")
    assert "lack hydrogens" in str(error.value)
    assert "net charge" in str(error.value) and "OpenMM XML" in str(error.value)


def test_qm_only_template_loads_with_amber14():
    topology, positions = _pdb(ETHANOL_ATOMS + WATER + ETHANOL_CONECT)
    ethanol = next(topology.residues())
    system = _amber14(qm_only_template(ethanol, positions), topology)
    ligand = [a.index for a in ethanol.atoms()]
    nonbonded = _force(system, openmm.NonbondedForce)
    params = [nonbonded.getParticleParameters(i) for i in ligand]
    assert all(q.value_in_unit(unit.elementary_charge) == 0.0 for q, _, _ in params)
    carbon_sigma = 2 * 1.9069 / 2 ** (1 / 6) / 10  # gaff2.dat c3: R_min/2 = 1.9069 Å, epsilon = 0.1078 kcal/mol
    assert params[0][1].value_in_unit(unit.nanometer) == pytest.approx(carbon_sigma)
    assert params[0][2].value_in_unit(unit.kilojoule_per_mole) == pytest.approx(0.1078 * 4.184)
    assert nonbonded.getParticleParameters(9)[0].value_in_unit(unit.elementary_charge) == pytest.approx(-0.834)
    assert not _bonded_atoms(system) & set(ligand)
    exceptions = {}
    for i in range(nonbonded.getNumExceptions()):
        a, b, q, _, epsilon = nonbonded.getExceptionParameters(i)
        exceptions[frozenset((a, b))] = (
            q.value_in_unit(unit.elementary_charge**2),
            epsilon.value_in_unit(unit.kilojoule_per_mole),
        )
    name = {a.index: a.name for a in ethanol.atoms()}
    bonded = {frozenset((a.index, b.index)) for a, b in ethanol.internal_bonds()}
    assert {frozenset(name[i] for i in pair) for pair in bonded} == ETHANOL_BONDS
    assert all(exceptions[pair] == (0.0, 0.0) for pair in bonded)


def test_qm_only_template_names_an_element_without_parameters():
    residue, positions = _first_residue(
        "HETATM    1 ZN    ZN A   1       0.000   0.000   0.000  1.00  0.00          ZN\n"
    )
    with pytest.raises(InputError, match="ZN1 contains Zn"):
        qm_only_template(residue, positions)


def test_templates_refuse_a_residue_bonded_to_another(tmp_path):
    lines = ETHANOL_ATOMS.splitlines(keepends=True)
    methyl = [lines[i] for i in (0, 3, 4, 5)]  # C1 H11 H12 H13
    rest = [lines[i].replace("EOH A   1", "EOX A   2") for i in (1, 2, 6, 7, 8)]
    topology, positions = _pdb("".join(methyl + rest) + ETHANOL_CONECT)  # ethanol cut into CH3 and CH2OH
    assert [r.name for r in topology.residues()] == ["EOH", "EOX"]
    residue = next(topology.residues())
    with pytest.raises(InputError, match="EOH1 is bonded to other residues"):
        qm_only_template(residue, positions)
    with pytest.raises(InputError, match="EOH A:1 is bonded to other residues"):
        gaff2_template(residue, positions, 0, tmp_path, "EOH A:1")


def test_gaff2_template_loads_with_amber14(tmp_path):
    topology, positions = _pdb(ACETATE + WATER)
    acetate = next(topology.residues())
    path = gaff2_template(acetate, positions, -1, tmp_path, "ACT A:1")
    assert re.fullmatch(r"ACT-[0-9a-f]{12}\.xml", path.name)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # work files removed, nothing half-written
    system = _amber14(path, topology)
    ligand = [a.index for a in acetate.atoms()]
    nonbonded = _force(system, openmm.NonbondedForce)
    charges = [nonbonded.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge) for i in ligand]
    assert sum(charges) == pytest.approx(-1.0, abs=1e-4)
    assert charges[2] == charges[3] < -0.5  # equivalent carboxylate oxygens
    bonds = _force(system, openmm.HarmonicBondForce)
    bonded = {frozenset(bonds.getBondParameters(i)[:2]) for i in range(bonds.getNumBonds())}
    assert {frozenset((a.index, b.index)) for a, b in acetate.internal_bonds()} <= bonded
    assert set(ligand) <= _bonded_atoms(system)
    root = ET.parse(path).getroot()
    assert [a.get("name") for a in root.find("Residues").iter("Atom")] == [a.name for a in acetate.atoms()]
    assert all(t.get("name").startswith("GAFF2-ACT-") for t in root.iter("Type"))


def test_gaff2_charges_sum_to_the_net_charge(tmp_path):
    residue, positions = _smiles_residue("[O-]C(=O)c1ccccc1")  # antechamber's own charges sum to -1.003 e here
    root = ET.parse(gaff2_template(residue, positions, -1, tmp_path, "LIG A:1")).getroot()
    charges = [float(atom.get("charge")) for atom in root.find("Residues").iter("Atom")]
    assert len(charges) == 14
    assert sum(charges) == pytest.approx(-1.0, abs=1e-9)


def test_gaff2_template_is_cached_by_graph_and_charge(tmp_path, monkeypatch):
    residue, positions = _first_residue(ETHANOL_ATOMS + ETHANOL_CONECT)
    path = gaff2_template(residue, positions, 0, tmp_path, "EOH A:1")

    def no_programs(*args, **kwargs):
        raise AssertionError("AmberTools ran")

    monkeypatch.setattr(ligands.subprocess, "run", no_programs)
    moved = positions + np.array([0.3, -0.2, 0.1])
    assert gaff2_template(residue, moved, 0, tmp_path, "EOH A:1") == path  # coordinates are not in the key
    with pytest.raises(AssertionError, match="AmberTools ran"):
        gaff2_template(residue, positions, -2, tmp_path, "EOH A:1")  # the net charge is in it


def test_gaff2_template_quotes_a_failing_antechamber(tmp_path):
    residue, positions = _first_residue(ETHANOL_ATOMS + ETHANOL_CONECT)
    with pytest.raises(InputError, match="antechamber failed for EOH A:1") as error:
        gaff2_template(residue, positions, 1, tmp_path, "EOH A:1")  # 25 electrons
    message = str(error.value)
    assert "number of electrons is odd" in message
    workdir = Path(re.search(r"work files are in (\S+);", message).group(1))
    assert (workdir / "antechamber.log").is_file() and workdir.parent == tmp_path
    assert not list(tmp_path.glob("*.xml"))


def test_gaff2_template_without_antechamber(tmp_path, monkeypatch):
    residue, positions = _first_residue(ETHANOL_ATOMS + ETHANOL_CONECT)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(InputError, match="'antechamber' not found .* EOH A:1"):
        gaff2_template(residue, positions, 0, tmp_path, "EOH A:1")
