"""Preparation: each fix on a small hand-made structure, bad input, solvent, save/load, rerun, CLI.

The base structure is a 10-residue peptide built by PDBFixer itself (not by the code under test) from
two alanines and a SEQRES record; each test edits its PDB lines to create one flaw.
"""

from __future__ import annotations

import io
import random

import numpy as np
import openmm
import pytest
from openmm import app, unit
from pdbfixer import PDBFixer

from bioqmmm import load_prepared, prepare
from bioqmmm.cli import main
from bioqmmm.errors import InputError, PreparationError
from bioqmmm.preparation import freeze_beyond
from bioqmmm.preparation.sources import DATA

SEQUENCE = "ALA SER HIS CYS ASP GLY LYS GLU MET ALA".split()
ETHANOL = [  # name, element, x, y, z (Angstrom, relative)
    ("C1", "C", 0.0, 0.0, 0.0), ("C2", "C", 1.52, 0.0, 0.0), ("O", "O", 2.03, 1.216, 0.0),
    ("H1", "H", 0.363, -0.514, 0.89), ("H2", "H", 0.363, -0.514, -0.89), ("H3", "H", -1.09, 0.028, 0.0),
    ("H4", "H", 1.883, -0.514, 0.89), ("H5", "H", 1.883, -0.514, -0.89), ("H6", "H", 2.99, 1.19, 0.0),
]


def _ethanol(x: float = 10.0) -> str:
    return "".join(f"HETATM{900 + i:5d}  {n:<3s} LIG B 201    {x + dx:8.3f}{15 + dy:8.3f}{5 + dz:8.3f}  1.00  0.00"
                   f"          {e:>2s}\n" for i, (n, e, dx, dy, dz) in enumerate(ETHANOL))


@pytest.fixture(scope="module")
def peptide_lines() -> list[str]:
    """ATOM lines (no hydrogens, no SEQRES) of A:ALA1..ALA10, built by PDBFixer."""

    def alanine(number: int, serial: int, dx: float) -> str:
        rows = [("N", 0, 0, 0), ("CA", 1.458, 0, 0), ("C", 2.009, 1.42, 0), ("O", 1.251, 2.39, 0),
                ("CB", 1.988, -0.773, -1.199)]
        return "".join(f"ATOM  {serial + i:5d}  {n:<3s} ALA A{number:4d}    {x + dx:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00"
                       f"           {n[0]}\n" for i, (n, x, y, z) in enumerate(rows))

    text = f"SEQRES   1 A   10  {' '.join(SEQUENCE)}\n{alanine(1, 1, 0.0)}{alanine(10, 6, 20.0)}END\n"
    random.seed(0)  # PDBFixer places built atoms with Python's random and relaxes them: make both repeatable
    fixer = PDBFixer(pdbfile=io.StringIO(text), platform=openmm.Platform.getPlatformByName("Reference"))
    fixer.findMissingResidues()
    fixer.findMissingAtoms()
    fixer.addMissingAtoms(seed=0)
    out = io.StringIO()
    app.PDBFile.writeFile(fixer.topology, fixer.positions, out)
    return [line for line in out.getvalue().splitlines(keepends=True) if line.startswith("ATOM")]


def _write(tmp_path, lines, name="input.pdb", header="") -> str:
    path = tmp_path / name
    path.write_text(header + "".join(lines) + "END\n")
    return str(path)


def _residue_lines(lines, number):
    return [line for line in lines if int(line[22:26]) == number]


def _vacuum(path, **options):
    return prepare(path, solvent="vacuum", **options)


def _energy(prepared) -> float:
    context = openmm.Context(prepared.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(prepared.positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def _names(prepared, residue_id: str, chain: str = "A") -> set[str]:
    residue = next(r for r in prepared.topology.residues() if r.id == residue_id and r.chain.id == chain)
    return {a.name for a in residue.atoms()}


def test_clean_peptide_gets_hydrogens_and_termini(tmp_path, peptide_lines):
    prepared = _vacuum(_write(tmp_path, peptide_lines))
    assert prepared.report.kinds() == {"hydrogens-added"}
    assert "OXT" in _names(prepared, "10")
    assert {"H", "H2", "H3"} <= _names(prepared, "1")
    charge = sum(prepared.system.getForce(i).getParticleParameters(j)[0].value_in_unit(unit.elementary_charge)
                 for i in range(prepared.system.getNumForces())
                 if isinstance(prepared.system.getForce(i), openmm.NonbondedForce)
                 for j in range(prepared.system.getNumParticles()))
    assert charge == pytest.approx(-1.0, abs=1e-6)  # Lys+ Asp- Glu- N+ C-
    assert np.isfinite(_energy(prepared))


def test_altloc_keeps_the_most_occupied_conformer(tmp_path, peptide_lines):
    lines = []
    for line in peptide_lines:
        if int(line[22:26]) == 2 and line[12:16].strip() == "OG":
            x = float(line[30:38])
            lines.append(line[:16] + "A" + line[17:30] + f"{x:8.3f}" + line[38:54] + "  0.30" + line[60:])
            lines.append(line[:16] + "B" + line[17:30] + f"{x + 0.5:8.3f}" + line[38:54] + "  0.70" + line[60:])
        else:
            lines.append(line)
    prepared = _vacuum(_write(tmp_path, lines))
    entry = next(e for e in prepared.report.changes if e.kind == "altloc")
    assert entry.residues == ("A:SER2",) and "kept conformer B (occupancy 0.70)" in entry.detail
    og = next(a for a in prepared.topology.atoms() if a.residue.id == "2" and a.name == "OG")
    x_b = float(next(line for line in lines if line[12:16].strip() == "OG" and line[16] == "B")[30:38]) / 10
    assert prepared.positions[og.index][0] == pytest.approx(x_b, abs=1e-4)


def test_partial_deposited_hydrogens_are_stripped_and_rebuilt(tmp_path, peptide_lines):
    lines = list(peptide_lines)
    n_line = next(line for line in lines if int(line[22:26]) == 5 and line[12:16].strip() == "N")
    lines.append(n_line[:12] + " HA " + n_line[16:30] + f"{float(n_line[30:38]) + 1.0:8.3f}" + n_line[38:76] + " H\n")
    prepared = _vacuum(_write(tmp_path, lines))
    stripped = next(e for e in prepared.report.changes if e.kind == "hydrogens-stripped")
    assert stripped.residues == ("A:ASP5(1)",)
    assert {"H", "HA", "HB2", "HB3"} <= _names(prepared, "5")


def test_missing_side_chain_atoms_are_built(tmp_path, peptide_lines):
    lines = [line for line in peptide_lines if not (int(line[22:26]) == 7 and line[12:16].strip() in ("CE", "NZ"))]
    prepared = _vacuum(_write(tmp_path, lines))
    entry = next(e for e in prepared.report.changes if e.kind == "missing-atoms" and e.residues == ("A:LYS7",))
    assert "CE" in entry.detail and "NZ" in entry.detail
    assert {"CE", "NZ", "HZ1", "HZ2", "HZ3"} <= _names(prepared, "7")


SEQRES = f"SEQRES   1 A   10  {' '.join(SEQUENCE)}\n"


def test_short_internal_gap_is_built_from_the_sequence(tmp_path, peptide_lines):
    lines = [line for line in peptide_lines if int(line[22:26]) not in (5, 6)]
    prepared = _vacuum(_write(tmp_path, lines, header=SEQRES))
    entry = next(e for e in prepared.report.changes if e.kind == "missing-residues")
    assert "ASP-GLY" in entry.detail
    assert [r.name for r in prepared.topology.residues()] == SEQUENCE
    atoms = {(a.residue.id, a.name): a.index for a in prepared.topology.atoms()}
    for i in range(4, 7):
        d = np.linalg.norm(prepared.positions[atoms[(str(i), "C")]] - prepared.positions[atoms[(str(i + 1), "N")]])
        assert d < 0.2  # built residues are bonded to their neighbours


def test_long_gap_is_an_error_naming_it_unless_capped(tmp_path, peptide_lines):
    lines = [line for line in peptide_lines if int(line[22:26]) not in (4, 5, 6)]
    path = _write(tmp_path, lines, header=SEQRES)
    line = 2 + next(i for i, text in enumerate(lines) if int(text[22:26]) == 7)  # SEQRES is line 1
    with pytest.raises(PreparationError, match=rf"input.pdb:{line}: gap of 3 missing residues between A:HIS3 and "
                       r"A:LYS7.*max_gap=2"):
        _vacuum(path, max_gap=2)
    prepared = _vacuum(path, max_gap=2, long_gaps="cap")
    assert [r.name for r in prepared.topology.residues()][2:6] == ["HIS", "NME", "ACE", "LYS"]
    assert prepared.topology.getNumChains() == 2


def test_chain_break_without_sequence_is_capped_or_terminated(tmp_path, peptide_lines):
    lines = [line for line in peptide_lines if int(line[22:26]) not in (5, 6)]
    path = _write(tmp_path, lines)
    capped = _vacuum(path)
    assert "cap" in capped.report.kinds()
    assert [r.name for r in capped.topology.residues()][3:7] == ["CYS", "NME", "ACE", "LYS"]
    termini = _vacuum(path, chain_breaks="termini")
    assert "chain-break" in termini.report.kinds()
    assert "OXT" in _names(termini, "4") and {"H2", "H3"} <= _names(termini, "7")


def test_ter_inside_a_bonded_chain_is_ignored(tmp_path, peptide_lines):
    index = max(i for i, line in enumerate(peptide_lines) if int(line[22:26]) == 5)
    lines = peptide_lines[: index + 1] + ["TER\n"] + peptide_lines[index + 1 :]
    prepared = _vacuum(_write(tmp_path, lines))
    assert prepared.topology.getNumChains() == 1
    assert next(e for e in prepared.report.changes if e.kind == "chain-merged").residues == ("A:ASP5", "A:GLY6")


def test_nonstandard_residue_is_mapped_to_its_parent(tmp_path, peptide_lines):
    lines = []
    for line in peptide_lines:
        if int(line[22:26]) == 9:
            line = "HETATM" + line[6:17] + "MSE" + line[20:]
            if line[12:16].strip() == "SD":
                line = line[:12] + "SE  " + line[16:76] + "SE\n"
        lines.append(line)
    prepared = _vacuum(_write(tmp_path, lines))
    entry = next(e for e in prepared.report.changes if e.kind == "nonstandard")
    assert entry.residues == ("A:MSE9",) and "MET" in entry.detail
    assert "SD" in _names(prepared, "9")


def _zinc_near_cys_sg(lines) -> str:
    sg = next(line for line in lines if int(line[22:26]) == 4 and line[12:16].strip() == "SG")
    x, y, z = (float(sg[c : c + 8]) for c in (30, 38, 46))
    return f"HETATM 1000 ZN    ZN A 301    {x + 2.3:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00          ZN\n"


def test_metal_bound_cysteine_is_a_thiolate_and_the_ion_is_kept(tmp_path, peptide_lines):
    prepared = _vacuum(_write(tmp_path, peptide_lines + [_zinc_near_cys_sg(peptide_lines)]))
    assert "HG" not in _names(prepared, "4")
    assert any(e.kind == "protonation" and "SG binds Zn" in e.detail for e in prepared.report.decisions)
    zinc = next(a for a in prepared.topology.atoms() if a.element == app.element.zinc)
    nonbonded = next(f for f in prepared.system.getForces() if isinstance(f, openmm.NonbondedForce))
    assert nonbonded.getParticleParameters(zinc.index)[0].value_in_unit(unit.elementary_charge) == pytest.approx(2.0)


def test_waters_kept_in_explicit_solvent_removed_in_vacuum(tmp_path, peptide_lines):
    water = "HETATM 2000  O   HOH A 401      30.000  30.000  30.000  1.00  0.00           O\n"
    path = _write(tmp_path, peptide_lines + [water])
    assert "waters-removed" in _vacuum(path).report.kinds()
    explicit = prepare(path, solvent="explicit", padding_nm=0.8)
    assert any(r.name == "HOH" and r.id == "401" for r in explicit.topology.residues())
    kept = _vacuum(path, keep_water=True)
    assert any(r.name == "HOH" for r in kept.topology.residues())


FORMATE = """\
HETATM 3000  C   FMT A 501      25.000  25.000  25.000  1.00  0.00           C
HETATM 3001  O1  FMT A 501      26.200  25.000  25.000  1.00  0.00           O
HETATM 3002  O2  FMT A 501      24.400  26.040  25.000  1.00  0.00           O
"""


def test_additives_are_removed_and_a_ligand_without_hydrogens_is_an_error(tmp_path, peptide_lines):
    path = _write(tmp_path, peptide_lines + [FORMATE])
    prepared = _vacuum(path)
    assert next(e for e in prepared.report.changes if e.kind == "additives-removed").residues == ("A:FMT501",)
    line = len(peptide_lines) + 1
    with pytest.raises(PreparationError, match=rf"input.pdb:{line}: residue A:FMT501 has no template and no hydrogens"):
        _vacuum(path, keep_additives=True)
    smiles = _vacuum(path, keep_additives=True, ligand_smiles={"FMT": "[O-]C=O"}, cache_dir=tmp_path / "cache")
    assert "ligand-hydrogens" in smiles.report.kinds()
    assert sum(a.element == app.element.hydrogen for a in next(
        r for r in smiles.topology.residues() if r.name == "FMT").atoms()) == 1


def test_ligand_in_qm_region_gets_a_charge_free_template_else_gaff2(tmp_path, peptide_lines):
    path = _write(tmp_path, peptide_lines + [_ethanol()])
    qm = _vacuum(path, qm_residues=["LIG"], cache_dir=tmp_path / "cache")
    nonbonded = next(f for f in qm.system.getForces() if isinstance(f, openmm.NonbondedForce))
    ligand = [a.index for a in qm.topology.atoms() if a.residue.name == "LIG"]
    assert len(ligand) == 9
    assert all(nonbonded.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge) == 0 for i in ligand)
    gaff = _vacuum(path, cache_dir=tmp_path / "cache")
    nonbonded = next(f for f in gaff.system.getForces() if isinstance(f, openmm.NonbondedForce))
    charges = [nonbonded.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge) for i in ligand]
    assert sum(charges) == pytest.approx(0.0, abs=1e-6) and max(map(abs, charges)) > 0.1
    assert any(e.kind == "ligand-parameters" and "GAFF2" in e.detail for e in gaff.report.decisions)


def test_user_xml_wins_over_generated_parameters(tmp_path, peptide_lines):
    path = _write(tmp_path, peptide_lines + [_ethanol()])
    first = _vacuum(path, qm_residues=["LIG"], cache_dir=tmp_path / "cache")
    user = tmp_path / "eoh.xml"
    user.write_text(first.forcefield.extra["LIG-qm-only.xml"])
    prepared = _vacuum(path, forcefield_files=[user], cache_dir=tmp_path / "cache")
    assert not any(e.kind == "ligand-parameters" for e in prepared.report.decisions)
    assert _energy(prepared) == pytest.approx(_energy(first), rel=1e-9)


def test_explicit_solvent_is_neutral_with_the_requested_salt(tmp_path, peptide_lines):
    prepared = prepare(_write(tmp_path, peptide_lines), padding_nm=1.0, ionic_strength_molar=0.15)
    counts = {n: sum(r.name == n for r in prepared.topology.residues()) for n in ("HOH", "NA", "CL")}
    assert counts["NA"] - counts["CL"] == 1  # peptide charge -1
    expected_pairs = 0.15 * counts["HOH"] / 55.4  # mol/L of NaCl relative to water (OpenMM's rule)
    assert counts["CL"] == pytest.approx(expected_pairs, abs=1.0)
    assert prepared.system.usesPeriodicBoundaryConditions()
    assert any(e.kind == "solvent" for e in prepared.report.changes)


def test_a_charged_qm_only_ligand_is_neutralised_by_counter_ions(tmp_path, peptide_lines):
    """The QM-only template of formate carries no charges, so OpenMM's neutralisation cannot see its −1:
    one more Na+ replaces the farthest water, and the MM charges plus the QM charge sum to zero."""
    prepared = prepare(_write(tmp_path, peptide_lines + [FORMATE]), padding_nm=0.8, keep_additives=True,
                       ligand_smiles={"FMT": "[O-]C=O"}, qm_residues=["FMT"], cache_dir=tmp_path / "cache")
    counts = {n: sum(r.name == n for r in prepared.topology.residues()) for n in ("NA", "CL")}
    assert counts["NA"] - counts["CL"] == 2  # peptide −1, formate −1
    nonbonded = next(f for f in prepared.system.getForces() if isinstance(f, openmm.NonbondedForce))
    mm = sum(nonbonded.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge)
             for i in range(nonbonded.getNumParticles()))
    assert mm + (-1) == pytest.approx(0.0, abs=1e-6)
    assert any("for the net charge -1 of the QM-only residues" in e.detail for e in prepared.report.changes)


def test_implicit_solvent_and_charmm36(tmp_path, peptide_lines):
    path = _write(tmp_path, peptide_lines)
    implicit = prepare(path, solvent="implicit")
    assert any(isinstance(f, openmm.CustomGBForce) for f in implicit.system.getForces())
    assert not implicit.system.usesPeriodicBoundaryConditions()
    charmm = _vacuum(_write(tmp_path, peptide_lines + [_zinc_near_cys_sg(peptide_lines)], name="zn.pdb"),
                     forcefield="charmm36")
    assert np.isfinite(_energy(charmm))  # the zinc ion found its CHARMM template (ZN2) by element
    with pytest.raises(InputError, match="implicit solvent is available with amber14 only"):
        prepare(path, solvent="implicit", forcefield="charmm36")


def test_save_load_and_rerun_changes_nothing(tmp_path, peptide_lines):
    path = _write(tmp_path, peptide_lines + [_ethanol(), _zinc_near_cys_sg(peptide_lines)])
    first = prepare(path, padding_nm=0.8, cache_dir=tmp_path / "cache")
    first.save(tmp_path / "out")
    loaded = load_prepared(tmp_path / "out")
    assert loaded.topology.getNumAtoms() == first.topology.getNumAtoms()
    assert loaded.topology.getNumBonds() == first.topology.getNumBonds()
    assert _energy(loaded) == pytest.approx(_energy(first), rel=1e-6)
    assert [e.kind for e in loaded.report.changes] == [e.kind for e in first.report.changes]
    again = prepare(tmp_path / "out" / "structure.pdb", padding_nm=0.8, cache_dir=tmp_path / "cache")
    assert again.report.changes == []
    assert again.topology.getNumAtoms() == first.topology.getNumAtoms()
    assert np.abs(again.positions - first.positions).max() < 2e-4  # PDB coordinates carry 1e-4 nm


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "the file is empty"),
        ("ATOM      1  N   ALA A   1      11.104   6.134\n", r"input.pdb:1: truncated or malformed ATOM record"),
        ("REMARK nothing here\nEND\n", "no atom records"),
    ],
)
def test_bad_files_are_named_with_the_line(tmp_path, content, message):
    path = tmp_path / "input.pdb"
    path.write_text(content)
    with pytest.raises(PreparationError, match=message):
        prepare(path)


def test_unknown_option_and_bad_values_fail_before_reading(tmp_path):
    missing = tmp_path / "absent.pdb"  # never read: options are checked first
    with pytest.raises(InputError, match=r"unknown preparation option\(s\) 'padding' \(did you mean 'padding_nm'\?\)"):
        prepare(missing, padding=1.0)
    with pytest.raises(InputError, match="solvent='water' is not one of explicit, implicit, vacuum"):
        prepare(missing, solvent="water")
    with pytest.raises(PreparationError, match="no such file"):
        prepare(missing)


def test_freeze_beyond_by_mass_and_by_restraint(tmp_path, peptide_lines):
    prepared = _vacuum(_write(tmp_path, peptide_lines))
    qm = [a.index for a in prepared.topology.atoms() if a.residue.id == "1"]
    system = openmm.XmlSerializer.clone(prepared.system)
    frozen = freeze_beyond(system, prepared.topology, prepared.positions, qm, 0.6)
    assert frozen and not set(frozen) & set(qm)
    assert all(system.getParticleMass(i).value_in_unit(unit.dalton) == 0 for i in frozen)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(prepared.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10, 50)
    moved = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    assert np.abs(moved[frozen] - prepared.positions[frozen]).max() == 0.0
    assert np.abs(moved[qm] - prepared.positions[qm]).max() > 1e-4
    restrained = openmm.XmlSerializer.clone(prepared.system)
    assert freeze_beyond(restrained, prepared.topology, prepared.positions, qm, 0.6, method="restraint") == frozen
    assert restrained.getNumForces() == prepared.system.getNumForces() + 1


def test_cli_prepare_writes_the_folder_and_fails_in_one_line(tmp_path, peptide_lines, capsys):
    path = _write(tmp_path, peptide_lines)
    assert main(["prepare", path, "-o", str(tmp_path / "out"), "--solvent", "vacuum"]) == 0
    for name in ("structure.pdb", "structure.cif", "system.xml", "prepare.json", "report.txt"):
        assert (tmp_path / "out" / name).exists()
    capsys.readouterr()
    assert main(["prepare", path, "-o", str(tmp_path / "x"), "--solvent", "water"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "invalid choice: 'water'" in err
    empty = tmp_path / "empty.pdb"
    empty.write_text("")
    capsys.readouterr()
    assert main(["prepare", str(empty), "-o", str(tmp_path / "y")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the file is empty" in err


def test_protocol_file_runs_from_a_prepared_folder(tmp_path, peptide_lines):
    """``system: prepared: DIR`` in a protocol file: QM/MM MD of the ligand (QM-only template) in the peptide."""
    path = _write(tmp_path, peptide_lines + [_ethanol()])
    _vacuum(path, qm_residues=["LIG"], cache_dir=tmp_path / "cache").save(tmp_path / "prepared")
    protocol = tmp_path / "md.yaml"
    protocol.write_text(
        "system:\n  prepared: prepared\n"
        "qm:\n  atoms: resname LIG\n  charge: 0\n  multiplicity: 1\n  method: hf\n  basis: sto-3g\n"
        "protocol:\n  type: md\n  steps: 2\n  timestep_fs: 0.5\n  seed: 7\n  report_interval: 1\n"
        "output: md_out\n"
    )
    assert main(["run", str(protocol), "--no-progress"]) == 0
    rows = (tmp_path / "md_out" / "energies.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 steps


def test_microheterogeneity_keeps_the_more_occupied_residue_type(tmp_path, peptide_lines):
    lines = []
    for line in peptide_lines:
        if int(line[22:26]) != 2:
            lines.append(line)
            continue
        lines.append(line[:16] + "A" + line[17:54] + "  0.60" + line[60:])
        if line[12:16].strip() not in ("OG",):
            lines.append(line[:16] + "BTHR" + line[20:54] + "  0.40" + line[60:])
    prepared = _vacuum(_write(tmp_path, lines))
    assert [r.name for r in prepared.topology.residues()][:3] == ["ALA", "SER", "HIS"]
    assert any("kept residue SER (occupancy 0.60) over THR (0.40)" in e.detail for e in prepared.report.changes)


def test_hybrid36_residue_numbers_beyond_9999_are_read(tmp_path, peptide_lines):
    waters = "".join(f"HETATM{3000 + i:5d}  O   HOH W{number}    {30 + 3 * i:8.3f}  30.000  30.000  1.00  0.00"
                     "           O\n" for i, number in enumerate(("9999", "A000", "A001")))
    prepared = _vacuum(_write(tmp_path, peptide_lines + [waters]), keep_water=True)
    assert [r.id for r in prepared.topology.residues() if r.name == "HOH"] == ["9999", "10000", "10001"]


def test_copies_of_a_ligand_in_and_out_of_the_qm_region_all_get_gaff2(tmp_path, peptide_lines):
    second = _ethanol(x=18.0).replace(" B 201 ", " B 202 ")
    prepared = _vacuum(_write(tmp_path, peptide_lines + [_ethanol(), second]), qm_residues=["B:201"],
                       cache_dir=tmp_path / "cache")
    assert [e.detail.split(";")[0] for e in prepared.report.decisions if e.kind == "ligand-parameters"] == [
        "LIG: GAFF2 + AM1-BCC (antechamber)"]
    bonds = next(f for f in prepared.system.getForces() if isinstance(f, openmm.HarmonicBondForce))
    mm_copy = {a.index for a in prepared.topology.atoms() if a.residue.id == "202"}
    assert sum(bonds.getBondParameters(i)[0] in mm_copy for i in range(bonds.getNumBonds())) >= 2


def test_same_seed_same_output_with_built_residues_and_solvent(tmp_path, peptide_lines):
    lines = [line for line in peptide_lines if int(line[22:26]) not in (5, 6)
             and not (int(line[22:26]) == 7 and line[12:16].strip() in ("CE", "NZ"))]
    path = _write(tmp_path, lines, header=SEQRES)
    first, second = (prepare(path, padding_nm=0.8, seed=3) for _ in range(2))
    assert {"missing-residues", "missing-atoms", "solvent"} <= first.report.kinds()
    assert np.array_equal(first.positions, second.positions)


def test_dodecahedron_box_survives_a_rerun(tmp_path, peptide_lines):
    first = prepare(_write(tmp_path, peptide_lines), padding_nm=0.8, box_shape="dodecahedron")
    first.save(tmp_path / "out")
    again = prepare(tmp_path / "out" / "structure.pdb", padding_nm=0.8, box_shape="dodecahedron")
    assert again.report.changes == []
    assert np.allclose(again.box[:2], first.box[:2], atol=1e-3)  # c may differ by a lattice vector (a + b)
    difference = np.linalg.solve(first.box.T, again.box[2] - first.box[2])
    assert np.allclose(difference, np.round(difference), atol=1e-3)


def test_pdb_ids_resolve_to_shipped_entries_or_downloads_with_a_clear_offline_error(tmp_path, monkeypatch):
    import urllib.error

    from bioqmmm.preparation import sources

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "1AKI").mkdir()
    monkeypatch.chdir(tmp_path)  # a folder named like an id does not hide the id

    shipped = sources.resolve_structure("1aki")
    assert shipped == sources.DATA / "1AKI.pdb" and shipped.exists()
    assert sources.resolve_structure(str(shipped)) == shipped  # a file wins over the id rules
    assert sources.resolve_structure("no_such.pdb") == sources.Path("no_such.pdb")  # the reader names it

    def offline(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(sources.urllib.request, "urlopen", offline)
    with pytest.raises(PreparationError, match=r"PDB id 9XYZ: cannot download https://files.rcsb.org/download/9XYZ"
                                               r"\.cif \(Name or service not known\); without a network"):
        prepare("9xyz", solvent="vacuum")
    assert not (tmp_path / "cache" / "bioqmmm" / "pdb" / "9XYZ.cif").exists()

    def missing(url, timeout):
        raise urllib.error.HTTPError(url, 404, "Not Found", None, None)

    monkeypatch.setattr(sources.urllib.request, "urlopen", missing)
    with pytest.raises(PreparationError, match="9XYZ: .* answered 404 .* is the id right"):
        sources.resolve_structure("9XYZ", tmp_path)

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda url, timeout: Response(b"<html>proxy</html>"))
    with pytest.raises(PreparationError, match="did not return an mmCIF file"):
        sources.resolve_structure("9XYZ", tmp_path)
    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda url, timeout: Response(b"data_9XYZ\n"))
    downloaded = sources.resolve_structure("9XYZ", tmp_path)
    assert downloaded == tmp_path / "9XYZ.cif" and downloaded.read_text() == "data_9XYZ\n"
    monkeypatch.setattr(sources.urllib.request, "urlopen", offline)
    assert sources.resolve_structure("9XYZ", tmp_path) == downloaded  # kept: no second download


def test_cli_prepares_a_shipped_entry_by_its_pdb_id(tmp_path, capsys):
    assert main(["prepare", "1AKI", "-o", str(tmp_path / "lysozyme"), "--solvent", "vacuum"]) == 0
    prepared = load_prepared(tmp_path / "lysozyme")
    assert sum(1 for r in prepared.topology.residues() if r.name != "HOH") == 129
    assert "written to" in capsys.readouterr().out


def _states(prepared) -> dict[str, str]:
    return {site["label"]: site["state"] for site in prepared.report.titration["sites"] if site["state"]}


def _net_charge(prepared) -> float:
    force = next(f for f in prepared.system.getForces() if isinstance(f, openmm.NonbondedForce))
    return sum(force.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge)
               for i in range(force.getNumParticles()))


@pytest.fixture(scope="module")
def lysozyme_states():
    """Hen egg-white lysozyme (shipped 1AKI) prepared in vacuum with PROPKA states at pH 5.5 and 7."""
    return {ph: prepare("1AKI", solvent="vacuum", ph=ph) for ph in (5.5, 7.0)}


def test_propka_gives_lysozymes_catalytic_pair_its_textbook_states(lysozyme_states):
    """Glu35 (the general acid) protonated and Asp52 charged at pH 5.5, both charged at pH 7 (experimental
    pKa 6.1 and 3.4: Kuramitsu et al., J. Biochem. 82, 585 (1977))."""
    acidic, neutral = lysozyme_states[5.5], lysozyme_states[7.0]
    sites = {s["label"]: s for s in acidic.report.titration["sites"]}
    assert acidic.report.titration["method"].startswith("propka 3")
    assert 5.5 < sites["A:GLU35"]["pka"] < 7.5 and sites["A:ASP52"]["pka"] < 5.5
    assert sites["A:GLU35"]["model_pka"] == pytest.approx(4.5)
    assert _states(acidic)["A:GLU35"] == "GLH" and _states(acidic)["A:ASP52"] == "ASP"
    assert _states(neutral)["A:GLU35"] == "GLU" and _states(neutral)["A:ASP52"] == "ASP"
    assert _net_charge(neutral) == pytest.approx(_net_charge(acidic) - 2, abs=1e-6)  # Glu35 and His15
    close = next(e for e in acidic.report.decisions if e.kind == "pka-close-call")
    assert {"A:GLU35", "A:ASP52"} <= set(close.residues)
    text = str(acidic.report)
    assert "Titratable groups (propka 3" in text and "A:GLU35" in text
    rules = prepare("1AKI", solvent="vacuum", ph=5.5, protonation="rules")
    assert _variants(rules)["A:GLU35"] == "GLU" and not rules.report.titration["sites"]  # OpenMM's Glu pKa 4.4


def test_states_near_the_qm_region_that_differ_from_the_rules_are_flagged():
    prepared = prepare("1AKI", solvent="vacuum", ph=5.5, qm_residues=["A:GLU35"])
    flagged = next(e for e in prepared.report.decisions if e.kind == "pka-vs-rules-near-qm")
    assert "A:GLU35" in flagged.residues and "A:ASP52" not in flagged.residues


def test_state_overrides_change_the_charge_and_bad_ones_are_refused_before_anything_is_written(
        lysozyme_states, tmp_path, capsys):
    overridden = prepare("1AKI", solvent="vacuum", ph=7.0, states={"A:GLU35": "GLH", "A:HIS15": "hip"})
    assert _states(overridden)["A:GLU35"] == "GLH" and _states(overridden)["A:HIS15"] == "HIP"
    assert _net_charge(overridden) == pytest.approx(_net_charge(lysozyme_states[7.0]) + 2, abs=1e-6)
    override = next(e for e in overridden.report.decisions if e.kind == "state-override")
    assert "A:GLU35=GLH" in override.detail
    with pytest.raises(InputError, match="--state A:GLU36=GLH: no residue A:GLU36"):
        prepare("1AKI", solvent="vacuum", states={"A:GLU36": "GLH"})
    with pytest.raises(InputError, match="'HIP' does not fit GLU; states: one of GLU, GLH"):
        prepare("1AKI", solvent="vacuum", states={"A:GLU35": "HIP"})
    with pytest.raises(InputError, match=r"'CYM' does not fit CYS; states: one of CYX \(it is in a disulfide\)"):
        prepare("1AKI", solvent="vacuum", states={"A:CYS6": "CYM"})
    assert main(["prepare", "1AKI", "-o", str(tmp_path / "bad"), "--state", "A:GLU35=LYN"]) == 1
    assert "does not fit GLU" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_rerun_keeps_the_predicted_and_overridden_states(tmp_path):
    first = prepare("1AKI", solvent="vacuum", ph=5.5, states={"A:ASP52": "ASH"})
    first.save(tmp_path / "first")
    again = prepare(tmp_path / "first" / "structure.pdb", solvent="vacuum", ph=5.5)
    assert again.report.changes == []
    assert {k: v for k, v in _states(again).items() if k in ("A:GLU35", "A:ASP52", "A:HIS15")} == {
        "A:GLU35": "GLH", "A:ASP52": "ASH", "A:HIS15": "HIP"}


def _variants(prepared) -> dict[str, str]:
    """{residue label: variant} from the report's protonation decisions ("CYX (4)", "HIE: ND1 binds ...")."""
    return {residue: entry.detail.split()[0].rstrip(":") for entry in prepared.report.decisions
            if entry.kind == "protonation" for residue in entry.residues}


def test_metal_bound_cysteines_keep_their_states_under_propka():
    """Rubredoxin (shipped 2DSX): the four iron-bound Cys get the metal rule's thiolate (CYX, no HG), with or
    without predictions."""
    predicted, rules = (_variants(prepare("2DSX", solvent="vacuum", protonation=p)) for p in ("propka", "rules"))
    iron = [f"A:CYS{i}" for i in (6, 9, 39, 42)]
    assert [predicted[c] for c in iron] == [rules[c] for c in iron] == ["CYX"] * 4


def test_predictions_reach_residues_with_insertion_codes(tmp_path):
    """Asp52 renumbered 51A (Kabat/chymotrypsin-style insertion code): its prediction and state are reported
    under its own label."""
    lines = []
    for line in (DATA / "1AKI.pdb").read_text().splitlines():
        if line.startswith(("ATOM", "HETATM")) and line[17:20] == "ASP" and line[22:26] == "  52":
            line = line[:22] + "  51A" + line[27:]
        lines.append(line)
    path = tmp_path / "insertion.pdb"
    path.write_text("\n".join(lines) + "\n")
    prepared = prepare(path, solvent="vacuum", ph=5.5)
    sites = {s["label"]: s for s in prepared.report.titration["sites"]}
    assert "A:ASP51A" in sites and "A:ASP52" not in sites and sites["A:ASP51A"]["state"] == "ASP"
    assert 5.5 < sites["A:GLU35"]["pka"] and not [e for e in prepared.report.decisions if e.kind == "pka-missing"]
