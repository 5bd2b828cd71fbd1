"""Hydrogens of a ligand from its SMILES: bond orders and protonation state are the user's, coordinates the file's.

A crystal ligand comes without hydrogens, or with riding hydrogens that miss the acidic and
amide protons; its bond orders cannot be read from heavy-atom coordinates alone. The chemistry is
therefore given as a SMILES string (its charges fix the protonation state, e.g. ``C(=O)[O-]``):
the heavy atoms are matched to it (RDKit ``AssignBondOrdersFromTemplate``), and hydrogens are placed
on the deposited heavy atoms. A ligand whose hydrogens already equal the SMILES' is left as it is.
"""

from __future__ import annotations

import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem, rdDetermineBonds

from bioqmmm.errors import PreparationError
from bioqmmm.preparation.cleanup import DraftAtom, DraftResidue
from bioqmmm.preparation.ligands import atoms_at


def smiles_charges(smiles: dict[str, str]) -> dict[str, int]:
    """Net charge (sum of formal charges) of each residue name's SMILES."""
    charges = {}
    for name, text in smiles.items():
        mol = Chem.MolFromSmiles(text)
        if mol is None:
            raise PreparationError(f"SMILES {text!r} given for {name} cannot be parsed")
        charges[name] = Chem.GetFormalCharge(mol)
    return charges


def _heavy_mol(residue: DraftResidue) -> Chem.Mol:
    mol = atoms_at([a.element for a in residue.heavy], np.array([a.xyz for a in residue.heavy]))
    rdDetermineBonds.DetermineConnectivity(mol)
    return mol.GetMol()


def protonate_from_smiles(residue: DraftResidue, smiles: str, where: str) -> bool:
    """Replace the hydrogens of ``residue`` by those implied by ``smiles``; False if they already match."""
    template = Chem.MolFromSmiles(smiles)
    if template is None:
        raise PreparationError(f"{where}: SMILES {smiles!r} given for {residue.label} cannot be parsed")
    expected_h = Chem.AddHs(template).GetNumAtoms() - template.GetNumAtoms()
    present_h = len(residue.atoms) - len(residue.heavy)
    if template.GetNumAtoms() != len(residue.heavy):
        raise PreparationError(f"{where}: SMILES for {residue.label} has {template.GetNumAtoms()} heavy atoms, the "
                               f"residue {len(residue.heavy)}")
    if present_h == expected_h:
        return False
    try:
        mol = AllChem.AssignBondOrdersFromTemplate(template, _heavy_mol(residue))
    except ValueError as exc:
        raise PreparationError(f"{where}: the heavy atoms of {residue.label} do not match SMILES {smiles!r} "
                               f"(connectivity perceived from the coordinates): {exc}") from exc
    for atom in mol.GetAtoms():  # charges and bond orders now come from the template; hydrogens are implicit
        atom.SetNoImplicit(False)
        atom.SetNumRadicalElectrons(0)
    Chem.SanitizeMol(mol)
    mol = Chem.AddHs(mol, addCoords=True)
    xyz = mol.GetConformer().GetPositions() / 10.0
    taken = {a.name for a in residue.heavy}
    names = (f"H{i}" for i in range(1, 1000) if f"H{i}" not in taken)
    hydrogens = [DraftAtom(next(names), "H", np.array(xyz[a.GetIdx()])) for a in mol.GetAtoms() if a.GetSymbol() == "H"]
    residue.atoms = residue.heavy + hydrogens
    return True
