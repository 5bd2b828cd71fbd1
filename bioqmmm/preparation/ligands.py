"""Force-field parameters for a ligand residue that the MM force field does not know.

Two routes, both giving OpenMM ForceField XML that loads next to ``amber14-all.xml``:

* :func:`qm_only_template` — for a residue that lies entirely in the QM region: zero charges,
  element Lennard-Jones and no bonded terms (the QM engine supplies everything inside it);
* :func:`gaff2_template` — GAFF2 atom types and AM1-BCC charges from AmberTools (``antechamber``,
  ``parmchk2``, ``sqm``), converted with ParmEd and cached on disk by residue graph and charge.

:func:`ligand_graph` turns a Topology residue into an RDKit molecule, and :func:`infer_net_charge`
perceives the net charge of a fully protonated ligand from that graph.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import parmed
from openmm import app, unit
from parmed.amber import AmberParameterSet
from parmed.openmm import OpenMMParameterSet
from rdkit import Chem, rdBase
from rdkit.Chem import rdDetermineBonds, rdMolTransforms

from bioqmmm.errors import InputError
from bioqmmm.units import KCAL_KJ

#: Net charges tried by :func:`infer_net_charge`, in order of increasing magnitude, e.
CANDIDATE_CHARGES = (0, -1, 1, -2, 2, -3, 3)

#: 1-4 scaling of amber14 (and of GAFF2: SCEE = 1.2, SCNB = 2.0); one ForceField needs one value.
COULOMB14_SCALE = 1 / 1.2
LJ14_SCALE = 0.5

#: Element -> (GAFF2 atom type, R_min/2 in Å, epsilon in kcal/mol), from the MOD4 section of
#: gaff2.dat in AmberTools (GAFF2 2.2.30): the common type of each element (sp3 C and H on C,
#: amide N, carbonyl O, thioether S, phosphate P, halogens).
GAFF2_LJ = {
    "H": ("hc", 1.4593, 0.0208),
    "C": ("c3", 1.9069, 0.1078),
    "N": ("n", 1.7852, 0.1636),
    "O": ("o", 1.7107, 0.1463),
    "S": ("ss", 1.9825, 0.2824),
    "P": ("p5", 2.0732, 0.2295),
    "F": ("f", 1.7029, 0.0832),
    "Cl": ("cl", 1.9452, 0.2638),
    "Br": ("br", 2.0275, 0.3932),
    "I": ("i", 2.1558, 0.4955),
}

#: Smallest angle (degrees) at an sp atom (two neighbours, a triple or two double bonds).
SP_MIN_ANGLE = 150.0

_TYPE_ATTRIBUTE = re.compile(r"(type|class)[1-4]?")


def _lj_nm_kj(element: str) -> tuple[float, float]:
    """(sigma nm, epsilon kJ/mol) of :data:`GAFF2_LJ`: sigma = 2 (R_min/2) / 2^(1/6)."""
    _, r_half, epsilon = GAFF2_LJ[element]
    return 2 * r_half / 2 ** (1 / 6) / 10, epsilon * KCAL_KJ


def _atom_names(residue: app.topology.Residue, label: str) -> list[str]:
    """Atom names of ``residue``; they name the template's atoms, so they must be unique."""
    names = [atom.name for atom in residue.atoms()]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"{label}: atom names must be unique within the residue; repeated: {duplicates}")
    return names


def _require_whole_molecule(residue: app.topology.Residue, label: str) -> None:
    """A ligand template covers one whole molecule: no bonds to other residues."""
    external = [f"{a.name}-{b.residue.name}{b.residue.id}:{b.name}" for a, b in residue.external_bonds()]
    if external:
        raise InputError(
            f"{label} is bonded to other residues ({', '.join(external)}); ligand templates are built "
            "for whole molecules only"
        )


def atoms_at(symbols: list[str], xyz_nm: np.ndarray) -> Chem.RWMol:
    """RDKit molecule of unbonded atoms (element symbols) with one conformer at ``xyz_nm`` (stored in Å)."""
    mol = Chem.RWMol()
    conformer = Chem.Conformer(len(symbols))
    for i, symbol in enumerate(symbols):
        mol.AddAtom(Chem.Atom(symbol))
        conformer.SetAtomPosition(i, (10.0 * xyz_nm[i]).tolist())
    mol.AddConformer(conformer, assignId=True)
    return mol


def ligand_graph(residue: app.topology.Residue, positions_nm: np.ndarray) -> Chem.Mol:
    """RDKit molecule of one Topology residue, atoms in residue order.

    Bonds are the Topology bonds inside the residue, or, when it has none, are perceived from
    distances (``rdDetermineBonds.DetermineConnectivity``). All bonds are single and no formal
    charges are set; :func:`infer_net_charge` perceives bond orders.

    Parameters
    ----------
    residue
        Residue of an OpenMM Topology; every atom needs an element.
    positions_nm
        (n_atoms, 3) positions of the whole Topology, nm.

    Returns
    -------
    Chem.Mol
        Molecule with one conformer in Å; each atom carries its PDB name and residue.
    """
    atoms = list(residue.atoms())
    for atom in atoms:
        if atom.element is None:
            raise InputError(f"{residue.name}{residue.id}:{atom.name} has no element")
    mol = atoms_at(
        [atom.element.symbol for atom in atoms], np.asarray(positions_nm, dtype=float)[[a.index for a in atoms]]
    )
    for atom, rd_atom in zip(atoms, mol.GetAtoms(), strict=True):
        rd_atom.SetNoImplicit(True)
        rd_atom.SetMonomerInfo(Chem.AtomPDBResidueInfo(atom.name, residueName=residue.name, isHeteroAtom=True))
    local = {atom.index: i for i, atom in enumerate(atoms)}
    pairs = {tuple(sorted((local[a.index], local[b.index]))) for a, b in residue.internal_bonds()}
    for i, j in sorted(pairs):
        mol.AddBond(i, j, Chem.BondType.SINGLE)
    if not pairs:
        rdDetermineBonds.DetermineConnectivity(mol)
    mol.UpdatePropertyCache(strict=False)
    return mol.GetMol()


def _implausible(mol: Chem.Mol) -> bool:
    """True for valence structures that a fully protonated, closed-shell ligand does not have.

    Rejected: radicals, formal charges beyond ±1 or on carbon (without them, e.g. neutral
    chorismate is "perceived" as a carbocation-oxonium-carboxylate), and sp atoms (two
    neighbours, a triple or two double bonds) bent below :data:`SP_MIN_ANGLE` (triple bonds in
    six-rings are how bare aromatic rings without their hydrogens get perceived).
    """
    conformer = mol.GetConformer()
    for atom in mol.GetAtoms():
        charge = atom.GetFormalCharge()
        if atom.GetNumRadicalElectrons() or abs(charge) > 1 or (charge and atom.GetAtomicNum() == 6):
            return True
        neighbours = [n.GetIdx() for n in atom.GetNeighbors()]
        orders = sorted(b.GetBondTypeAsDouble() for b in atom.GetBonds())
        if len(neighbours) == 2 and (3.0 in orders or orders == [2.0, 2.0]):
            angle = rdMolTransforms.GetAngleDeg(conformer, neighbours[0], atom.GetIdx(), neighbours[1])
            if angle < SP_MIN_ANGLE:
                return True
    return False


def infer_net_charge(mol: Chem.Mol, charges: Sequence[int] = CANDIDATE_CHARGES, label: str = "ligand") -> int:
    """Net charge (e) of a fully protonated ligand, perceived from its graph and geometry.

    Each candidate charge is tried in order with ``rdDetermineBonds.DetermineBondOrders``
    (charged fragments allowed); the first whose valence structure sanitizes and is plausible
    (closed shell, no charged carbon, no |formal charge| > 1, linear sp atoms) is returned.

    Parameters
    ----------
    mol
        Molecule with all hydrogens and a 3-D conformer, e.g. from :func:`ligand_graph`.
    charges
        Candidate net charges, e.
    label
        Name and residue id of the ligand, for the error message.

    Raises
    ------
    InputError
        If no candidate gives a plausible structure (missing hydrogens, metals, radicals,
        carbocations and the like).
    """
    with rdBase.BlockLogs():
        for charge in charges:
            trial = Chem.Mol(mol)
            try:
                rdDetermineBonds.DetermineBondOrders(trial, charge=charge, allowChargedFragments=True)
                Chem.SanitizeMol(trial)
            except ValueError:
                continue
            if not _implausible(trial):
                return charge
    raise InputError(
        f"cannot perceive the net charge of {label}: no charge in {tuple(charges)} gives a closed-shell "
        "valence structure. It appears to lack hydrogens or has chemistry that cannot be perceived; "
        "give its net charge explicitly or supply OpenMM XML for it"
    )


def qm_only_template(residue: app.topology.Residue, positions_nm: np.ndarray) -> str:
    """OpenMM ForceField XML for a residue that lies entirely in the QM region.

    The QM engine supplies every interaction inside the residue and its electrostatics with the
    MM environment, so the template carries only what the MM side still needs: the bonds (for
    residue matching and for the 1-2/1-3/1-4 exclusions of the NonbondedForce), zero charges and
    Lennard-Jones parameters for the QM-MM van der Waals. There are no bonded terms. One atom type
    per element, named ``QMONLY-<residue>-<element>``; sigma and epsilon are GAFF2's for the
    common type of the element (:data:`GAFF2_LJ`). The 1-4 scales are amber14's, so the XML
    loads together with ``amber14-all.xml``.

    Parameters
    ----------
    residue
        Residue of an OpenMM Topology, not bonded to other residues.
    positions_nm
        (n_atoms, 3) positions of the whole Topology, nm (used only to perceive bonds when the
        Topology has none inside the residue).

    Returns
    -------
    str
        ForceField XML text, e.g. for ``ForceField.loadFile(io.StringIO(xml))``.

    Raises
    ------
    InputError
        For an element outside :data:`GAFF2_LJ` (metals, etc.), repeated atom names or bonds to
        other residues.
    """
    label = f"{residue.name}{residue.id}"
    names = _atom_names(residue, label)
    _require_whole_molecule(residue, label)
    atoms = list(residue.atoms())
    missing = sorted({a.element.symbol for a in atoms if a.element is not None and a.element.symbol not in GAFF2_LJ})
    if missing:
        raise InputError(
            f"{label} contains {', '.join(missing)}, which has no Lennard-Jones parameters for QM-only "
            f"residues (elements with parameters: {', '.join(GAFF2_LJ)}); supply OpenMM XML for it"
        )
    mol = ligand_graph(residue, positions_nm)
    elements = list(dict.fromkeys(a.element for a in atoms))
    type_of = {element: f"QMONLY-{residue.name}-{element.symbol}" for element in elements}

    root = ET.Element("ForceField")
    atom_types = ET.SubElement(root, "AtomTypes")
    for element in elements:
        ET.SubElement(
            atom_types,
            "Type",
            name=type_of[element],
            attrib={"class": type_of[element]},
            element=element.symbol,
            mass=repr(element.mass.value_in_unit(unit.dalton)),
        )
    template = ET.SubElement(ET.SubElement(root, "Residues"), "Residue", name=residue.name)
    for name, atom in zip(names, atoms, strict=True):
        ET.SubElement(template, "Atom", name=name, type=type_of[atom.element], charge="0.0")
    for bond in mol.GetBonds():
        ET.SubElement(template, "Bond", atomName1=names[bond.GetBeginAtomIdx()], atomName2=names[bond.GetEndAtomIdx()])
    nonbonded = ET.SubElement(root, "NonbondedForce", coulomb14scale=repr(COULOMB14_SCALE), lj14scale=repr(LJ14_SCALE))
    ET.SubElement(nonbonded, "UseAttributeFromResidue", name="charge")
    for element in elements:
        sigma, epsilon = _lj_nm_kj(element.symbol)
        ET.SubElement(nonbonded, "Atom", type=type_of[element], sigma=repr(sigma), epsilon=repr(epsilon))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


#: sqm settings for the AM1 step of AM1-BCC: a single point at the deposited geometry (maxcyc=0).
#: antechamber's default AM1 geometry optimisation takes over 10 min for an 85-atom inhibitor here,
#: and AM1-BCC charges depend on the conformation either way; the crystal pose is the relevant one.
SQM_KEYWORDS = "qm_theory='AM1', grms_tol=0.0005, scfconv=1.d-10, ndiis_attempts=700, maxcyc=0"


def _template_key(resname: str, mol: Chem.Mol, names: list[str], net_charge: int) -> str:
    """12 hex digits of the sha256 of the residue name, atoms, bonds and net charge (no coordinates)."""
    atoms = sorted([name, atom.GetSymbol()] for name, atom in zip(names, mol.GetAtoms(), strict=True))
    bonds = sorted(sorted([names[b.GetBeginAtomIdx()], names[b.GetEndAtomIdx()]]) for b in mol.GetBonds())
    text = json.dumps([resname, atoms, bonds, net_charge, SQM_KEYWORDS])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _write_mol2(path: Path, mol: Chem.Mol, names: list[str], resname: str) -> None:
    """Tripos mol2 with the Topology's atom names, element symbols as atom types and single bonds."""
    xyz = mol.GetConformer().GetPositions()
    lines = ["@<TRIPOS>MOLECULE", resname, f"{mol.GetNumAtoms()} {mol.GetNumBonds()} 1 0 0", "SMALL", "NO_CHARGES", ""]
    lines.append("@<TRIPOS>ATOM")
    for i, (name, atom, (x, y, z)) in enumerate(zip(names, mol.GetAtoms(), xyz, strict=True), start=1):
        lines.append(f"{i:7d} {name:<6s} {x:10.4f} {y:10.4f} {z:10.4f} {atom.GetSymbol():<3s} 1 {resname} 0.0")
    lines.append("@<TRIPOS>BOND")
    for k, bond in enumerate(mol.GetBonds(), start=1):
        lines.append(f"{k:6d} {bond.GetBeginAtomIdx() + 1:5d} {bond.GetEndAtomIdx() + 1:5d} 1")
    path.write_text("\n".join(lines) + "\n")


def _amber_program(name: str, label: str) -> Path:
    """Path of an AmberTools program: on PATH, else next to the running Python (a venv's bin/)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise InputError(f"AmberTools program {name!r} not found (needed for GAFF2 parameters of {label})")
    return Path(found)


def _gaff2_dat(antechamber: Path, label: str) -> Path:
    """gaff2.dat of the AmberTools that ``antechamber`` belongs to: <prefix>/dat/leap/parm/gaff2.dat.

    ``<prefix>`` is the folder above antechamber's bin/ (a conda env, a venv with the pip
    AmberTools, or $AMBERHOME), before and after resolving symbolic links; $AMBERHOME last.
    """
    roots = [antechamber.parent.parent, antechamber.resolve().parent.parent]
    if "AMBERHOME" in os.environ:
        roots.append(Path(os.environ["AMBERHOME"]))
    candidates = [root / "dat" / "leap" / "parm" / "gaff2.dat" for root in roots]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"gaff2.dat not found for {label}; looked at {', '.join(map(str, candidates))}")


def _run(command: list[str], output: Path, workdir: Path, label: str, timeout: float) -> None:
    """Run an AmberTools program in ``workdir``; InputError unless it exits 0 and writes ``output``."""
    program = Path(command[0]).name
    try:
        result = subprocess.run(
            command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise InputError(f"{program} did not finish in {timeout} s for {label}; work files are in {workdir}") from exc
    (workdir / f"{program}.log").write_text(result.stdout)
    if result.returncode != 0 or not output.is_file():
        tail = "\n".join(result.stdout.strip().splitlines()[-12:])
        raise InputError(
            f"{program} failed for {label} (exit status {result.returncode}); work files are in {workdir}; "
            f"last lines of its output:\n{tail}"
        )


def gaff2_template(
    residue: app.topology.Residue,
    positions_nm: np.ndarray,
    net_charge: int,
    cache_dir: Path,
    label: str,
    timeout: float = 600.0,
) -> Path:
    """OpenMM ForceField XML with GAFF2 types and AM1-BCC charges for one ligand residue, cached.

    ``antechamber -c bcc -at gaff2`` types the residue and assigns charges (AM1 by ``sqm``, a single
    point at the given coordinates: :data:`SQM_KEYWORDS`), ``parmchk2 -s gaff2`` supplies missing
    parameters and ParmEd writes gaff2.dat + frcmod as XML. ``sqm`` reports the AM1 charges to
    0.001 e, so the AM1-BCC charges can miss ``net_charge`` by a few 0.001 e; the residual is
    spread evenly over the atoms. Atom names are kept; atom types and classes are prefixed
    ``GAFF2-<residue>-`` so that they cannot clash with other files; the 1-4 scales are
    amber14's (and GAFF2's), so the XML loads together with ``amber14-all.xml``.

    The file is ``cache_dir/<residue>-<key>.xml``, where ``key`` (sha256, 12 hex digits) covers
    the residue name, atom names and elements, bonds and net charge but not coordinates; an
    existing file is returned without running anything. Work files of a failed run are kept in
    a folder under ``cache_dir``.

    Parameters
    ----------
    residue
        Ligand residue of an OpenMM Topology with all hydrogens, not bonded to other residues.
    positions_nm
        (n_atoms, 3) positions of the whole Topology, nm.
    net_charge
        Net charge of the residue, e.
    cache_dir
        Folder of the cached XML files (created if needed).
    label
        Name and residue id of the ligand, for messages.
    timeout
        Wall-clock limit of each AmberTools program, s.

    Raises
    ------
    InputError
        If an AmberTools program is missing, fails or times out, or the residue is unusable
        (repeated atom names, bonds to other residues, a name unfit for a file name).
    """
    resname = residue.name
    if not re.fullmatch(r"[A-Za-z0-9_]+", resname):
        raise InputError(f"{label}: residue name {resname!r} must be letters, digits or '_'")
    names = _atom_names(residue, label)
    _require_whole_molecule(residue, label)
    mol = ligand_graph(residue, positions_nm)
    key = _template_key(resname, mol, names, net_charge)
    cache_dir = Path(cache_dir)
    xml_path = cache_dir / f"{resname}-{key}.xml"
    if xml_path.is_file():
        return xml_path

    antechamber = _amber_program("antechamber", label)
    parmchk2 = _amber_program("parmchk2", label)
    gaff2_dat = _gaff2_dat(antechamber, label)
    cache_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{resname}-{key}-", dir=cache_dir))
    _write_mol2(workdir / "input.mol2", mol, names, resname)
    typed, frcmod = workdir / "gaff2.mol2", workdir / "gaff2.frcmod"
    antechamber_args = (
        f"-i input.mol2 -fi mol2 -o {typed.name} -fo mol2 -c bcc -at gaff2 -nc {net_charge} -rn {resname} "
        "-an n -s 2 -pf y"
    )
    _run([str(antechamber), *antechamber_args.split(), "-ek", SQM_KEYWORDS], typed, workdir, label, timeout)
    parmchk2_args = f"-i {typed.name} -f mol2 -o {frcmod.name} -s gaff2"
    _run([str(parmchk2), *parmchk2_args.split()], frcmod, workdir, label, timeout)

    template = parmed.load_file(str(typed))
    if sorted(a.name for a in template.atoms) != sorted(names):
        raise InputError(f"antechamber renamed the atoms of {label}; work files are in {workdir}")
    residual = net_charge - sum(atom.charge for atom in template.atoms)  # AM1 charges come from sqm to 0.001 e
    for atom in template.atoms:
        atom.charge += residual / len(template.atoms)
    params = OpenMMParameterSet.from_parameterset(AmberParameterSet(str(gaff2_dat), str(frcmod)))
    params.residues[resname] = template
    converted = workdir / "parmed.xml"
    params.write(str(converted), write_unused=False, improper_dihedrals_ordering="amber")

    root = ET.parse(converted).getroot()
    prefix = f"GAFF2-{resname}-"
    for element in root.iter():
        for attribute, value in list(element.attrib.items()):
            if value and (_TYPE_ATTRIBUTE.fullmatch(attribute) or (element.tag == "Type" and attribute == "name")):
                element.set(attribute, prefix + value)
    nonbonded = root.find("NonbondedForce")
    nonbonded.set("coulomb14scale", repr(COULOMB14_SCALE))
    nonbonded.set("lj14scale", repr(LJ14_SCALE))
    with tempfile.NamedTemporaryFile("wb", dir=cache_dir, prefix=f".{xml_path.name}.", delete=False) as handle:
        ET.ElementTree(root).write(handle, encoding="utf-8", xml_declaration=True)
    os.replace(handle.name, xml_path)
    shutil.rmtree(workdir)
    return xml_path
