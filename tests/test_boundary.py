"""Covalent QM/MM boundaries on a real protein: link atoms, boundary charges, cut validation."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import FD_ABS_TOL, assert_fd_forces, directional_derivative
from openmm import app, unit

from bioqmmm import QMMMSystem
from bioqmmm.errors import InputError, SelectionError, TopologyError
from bioqmmm.examples import alanine_dipeptide
from bioqmmm.qm import PySCFEngine
from bioqmmm.qmmm.embedding import PeriodicEmbedding
from bioqmmm.qmmm.surgery import mm_charges
from bioqmmm.region.boundary import SCHEMES, build_boundary
from bioqmmm.region.protein import find_residue, metal_site, residues, sidechain
from bioqmmm.units import positions_nm


def _atom(topology, residue: str, name: str) -> int:
    return next(a.index for a in find_residue(topology, residue).atoms() if a.name == name)


def _asp66(lysozyme, scheme="RCD", **kwargs):
    top, system, pos = lysozyme
    engine = PySCFEngine("hf", "sto-3g", conv_tol=1e-10)
    qm = sidechain(top, "ASP66")
    return QMMMSystem(
        top, system, qm, charge=-1, multiplicity=1, engine=engine, platform="Reference", boundary_charges=scheme,
        **kwargs,
    )


@pytest.fixture(scope="module")
def asp66(lysozyme):
    return _asp66(lysozyme)


def test_side_chain_cut_gets_one_link_atom_on_the_ca_cb_bond(asp66, lysozyme):
    top, _, pos = lysozyme
    assert list(asp66.qm_atoms) == sidechain(top, "ASP66")
    (link,) = asp66.links
    cb, ca = _atom(top, "ASP66", "CB"), _atom(top, "ASP66", "CA")
    assert (link.qm_host, link.mm_host) == (cb, ca)
    assert link.ratio == pytest.approx(0.1090 / 0.1530)
    boundary = asp66.boundary
    local = boundary.particles.index
    qm_xyz = boundary.qm_sites.positions(pos[list(boundary.particles)])
    assert np.allclose(qm_xyz[: len(asp66.qm_atoms)], pos[list(asp66.qm_atoms)])
    h_link = qm_xyz[-1]
    assert np.allclose(h_link, pos[cb] + link.ratio * (pos[ca] - pos[cb]))
    assert np.linalg.norm(h_link - pos[cb]) == pytest.approx(link.ratio * np.linalg.norm(pos[ca] - pos[cb]))
    assert asp66.kernel.region.symbols == (*asp66.symbols, "H")
    # the M1 charge is not seen by the QM region
    assert local(ca) not in boundary.charge_sites.atoms.tolist()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_total_charge_is_conserved_exactly(lysozyme, scheme):
    top, system, _ = lysozyme
    charges = mm_charges(system)
    qm = sidechain(top, "ASP66") + sidechain(top, "GLU35")  # two cuts, one region
    boundary = build_boundary(top, qm, charges, -2, scheme=scheme)
    assert len(boundary.links) == 2
    assert abs(-2 + boundary.site_charges.sum() - charges.sum()) < 1e-10
    ca = boundary.particles.index(_atom(top, "ASP66", "CA"))
    n_m2 = 3  # N, C, HA of Asp66
    expected_extra = {"RCD": 2 * n_m2, "RC": 2 * n_m2, "shift": 4 * n_m2}[scheme]
    assert len(boundary.charge_sites.anchor) == expected_extra
    assert ca not in boundary.charge_sites.atoms.tolist()


def test_rcd_moves_the_balanced_m1_charge_to_bond_midpoints(lysozyme):
    top, system, pos = lysozyme
    charges = mm_charges(system)
    qm = sidechain(top, "ASP66")
    boundary = build_boundary(top, qm, charges, -1, scheme="RCD")
    ca = _atom(top, "ASP66", "CA")
    m2 = sorted(_atom(top, "ASP66", n) for n in ("N", "C", "HA"))
    q_m1 = charges[ca] + boundary.charge_defect  # balanced: defect put on M1 first
    q0 = q_m1 / 3
    x = pos[list(boundary.particles)]
    sites = boundary.charge_sites.positions(x)
    n_atoms = len(boundary.charge_sites.atoms)
    midpoints = sites[n_atoms:]
    assert np.allclose(midpoints, [(pos[ca] + pos[j]) / 2 for j in m2])
    assert np.allclose(boundary.site_charges[n_atoms:], 2 * q0)
    on_atoms = dict(zip(np.asarray(boundary.particles)[boundary.charge_sites.atoms].tolist(),
                        boundary.site_charges[:n_atoms], strict=True))
    for j in m2:
        assert on_atoms[j] == pytest.approx(charges[j] - q0, abs=1e-14)


def test_declared_charge_mismatch_is_reported_with_the_numbers(lysozyme, caplog):
    top, system, _ = lysozyme
    with caplog.at_level(logging.WARNING, logger="bioqmmm.region.boundary"):
        build_boundary(top, sidechain(top, "ASP66"), mm_charges(system), -1)
    assert "-0.8581 e" in caplog.text and "+0.1419 e" in caplog.text and "ASP66:CA" in caplog.text
    assert "expected for a cut" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bioqmmm.region.boundary"):
        build_boundary(top, sidechain(top, "ASP66"), mm_charges(system), 0)  # forgot the carboxylate charge
    assert "the nearest integer is -1: check the declared charge" in caplog.text


def test_uncharged_qm_molecule_is_not_checked_against_its_zero_charges(caplog):
    """A whole molecule whose MM charges are all zero (a QM-only residue of the preparation) cannot tell
    whether the declared charge is right: no warning, a note at INFO level."""
    top, system, _ = alanine_dipeptide()
    with caplog.at_level(logging.INFO, logger="bioqmmm.region.boundary"):
        build_boundary(top, list(range(top.getNumAtoms())), np.zeros(top.getNumAtoms()), -2)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "carry no MM charges: the declared QM charge -2 is not checked" in caplog.text


@pytest.mark.parametrize(("scheme", "keeps_dipole"), [("RCD", True), ("shift", True), ("RC", False)])
def test_boundary_charge_schemes_and_bond_dipoles(lysozyme, scheme, keeps_dipole):
    """RCD and charge shift keep the charge and dipole of M1 + M2 (Lin & Truhlar 2005); RC keeps the charge."""
    top, system, pos = lysozyme
    charges = mm_charges(system)
    boundary = build_boundary(top, sidechain(top, "ASP66"), charges, -1, scheme=scheme)
    ca = _atom(top, "ASP66", "CA")
    group = [ca] + [_atom(top, "ASP66", n) for n in ("N", "C", "HA")]
    q_ref = charges[group].copy()
    q_ref[0] += boundary.charge_defect
    x = pos[list(boundary.particles)]
    sites = boundary.charge_sites.positions(x)
    owners = np.asarray(boundary.particles)[boundary.charge_sites.atoms]
    n_atoms = len(owners)
    in_group = np.concatenate([np.isin(owners, group), np.ones(len(sites) - n_atoms, dtype=bool)])
    q_new, r_new = boundary.site_charges[in_group], sites[in_group]
    assert q_new.sum() == pytest.approx(q_ref.sum(), abs=1e-12)
    dipole_ref, dipole_new = q_ref @ pos[group], q_new @ r_new
    assert np.allclose(dipole_new, dipole_ref, atol=1e-12) == keeps_dipole

def test_forces_match_finite_differences_across_the_cut(asp66, lysozyme):
    top, _, pos = lysozyme
    _, forces = asp66.energy_and_forces(pos)

    def energy(p):
        return asp66.energy_and_forces(p)[0]

    names = {"CB": "QM host", "CG": "QM", "OD1": "QM", "HB2": "QM", "CA": "MM host", "N": "M2", "C": "M2", "HA": "M2",
             "O": "MM next to the boundary"}
    assert_fd_forces(energy, pos, forces, [_atom(top, "ASP66", name) for name in names])
    direction = forces / np.linalg.norm(forces)
    assert directional_derivative(energy, pos, direction) == pytest.approx(np.sum(forces * direction), rel=1e-4)


@pytest.mark.parametrize("scheme", ["RC", "shift"])
def test_other_schemes_have_consistent_forces_on_the_boundary_atoms(lysozyme, scheme):
    top, _, pos = lysozyme
    qmmm = _asp66(lysozyme, scheme)
    _, forces = qmmm.energy_and_forces(pos)
    rng = np.random.default_rng(7)
    for name in ("CB", "CA", "N", "HA"):
        step = np.zeros_like(pos)
        step[_atom(top, "ASP66", name)] = rng.normal(size=3)
        step /= np.linalg.norm(step)
        fd = directional_derivative(lambda p: qmmm.energy_and_forces(p)[0], pos, step)
        assert np.sum(forces * step) == pytest.approx(fd, abs=FD_ABS_TOL, rel=1e-3), name


def test_energy_is_smooth_along_a_scan_of_the_cut_bond(asp66, lysozyme):
    """Stretch Cα–Cβ: the work of the forces between scan points equals the energy change."""
    top, _, pos = lysozyme
    ca, cb = _atom(top, "ASP66", "CA"), _atom(top, "ASP66", "CB")
    unit_bond = (pos[ca] - pos[cb]) / np.linalg.norm(pos[ca] - pos[cb])
    shifts = np.linspace(-0.015, 0.015, 11)  # nm, bond from ~0.138 to ~0.168 nm
    energies, projected = [], []
    for s in shifts:
        p = pos.copy()
        p[ca] += s * unit_bond
        e, f = asp66.energy_and_forces(p)
        energies.append(e)
        projected.append(f[ca] @ unit_bond)
    energies, projected = np.array(energies), np.array(projected)
    work = -0.5 * (projected[1:] + projected[:-1]) * np.diff(shifts)  # trapezoid, O(h^2) error
    curvature = np.abs(np.diff(projected, 2)).max() / np.diff(shifts)[0]
    tolerance = curvature * np.diff(shifts)[0] ** 2 + 1e-4
    assert np.allclose(np.diff(energies), work, atol=tolerance)
    assert np.all(np.diff(projected) < 0)  # a stiff bond: restoring force grows monotonically


def test_cuts_through_rings_double_amide_polar_and_hydrogen_bonds_are_refused(lysozyme):
    top, system, _ = lysozyme
    charges = mm_charges(system)
    half_ring = [_atom(top, "PHE34", n) for n in ("CB", "HB2", "HB3", "CG", "CD1", "HD1")]
    with pytest.raises(TopologyError, match=r"cuts the aromatic ring .*PHE34"):
        build_boundary(top, half_ring, charges, 0)
    whole_asp = [a.index for a in find_residue(top, "ASP66").atoms()]
    with pytest.raises(TopologyError, match=r"peptide bond ASP66:N .* ASN65:C .* Cα–C"):
        build_boundary(top, whole_asp, charges, -1)
    with pytest.raises(TopologyError, match=r"double bond ASP66:OD1 .* ASP66:CG .*Cα–Cβ"):
        build_boundary(top, [_atom(top, "ASP66", "OD1")], charges, 0)
    lys_amine = [_atom(top, "LYS13", n) for n in ("NZ", "HZ1", "HZ2", "HZ3")]
    with pytest.raises(TopologyError, match=r"polar bond LYS13:NZ .* LYS13:CE .*\(N–C\).*allow_polar_cut=True"):
        build_boundary(top, lys_amine, charges, 1)
    allowed = build_boundary(top, lys_amine, charges, 1, allow_polar_cut=True)
    assert allowed.links[0].ratio == pytest.approx(0.1010 / 0.1470)
    with pytest.raises(TopologyError, match=r"bond to hydrogen"):
        build_boundary(top, [i for i in sidechain(top, "ASP66") if i != _atom(top, "ASP66", "HB2")], charges, -1)
    kekule = app.Topology()  # a writer that marks the peptide bond single does not make it cuttable
    for chain in top.chains():
        new_chain = kekule.addChain(chain.id)
        for residue in chain.residues():
            new_residue = kekule.addResidue(residue.name, new_chain, residue.id)
            for atom in residue.atoms():
                kekule.addAtom(atom.name, atom.element, new_residue)
    atoms = list(kekule.atoms())
    for bond in top.bonds():
        order = 1 if {bond[0].name, bond[1].name} == {"C", "N"} else None
        kekule.addBond(atoms[bond[0].index], atoms[bond[1].index], order=order)
    with pytest.raises(TopologyError, match="peptide bond"):
        build_boundary(kekule, whole_asp, charges, -1, allow_polar_cut=True)
    with pytest.raises(InputError, match="unknown boundary charge scheme 'RDC'"):
        build_boundary(top, sidechain(top, "ASP66"), charges, -1, scheme="RDC")


def test_cut_of_unknown_bond_order_is_refused(lysozyme):
    """Two unsaturated atoms of a non-standard residue, no bond type in the Topology: never guessed."""
    def chain(bond_type):
        top = app.Topology()
        residue = top.addResidue("LIG", top.addChain())
        atoms = [top.addAtom(f"C{i}", app.element.carbon, residue) for i in range(1, 5)]
        top.addBond(atoms[0], atoms[1])
        top.addBond(atoms[1], atoms[2], type=bond_type)
        top.addBond(atoms[2], atoms[3])
        return top

    with pytest.raises(TopologyError, match=r"order of the cut bond LIG1:C2 .* LIG1:C3 .* is unknown"):
        build_boundary(chain(None), [0, 1], np.zeros(4), 0)
    assert len(build_boundary(chain(app.Single), [0, 1], np.zeros(4), 0).links) == 1
    with pytest.raises(TopologyError, match=r"double bond LIG1:C2"):
        build_boundary(chain(app.Double), [0, 1], np.zeros(4), 0)


def test_protein_selection_helpers(lysozyme):
    top, _, _ = lysozyme
    names = lambda idx: [(a.residue.name + a.residue.id, a.name) for a in top.atoms() if a.index in idx]  # noqa: E731
    assert {n for _, n in names(sidechain(top, "A:ASP66"))} == {"CB", "HB2", "HB3", "CG", "OD1", "OD2"}
    segment = names(residues(top, ["ASP66", "GLY67"]))
    assert ("ASN65", "C") in segment and ("ASN65", "O") in segment and ("ASN65", "CA") not in segment
    assert ("ASP66", "C") in segment and ("GLY67", "C") not in segment and ("GLY67", "O") not in segment
    build_boundary(top, residues(top, ["ASP66", "GLY67"]), np.zeros(top.getNumAtoms()), 0)  # Cα–C cuts pass
    with pytest.raises(SelectionError, match="bonded to its backbone N"):
        sidechain(top, "PRO70")
    with pytest.raises(SelectionError, match="no residue 'ASP999'"):
        sidechain(top, "ASP999")
    with pytest.raises(SelectionError, match="cannot read residue"):
        sidechain(top, "ASP-66-")


def test_metal_site_selects_iron_and_its_four_cysteine_side_chains(rubredoxin):
    top, _, pos = rubredoxin
    site = metal_site(top, pos, "FE501")
    atoms = list(top.atoms())
    picked = sorted((atoms[i].residue.name + atoms[i].residue.id, atoms[i].name) for i in site)
    expected = sorted([("FE501", "FE")] + [(f"CYS{r}", n) for r in (6, 9, 39, 42) for n in ("CB", "HB2", "HB3", "SG")])
    assert picked == expected


@pytest.mark.slow
def test_rubredoxin_iron_site_runs_unrestricted_dft_with_consistent_forces(rubredoxin):
    """Fe(SCH2)4 of rubredoxin: charge -1, sextet (high-spin Fe(III)), four Cα–Cβ link atoms, UKS."""
    top, system, pos = rubredoxin
    site = metal_site(top, pos, "FE501")
    engine = PySCFEngine("pbe", "sto-3g", grid_level=1, conv_tol=1e-9)
    qmmm = QMMMSystem(top, system, site, charge=-1, multiplicity=6, engine=engine, platform="Reference")
    atoms = list(top.atoms())
    assert len(qmmm.links) == 4
    assert {(atoms[k.qm_host].name, atoms[k.mm_host].name) for k in qmmm.links} == {("CB", "CA")}
    energy, forces = qmmm.energy_and_forces(pos)
    info = qmmm.last_qm.qm.info
    assert info.converged and np.isfinite(energy)
    # <S^2> of a sextet is S(S+1) = 8.75; a little spin contamination is normal for UKS
    assert 8.75 <= info.spin_square < 8.80
    hosts = sorted({k.mm_host for k in qmmm.links})
    moved = list(qmmm.qm_atoms) + hosts
    direction = np.zeros_like(forces)
    direction[moved] = forces[moved]
    direction /= np.linalg.norm(direction)
    fd = directional_derivative(lambda p: qmmm.energy_and_forces(p)[0], pos, direction, h=2e-5)
    assert fd == pytest.approx(np.sum(forces * direction), rel=1e-3)


@pytest.fixture(scope="module")
def solvated_alanine_side_chain():
    """Alanine dipeptide in a 2.4 nm TIP3P box, QM = the Ala side chain (CH3 + link H), HF/STO-3G."""
    top, system, positions = alanine_dipeptide(box_size=2.4)
    engine = PySCFEngine("hf", "sto-3g", conv_tol=1e-11)
    embedding = PeriodicEmbedding(cutoff=0.9, switch_width=0.3)
    qmmm = QMMMSystem(
        top, system, sidechain(top, "ALA2"), charge=0, multiplicity=1, engine=engine, embedding=embedding,
        platform="Reference",
    )
    return qmmm, np.array(positions.value_in_unit(unit.nanometer))


def test_periodic_cut_forces_match_finite_differences(solvated_alanine_side_chain):
    qmmm, pos = solvated_alanine_side_chain
    top = qmmm.topology
    _, forces = qmmm.energy_and_forces(pos)

    def energy(p):
        return qmmm.energy_and_forces(p)[0]

    assert_fd_forces(energy, pos, forces, [_atom(top, "ALA2", name) for name in ("CB", "HB1", "CA", "N", "HA", "C")])


def test_link_atoms_and_boundary_charges_follow_minimum_image(solvated_alanine_side_chain):
    """Wrapping the MM host or an M2 atom into another periodic cell changes nothing."""
    qmmm, pos = solvated_alanine_side_chain
    top, kernel = qmmm.topology, qmmm.kernel
    box = positions_nm(qmmm.system.getDefaultPeriodicBoxVectors())
    local = pos[list(kernel.boundary.particles)]
    e0, f0 = kernel.evaluate(local, box, None)
    for name in ("CA", "HA"):
        wrapped = local.copy()
        wrapped[kernel.boundary.particles.index(_atom(top, "ALA2", name))] += box[0] - box[2]
        e1, f1 = kernel.evaluate(wrapped, box, None)
        assert e1 == pytest.approx(e0, rel=1e-10), name
        np.testing.assert_allclose(f1, f0, atol=1e-2)  # SCF-convergence noise, 2e-7 Eh/Bohr


def test_metal_site_with_backbone_carbonyl_ligands(lysozyme):
    """A backbone O ligand brings its peptide group (the next residue's N side), never a lone C=O cut."""
    top, system, pos = lysozyme
    modeller = app.Modeller(top, pos * unit.nanometer)
    ions = app.Topology()
    chain = ions.addChain("X")
    for resid in ("901", "902"):
        ions.addAtom("NA", app.element.sodium, ions.addResidue("NA", chain, resid))
    near = []
    for name in ("THR40", "PRO70"):
        o, c = pos[_atom(top, name, "O")], pos[_atom(top, name, "C")]
        near.append(o + 0.23 * (o - c) / np.linalg.norm(o - c))
    modeller.add(ions, np.array(near) * unit.nanometer)
    new_top = modeller.topology
    xyz = np.array(modeller.positions.value_in_unit(unit.nanometer))
    atoms = list(new_top.atoms())
    residues_ = list(new_top.residues())
    for ion, residue in (("NA901", "THR40"), ("NA902", "PRO70")):
        following = residues_[find_residue(new_top, residue).index + 1]
        after = following.name + following.id
        site = metal_site(new_top, xyz, ion)
        names = {(atoms[i].residue.name + atoms[i].residue.id, atoms[i].name) for i in site}
        assert {(residue, "C"), (residue, "O"), (after, "N"), (after, "CA")} <= names
        charges = np.zeros(new_top.getNumAtoms())
        build_boundary(new_top, [i for i in site if atoms[i].residue.name != "NA"], charges, 0)
