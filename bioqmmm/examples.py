"""Small example systems built from data shipped with the package (amber14 + TIP3P).

Used by ``bioqmmm quickstart``, the tests and the benchmarks. Positions in nm.
"""

from __future__ import annotations

import io
from importlib import resources

import numpy as np
import openmm
from openmm import app, unit

FORCEFIELD_FILES = ("amber14-all.xml", "amber14/tip3p.xml")


def forcefield() -> app.ForceField:
    """Amber14 protein force field with TIP3P water (OpenMM's bundled files)."""
    return app.ForceField(*FORCEFIELD_FILES)


def _create(modeller: app.Modeller, periodic: bool, nonbonded_cutoff: float,
            field: app.ForceField | None = None, rigid: bool = True) -> openmm.System:
    """The System: X–H bonds constrained and water rigid, or (``rigid`` False) every bond flexible."""
    method = app.PME if periodic else app.NoCutoff
    kwargs = {"nonbondedCutoff": nonbonded_cutoff * unit.nanometer} if periodic else {}
    return (field or forcefield()).createSystem(
        modeller.topology, nonbondedMethod=method, constraints=app.HBonds if rigid else None, rigidWater=rigid,
        **kwargs
    )


def _shipped(name: str) -> app.PDBFile:
    with resources.as_file(resources.files("bioqmmm") / "data" / name) as path:
        return app.PDBFile(str(path))


def _solvated(pdb: app.PDBFile, field: app.ForceField, box_size: float | None, nonbonded_cutoff: float,
              rigid: bool = True):
    modeller = app.Modeller(pdb.topology, pdb.positions)
    if box_size is not None:
        modeller.addSolvent(field, model="tip3p", boxSize=openmm.Vec3(box_size, box_size, box_size) * unit.nanometer)
    return (modeller.topology, _create(modeller, box_size is not None, nonbonded_cutoff, field, rigid),
            modeller.positions)


def alanine_dipeptide(box_size: float | None = None, nonbonded_cutoff: float = 0.9, rigid: bool = True):
    """ACE-ALA-NME, in vacuum (``box_size=None``) or in a cubic TIP3P box of edge ``box_size`` nm; ``rigid``:
    X–H bonds constrained and water rigid (else all flexible). Returns (topology, system, positions).
    """
    return _solvated(_shipped("alanine_dipeptide.pdb"), forcefield(), box_size, nonbonded_cutoff, rigid)


#: OPLS-AA formamide charges, e (Jorgensen, Maxwell & Tirado-Rives, J. Am. Chem. Soc. 118, 11225 (1996)).
#: The QM/MM model zeroes them (the solute is QM); they only orient the fresh water around it.
FORMAMIDE_OPLS_CHARGES = {"C": 0.5, "O": -0.5, "N": -0.76, "H": 0.0, "H1": 0.38, "H2": 0.38}


def formamide(box_size: float | None = None, nonbonded_cutoff: float = 0.9, rigid: bool = True):
    """Formamide (residue FMD, HF/3-21G minimum), alone or in a cubic TIP3P box of edge ``box_size`` nm.

    Meant to be wholly QM: its template carries no bonded terms
    (:func:`bioqmmm.preparation.ligands.qm_only_template`), Lennard-Jones parameters and OPLS-AA
    charges (which the QM/MM model zeroes). With ``protocols/formamide_product.pdb``
    (formamidic acid, the 1,3-proton-shift product) it is the shipped NEB example. The solute keeps
    the coordinates of the shipped file. Returns (topology, system, positions).
    """
    from bioqmmm.preparation.ligands import qm_only_template

    pdb = _shipped("formamide.pdb")
    xml = qm_only_template(next(pdb.topology.residues()), pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    for name, charge in FORMAMIDE_OPLS_CHARGES.items():  # for the MM relaxation of the fresh water only
        xml = xml.replace(f'<Atom name="{name}" type="QMONLY-FMD-{name[0]}" charge="0.0"',
                          f'<Atom name="{name}" type="QMONLY-FMD-{name[0]}" charge="{charge}"')
    field = forcefield()
    field.loadFile(io.StringIO(xml))
    topology, system, positions = _solvated(pdb, field, box_size, nonbonded_cutoff, rigid)
    # addSolvent centres the solute in the box: move everything back so that the solute keeps the
    # coordinates of the file, as an endpoint structure written in that frame expects
    xyz = positions.value_in_unit(unit.nanometer)
    shift = xyz[0] - pdb.positions[0].value_in_unit(unit.nanometer)
    return topology, system, [p - shift for p in xyz] * unit.nanometer


def water_box(box_size: float, nonbonded_cutoff: float = 0.7, rigid: bool = True):
    """A cubic box of TIP3P water of edge ``box_size`` nm (``rigid``: rigid water, else flexible).
    Returns (topology, system, positions)."""
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield(), model="tip3p", boxSize=openmm.Vec3(box_size, box_size, box_size) * unit.nanometer)
    return modeller.topology, _create(modeller, True, nonbonded_cutoff, rigid=rigid), modeller.positions


def _capped(residue: str) -> tuple[app.Topology, np.ndarray]:
    """ACE-``residue``-NME built by PDBFixer on the shipped alanine dipeptide's backbone (nm)."""
    from pdbfixer import PDBFixer

    text = _shipped("alanine_dipeptide.pdb")
    lines = io.StringIO()
    app.PDBFile.writeFile(text.topology, text.positions, lines)
    kept = []
    for line in lines.getvalue().splitlines():
        if line.startswith(("ATOM", "HETATM")) and line[17:20] == "ALA":
            if line[12:16].strip().startswith("HB") or line[12:16].strip()[1:3] == "HB":
                continue
            line = line[:17] + residue + line[20:]
        if line.startswith(("ATOM", "HETATM", "TER", "END")):
            kept.append(line)
    fixer = PDBFixer(pdbfile=io.StringIO("\n".join(kept) + "\n"))
    fixer.findMissingResidues()
    fixer.findMissingAtoms()
    fixer.addMissingAtoms(seed=0)
    modeller = app.Modeller(fixer.topology, fixer.positions)
    modeller.addHydrogens(forcefield(), pH=7.0, platform=openmm.Platform.getPlatformByName("Reference"))  # repeatable
    return modeller.topology, np.array(modeller.positions.value_in_unit(unit.nanometer))


def _rotation(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The rotation that turns direction ``u`` into direction ``v`` (Rodrigues)."""
    u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    axis, cos = np.cross(u, v), float(np.dot(u, v))
    sin = float(np.linalg.norm(axis))
    if sin < 1e-9:
        return np.eye(3) if cos > 0 else -np.eye(3)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]]) / sin
    return np.eye(3) + sin * k + (1 - cos) * k @ k


def salt_bridge(box_size: float | None = None, nonbonded_cutoff: float = 0.9, rigid: bool = True):
    """:func:`salt_bridge_pair` in vacuum with Amber14 (no cut-off; ``box_size`` must be None): (topology,
    system, positions), the example of the shipped interface protocol file."""
    if box_size is not None:
        raise ValueError("the salt_bridge example is not solvated: give no box size")
    topology, positions = salt_bridge_pair()
    return topology, _create(app.Modeller(topology, positions * unit.nanometer), False, nonbonded_cutoff,
                             rigid=rigid), positions * unit.nanometer


def salt_bridge_pair() -> tuple[app.Topology, np.ndarray]:
    """Two binding partners: ACE-LYS-NME (chain A, charge +1) salt-bridged to ACE-ASP-NME (chain B, −1), read
    from the shipped ``data/salt_bridge.pdb`` (made by :func:`build_salt_bridge_pair`; its hydrogens fixed
    once, since OpenMM places them differently from run to run). Topology and positions (nm): the smallest
    interface, for the interface protocol's example and tests."""
    pdb = _shipped("salt_bridge.pdb")
    return pdb.topology, np.array(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))


def build_salt_bridge_pair(separation: float = 0.37) -> tuple[app.Topology, np.ndarray]:
    """The pair of :func:`salt_bridge_pair` built from scratch: the Asp Cγ on the line Cα→Nζ of the Lys
    ``separation`` nm beyond Nζ (Nζ–Oδ ≈ 0.27 nm at the default)."""
    lys, x_lys = _capped("LYS")
    asp, x_asp = _capped("ASP")

    def where(topology, name):
        return next(a.index for a in topology.atoms() if a.name == name and a.residue.name in ("LYS", "ASP"))

    axis = x_lys[where(lys, "NZ")] - x_lys[where(lys, "CA")]
    axis /= np.linalg.norm(axis)
    turn = _rotation(x_asp[where(asp, "CG")] - x_asp[where(asp, "CA")], -axis)
    x_asp = (x_asp - x_asp[where(asp, "CG")]) @ turn.T + x_lys[where(lys, "NZ")] + separation * axis
    topology, positions = app.Topology(), []
    for part, xyz, chain_id in ((lys, x_lys, "A"), (asp, x_asp, "B")):
        chain, made = topology.addChain(chain_id), {}
        for residue in part.residues():
            new = topology.addResidue(residue.name, chain, residue.id)
            for atom in residue.atoms():
                made[atom] = topology.addAtom(atom.name, atom.element, new)
                positions.append(xyz[atom.index])
        for a, b in part.bonds():
            topology.addBond(made[a], made[b])
    return topology, np.array(positions)
