"""The interface protocol: partners, MM decomposition, GB model, alanine truncation, QM region, scores.

The smallest interface is bioqmmm.examples.salt_bridge_pair (capped Lys, chain A, against capped Asp,
chain B): its QM/MM scores take seconds with GFN2-xTB.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openmm
import pytest
import yaml
from openmm import app, unit

from bioqmmm.errors import InputError
from bioqmmm.examples import salt_bridge_pair
from bioqmmm.interface.contacts import hydrogen_bonds, interface_residues, salt_bridges
from bioqmmm.interface.energies import mm_binding, nonbonded_parameters, per_residue
from bioqmmm.interface.hotspots import atom_keys, pick_region
from bioqmmm.interface.model import Structure, create_systems, gb_forcefield, interface_structure
from bioqmmm.interface.mutation import CH_BOND_NM, find_mutated, parse_mutations, truncate_to_alanine
from bioqmmm.interface.partners import Partners, find_partners
from bioqmmm.interface.refine import relax_mm
from bioqmmm.interface.scoring import score
from bioqmmm.interface.validation import agreement
from bioqmmm.preparation.forcefields import ForceFieldSetup
from bioqmmm.qm.factory import Level
from bioqmmm.units import COULOMB_KJMOL_NM, KCAL_KJ

SETUP = gb_forcefield(ForceFieldSetup(["amber14-all.xml", "amber14/tip3p.xml"]))
XTB = Level("gfn2", engine="xtb")
HF = Level("hf", "sto-3g")


@pytest.fixture(scope="module")
def pair() -> Structure:
    topology, positions = salt_bridge_pair()
    structure, _ = interface_structure(topology, positions, Partners(("A",), ("B",)))
    return structure


def _reference_energy(system: openmm.System, positions: np.ndarray) -> float:
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def _moved(structure: Structure, shift: np.ndarray) -> Structure:
    positions = structure.positions.copy()
    positions[structure.side == 1] += shift
    return Structure(structure.topology, positions, structure.side, structure.templates)


def test_partners_are_parsed_detected_and_checked(pair):
    assert Partners.parse("H,L:C") == Partners(("H", "L"), ("C",))
    assert find_partners(pair.topology) == Partners(("A",), ("B",))
    with pytest.raises(InputError, match="chain\\(s\\) Z of partners A:Z are not in the structure"):
        find_partners(pair.topology, "A:Z")
    with pytest.raises(InputError, match="in both partners"):
        Partners.parse("A,B:B")
    with pytest.raises(InputError, match="chain\\(s\\) C belong to neither partner"):
        find_partners(_three_chains(), "A:B")
    with pytest.raises(InputError, match="cannot tell the two partners apart"):
        find_partners(_three_chains())


def _three_chains() -> app.Topology:
    topology, _ = salt_bridge_pair()
    extra = topology.addChain("C")
    residue = topology.addResidue("ACE", extra)
    topology.addAtom("C", app.element.carbon, residue)
    return topology


def test_per_residue_interaction_adds_up_to_openmm(pair):
    """Σ over either partner's residues of the pair decomposition = E(AB) − E(A) − E(B) from OpenMM
    (Reference platform, double precision) on Systems parameterised separately."""
    binding, per_atom, _ = mm_binding(pair, SETUP)
    residues = per_residue(pair, per_atom)
    side = np.array([pair.side[next(r.atoms()).index] for r in pair.topology.residues()])
    _, vacuum = create_systems(pair, SETUP)
    total = _reference_energy(vacuum, pair.positions)
    parts = sum(_reference_energy(create_systems(pair.part(k), SETUP)[1], pair.part(k).positions) for k in (0, 1))
    assert residues[side == 0].sum() == pytest.approx(total - parts, abs=1e-6)
    assert residues[side == 1].sum() == pytest.approx(total - parts, abs=1e-6)
    assert binding.interaction == pytest.approx(total - parts, abs=1e-6)
    assert binding.interaction < -100.0  # a salt bridge in vacuum


def test_partner_relaxation_is_a_gain_that_vanishes_apart(pair):
    """Relaxing the separated partners lowers their energy (a positive cost on binding), and partners that do
    not touch gain nothing."""
    relaxed = mm_binding(pair, SETUP, relax_shell=0.8)[0]
    assert relaxed.relaxation < 0.0 and relaxed.score == pytest.approx(
        relaxed.interaction + relaxed.solvation - relaxed.relaxation)
    assert mm_binding(_moved(pair, np.array([3.0, 0.0, 0.0])), SETUP, relax_shell=0.8)[0].relaxation == 0.0


def test_native_obc2_equals_openmms_obc2_file(pair):
    """The native GBSAOBCForce built from implicit/obc2.xml's parameters gives its CustomGBForce energy."""
    custom = app.ForceField("amber14-all.xml", "amber14/tip3p.xml", "implicit/obc2.xml").createSystem(
        pair.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    native, _ = create_systems(pair, SETUP)
    assert _reference_energy(native, pair.positions) == pytest.approx(
        _reference_energy(custom, pair.positions), abs=1e-3)


def test_interface_contacts_of_the_salt_bridge(pair):
    assert len(interface_residues(pair, 0.45)) == 2
    bridges = salt_bridges(pair)
    assert len(bridges) == 1 and bridges[0].names[0] == "A:LYS2:NZ" and bridges[0].distance < 0.3
    implicit, _ = create_systems(pair, SETUP)
    relaxed = relax_mm(pair, implicit, np.arange(len(pair.positions)), 0.8)
    heavy = [a.index for a in pair.topology.atoms() if a.element.symbol != "H"]
    assert np.linalg.norm(relaxed[heavy] - pair.positions[heavy], axis=1).max() < 0.1  # restrained
    moved = Structure(pair.topology, relaxed, pair.side)
    assert any(c.names[0] == "A:LYS2:NZ" and c.names[1].startswith("B:ASP2:OD") for c in hydrogen_bonds(moved))


def test_truncation_to_alanine(pair):
    [mutation] = parse_mutations("A:K2A")
    mutant = truncate_to_alanine(pair, [find_mutated(pair.topology, mutation)])
    residue = next(r for r in mutant.topology.residues() if r.chain.id == "A" and r.id == "2")
    names = {a.name: a.index for a in residue.atoms()}
    assert residue.name == "ALA" and set(names) == {"N", "H", "CA", "HA", "CB", "HB1", "HB2", "HB3", "C", "O"}
    for h in ("HB1", "HB2", "HB3"):
        assert np.linalg.norm(mutant.positions[names[h]] - mutant.positions[names["CB"]]) == pytest.approx(CH_BOND_NM)
    assert mutant.topology.getNumAtoms() == pair.topology.getNumAtoms() - 12
    create_systems(mutant, SETUP)  # Amber's ALA template matches
    unchanged = [a.index for a in pair.topology.atoms() if a.residue.chain.id == "B"]
    moved = [a.index for a in mutant.topology.atoms() if a.residue.chain.id == "B"]
    assert np.array_equal(pair.positions[unchanged], mutant.positions[moved])
    with pytest.raises(InputError, match="is LYS, not D"):
        find_mutated(pair.topology, parse_mutations("A:D2A")[0])
    with pytest.raises(InputError, match="only mutations to alanine"):
        parse_mutations("A:K2G")


def test_region_charge_follows_the_chosen_side_chains(pair):
    """Both side chains: charge 0; room for the Lys side chain only: +1 (its formal charge)."""
    charges = nonbonded_parameters(create_systems(pair, SETUP)[1], pair.side)[0]
    contacts = hydrogen_bonds(pair) + salt_bridges(pair)
    residues = list(pair.topology.residues())
    lys, asp = (next(r.index for r in residues if r.name == name) for name in ("LYS", "ASP"))
    picks, atoms, charge, _ = pick_region(pair, [(lys, "first"), (asp, "second")], contacts, 40, charges)
    assert charge == 0 and [p.residue for p in picks] == ["A:LYS2", "B:ASP2"]
    picks, atoms, charge, _ = pick_region(pair, [(lys, "first"), (asp, "second")], contacts, 17, charges)
    assert charge == 1 and [p.residue for p in picks] == ["A:LYS2"] and len(atoms) == 16
    with pytest.raises(InputError, match="too small for one interface residue: the smallest candidate, B:ASP2 "
                                         "side chain, needs 7"):
        pick_region(pair, [(lys, "first"), (asp, "second")], contacts, 5, charges)


def _salt_bridge_region(pair: Structure) -> frozenset:
    charges = nonbonded_parameters(create_systems(pair, SETUP)[1], pair.side)[0]
    residues = list(pair.topology.residues())
    ranked = [(next(r.index for r in residues if r.name == n), "") for n in ("LYS", "ASP")]
    _, atoms, _, _ = pick_region(pair, ranked, [], 40, charges)
    return frozenset(atom_keys(pair.topology)[i] for i in atoms)


def _monopole_error(pair: Structure, far) -> float:
    """|ΔE_MM R / (k q_A q_B) − 1| with R between the partners' centres (q_A q_B = −1)."""
    a, b = (far.positions[far.side == k].mean(axis=0) for k in (0, 1))
    return abs(score(far, SETUP, None, None).mm.interaction * np.linalg.norm(a - b) / COULOMB_KJMOL_NM + 1.0)


def test_interaction_vanishes_apart_and_swapping_partners_is_symmetric(pair):
    """30 nm apart, the QM/MM correction is gone (< 0.1 kJ/mol, tens at contact) and the MM interaction is
    the monopole term k q_A q_B / R; swapping the partners' roles changes no energy.

    At HF: restricted Hartree–Fock keeps the ion pair's charges integer at any distance; GFN2-xTB moves
    charge between the distant ions (delocalisation error; the next test)."""
    region = _salt_bridge_region(pair)
    near = score(pair, SETUP, region, HF)
    far = score(_moved(pair, np.array([30.0, 0.0, 0.0])), SETUP, region, HF)
    assert abs(near.correction) > 10.0 and abs(far.correction) < 0.1
    assert _monopole_error(pair, _moved(pair, np.array([30.0, 0.0, 0.0]))) < 0.03
    swapped = score(Structure(pair.topology, pair.positions, 1 - pair.side, pair.templates), SETUP, region, HF)
    assert swapped.charge_transfer == pytest.approx(-near.charge_transfer, abs=1e-6)
    energies = ("interaction_mm", "desolvation", "mmgbsa", "qm_correction", "qmmm")
    assert [swapped.record()[k] for k in energies] == pytest.approx([near.record()[k] for k in energies], abs=1e-6)


@pytest.mark.slow
def test_correction_and_monopole_error_fall_with_distance(pair):
    """The QM/MM correction and the MM interaction's departure from k q_A q_B / R both fall as partner B
    moves from 3 to 10 to 30 nm (HF/STO-3G)."""
    region = _salt_bridge_region(pair)
    corrections, errors = [], []
    for distance in (3.0, 10.0, 30.0):
        far = _moved(pair, np.array([distance, 0.0, 0.0]))
        corrections.append(abs(score(far, SETUP, region, HF).correction))
        errors.append(_monopole_error(pair, far))
    assert corrections == sorted(corrections, reverse=True) and errors == sorted(errors, reverse=True)


@pytest.mark.slow
def test_charge_transfer_between_partners_is_reported(pair):
    """The QM charge each partner's part of the region carries in the complex: near its integer at HF
    far apart; GFN2-xTB's spurious transfer between distant ions shows up in the record."""
    region = _salt_bridge_region(pair)
    far = _moved(pair, np.array([10.0, 0.0, 0.0]))
    assert abs(score(far, SETUP, region, HF).charge_transfer) < 0.02
    assert score(far, SETUP, region, XTB).charge_transfer < -0.05  # electrons from the Asp to the Lys part


def test_agreement_statistics():
    measured = {"A": 1.0, "B": 2.5, "C": 0.5, "D": 4.0}
    predicted = {k: 2.0 * v + 1.0 for k, v in measured.items()}  # kJ/mol both
    stats = agreement(predicted, measured)
    x, y = np.array(list(predicted.values())) / KCAL_KJ, np.array(list(measured.values())) / KCAL_KJ
    assert stats["pearson_r"] == pytest.approx(1.0) and stats["spearman_rho"] == pytest.approx(1.0)
    assert stats["rmse_kcal_mol"] == pytest.approx(np.sqrt(np.mean((x - y) ** 2)))
    assert stats["hot_spots_measured"] == 0 and agreement({}, measured) == {"n": 0}


def _protocol_file(folder: Path, shift: float = 0.0, **keys) -> Path:
    topology, positions = salt_bridge_pair()
    chain_b = np.array([a.residue.chain.id == "B" for a in topology.atoms()])
    positions[chain_b] += [shift, 0.0, 0.0]
    with open(folder / "pair.pdb", "w") as handle:
        app.PDBFile.writeFile(topology, positions * 10.0 * unit.angstrom, handle)
    (folder / "measured.csv").write_text("mutation,ddG_kcal_mol\nA:K2A,1.0\nB:D2A,2.0\n\"A:K2A,B:D2A\",2.5\n")
    protocol = {"type": "interface", "refine_steps": 3, "qm_budget_atoms": 40, "measured_ddg": "measured.csv",
                **keys}
    config = {"system": {"pdb": "pair.pdb"}, "qm": {"engine": "xtb", "method": "gfn2"}, "protocol": protocol,
              "output": "out"}
    path = folder / "interface.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_interface_protocol_on_the_salt_bridge_pair(tmp_path):
    """The whole protocol with GFN2-xTB: region, refinement, scores of the wild type, both single and the
    double mutant, measured-ΔΔG statistics, files; a rerun reads every stage back."""
    from bioqmmm.run.runner import run_protocol

    result = run_protocol(_protocol_file(tmp_path), progress=False)
    out = tmp_path / "out"
    region = result["qm_region"]
    assert region["charge"] == 0 and sorted(r["residue"] for r in region["residues"]) == ["A:LYS2", "B:ASP2"]
    assert all("salt bridge A:LYS2:NZ–B:ASP2:OD" in r["why"] for r in region["residues"])
    decomposition = result["decomposition"]
    assert decomposition["sum_residues_partner_a"]["value"] == pytest.approx(
        decomposition["interaction_mm"]["value"], abs=1e-6)
    assert result["binding"]["qmmm"]["value"] == pytest.approx(
        result["binding"]["mmgbsa"]["value"] + result["binding"]["qm_correction"]["value"])
    variants = {row["variant"]: row for row in _csv(out / "variants.csv")}
    assert set(variants) == {"wild_type", "A:K2A", "B:D2A", "A:K2A,B:D2A"}
    assert all(row["qmmm"] not in ("", "None") for row in variants.values())
    residues = _csv(out / "residues.csv")
    assert [r["residue"] for r in residues] == ["A:LYS2", "B:ASP2"] and all(r["qm"] == "side chain" for r in residues)
    assert result["measured"]["mmgbsa"]["n"] == 3 and "pearson_r" in result["measured"]["qmmm"]
    assert result["refinement"]["iterations"] <= 3 and result["refinement"]["contacts"][0]["kind"] == "hbond"
    for name in ("scan.png", "measured.png", "interface.pdb", "refine/optimized.pdb", "summary.txt"):
        assert (out / name).exists(), name
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "variants").iterdir()}
    again = run_protocol(tmp_path / "interface.yaml", progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "variants").iterdir()} == stamps
    assert again["binding"] == result["binding"]


def _csv(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(("change", "message"), [
    ({"partners": "A:Z"}, "chain\\(s\\) Z of partners A:Z are not in the structure"),
    ({"shift": 2.0}, "partners A and B do not touch: no heavy atoms within 0.45 nm"),
    ({"qm_budget_atoms": 5}, "a QM budget of 5 atoms .* is too small for one interface residue"),
    ({"mutations": ["A:D2A"]}, "mutation A:D2A: residue A:2 is LYS, not D"),
])
def test_bad_interface_input_stops_before_any_qm(tmp_path, monkeypatch, change, message):
    from bioqmmm.qm import xtb_engine
    from bioqmmm.run.runner import run_protocol

    def no_qm(*args, **kwargs):
        raise AssertionError("QM was called")

    monkeypatch.setattr(xtb_engine.XTBEngine, "compute", no_qm)
    shift = change.pop("shift", 0.0)
    with pytest.raises(InputError, match=message):
        run_protocol(_protocol_file(tmp_path, shift, **change), progress=False)


def test_a_qm_region_in_the_file_is_refused(tmp_path):
    from bioqmmm.run.protocol import load_protocol

    path = _protocol_file(tmp_path)
    region = "engine: xtb\n  sidechains: [A:LYS2]\n  charge: 1\n  multiplicity: 1"
    path.write_text(path.read_text().replace("engine: xtb", region))
    with pytest.raises(InputError, match="the interface protocol chooses its own QM region"):
        load_protocol(path)


def test_counterpoise_vanishes_apart_and_needs_a_basis():
    """Water dimer, HF/STO-3G: the basis-set superposition error is positive at the hydrogen-bond distance
    and gone 3 nm apart; an xTB level has no basis to correct."""
    from bioqmmm.interface.counterpoise import check_counterpoise, counterpoise

    water = np.array([[0.0, 0.0, 0.0], [0.0957, 0.0, 0.0], [-0.024, 0.0927, 0.0]])
    symbols = ["O", "H", "H"] * 2
    side = np.array([0, 0, 0, 1, 1, 1])
    near = np.concatenate([water, water + [0.29, 0.0, 0.0]])
    far = np.concatenate([water, water + [3.0, 0.0, 0.0]])
    assert counterpoise(symbols, near, side, (0, 0), HF) > 0.5
    assert abs(counterpoise(symbols, far, side, (0, 0), HF)) < 1e-4
    assert counterpoise(symbols, near, np.zeros(6, int), (0, 0), HF) == 0.0
    with pytest.raises(InputError, match="counterpoise needs a basis set: the xtb engine has none"):
        check_counterpoise(XTB)


@pytest.mark.shared_data
def test_hyhel63_lysozyme_interface_and_every_measured_mutation():
    """1DQJ (HyHEL-63 Fab – lysozyme): the interface holds the Lys97(C)–Asp32(H) salt bridge of the
    hot spot, every alanine mutation of the AB-Bind file names a residue of the prepared complex, and the
    per-residue MM decomposition adds up to the interaction on both sides."""
    from conftest import shared_pdb

    from bioqmmm.interface.validation import read_measured
    from bioqmmm.preparation import prepare

    prepared = prepare(shared_pdb("1DQJ_ABBind_prepared.pdb"), solvent="implicit", keep_water=True)
    partners = find_partners(prepared.topology, "H,L:C")
    structure, _ = interface_structure(prepared.topology, prepared.positions, partners, prepared.forcefield.templates)
    found = interface_residues(structure, 0.45)
    labels = {f"{r.chain.id}:{r.name}{r.id}" for r in structure.topology.residues() if r.index in set(found)}
    assert {"C:LYS97", "H:ASP32", "H:TYR33", "H:TYR50", "H:TRP98", "C:LYS96"} <= labels
    assert any(c.names[0].startswith("C:LYS97:NZ") and c.names[1].startswith("H:ASP32:OD")
               for c in salt_bridges(structure))
    measured = read_measured(shared_pdb("1DQJ_ABBind_prepared.pdb").parents[1] / "ddg" / "1DQJ_abbind_ddg.csv")
    assert len(measured) == 34
    for text in measured:
        mutant = truncate_to_alanine(structure, [find_mutated(structure.topology, m) for m in parse_mutations(text)])
        assert mutant.topology.getNumAtoms() < structure.topology.getNumAtoms()
    setup = gb_forcefield(prepared.forcefield)
    binding, per_atom, _ = mm_binding(structure, setup)
    residues = per_residue(structure, per_atom)
    side = np.array([structure.side[next(r.atoms()).index] for r in structure.topology.residues()])
    assert residues[side == 0].sum() == pytest.approx(binding.interaction, rel=1e-9)
    assert residues[side == 1].sum() == pytest.approx(binding.interaction, rel=1e-9)


@pytest.mark.slow
def test_variants_shared_over_two_mpi_ranks_equal_the_serial_run(tmp_path):
    """``mpirun -n 2``: the ranks share the variants (one thread each), rank 0 writes the table, and every
    variant's terms equal those of a serial run with the same settings (to float32 MM round-off)."""
    import sys

    from conftest import mpirun, shipped_protocol

    from bioqmmm.run.runner import run_protocol

    for folder in ("serial", "mpi"):
        (tmp_path / folder).mkdir()
    serial = run_protocol(shipped_protocol(tmp_path / "serial", "interface.yaml", "out"), progress=False)
    protocol = shipped_protocol(tmp_path / "mpi", "interface.yaml", "out")
    run = mpirun(sys.executable, "-m", "bioqmmm.cli", "run", str(protocol), "--no-progress")
    assert run.returncode == 0, run.stderr[-2000:]
    parallel = {r["variant"]: r for r in _csv(protocol.parent / "out" / "variants.csv")}
    expected = {r["variant"]: r for r in _csv(tmp_path / "serial" / "out" / "variants.csv")}
    assert set(parallel) == set(expected) == {"wild_type", "A:K2A", "B:D2A", "A:K2A,B:D2A"}
    for name, row in expected.items():
        for key in ("mmgbsa", "qm_correction", "qmmm"):
            assert float(parallel[name][key]) == pytest.approx(float(row[key]), abs=1e-3), (name, key)  # float32 MM
    assert serial["variants"] == 4


def test_interface_command_prepares_writes_the_protocol_file_and_runs(tmp_path, capsys):
    """``bioqmmm interface`` on a raw PDB file: prepared (implicit solvent) into OUT/prepared, OUT/interface.yaml
    written and run; a rerun reuses the preparation and every stored variant."""
    from bioqmmm.cli import main

    topology, positions = salt_bridge_pair()
    with open(tmp_path / "pair.pdb", "w") as handle:
        app.PDBFile.writeFile(topology, positions * 10.0 * unit.angstrom, handle)
    out = tmp_path / "out"
    args = ["interface", str(tmp_path / "pair.pdb"), "-o", str(out), "--budget", "40", "--refine-steps", "2",
            "--mutation", "A:K2A,B:D2A", "--no-progress"]
    assert main(args) == 0
    assert "binding qmmm" in capsys.readouterr().out
    config = yaml.safe_load((out / "interface.yaml").read_text())
    assert config["qm"] == {"engine": "xtb", "method": "gfn2", "options": {"electronic_temperature": 1000.0}}
    assert config["protocol"]["mutations"] == ["A:K2A,B:D2A"]
    assert json.loads((out / "prepared" / "prepare.json").read_text())["options"]["solvent"] == "implicit"
    stamp = (out / "prepared" / "system.xml").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "prepared" / "system.xml").stat().st_mtime_ns == stamp
    assert main(["interface", str(tmp_path / "pair.pdb"), "-o", str(tmp_path / "bad"), "--counterpoise"]) == 1
    assert "counterpoise needs a basis set" in capsys.readouterr().err


def _residue(topology: app.Topology, chain, name: str, number: str, atoms: list[tuple[str, str]], code: str = " "):
    residue = topology.addResidue(name, chain, number, code)
    return {n: topology.addAtom(n, app.Element.getBySymbol(e), residue) for n, e in atoms}


def test_disulfide_cysteines_and_insertion_codes_in_mutations():
    """A Cys in a disulfide is not truncated (its partner would become a thiolate); antibody numbers with
    insertion codes (H:100 and H:100A) name different residues."""
    topology = app.Topology()
    chain = topology.addChain("H")
    backbone = [("N", "N"), ("CA", "C"), ("CB", "C"), ("C", "C"), ("O", "O")]
    first = _residue(topology, chain, "CYS", "22", backbone + [("SG", "S")])
    second = _residue(topology, chain, "CYS", "95", backbone + [("SG", "S")])
    topology.addBond(first["SG"], second["SG"])
    _residue(topology, chain, "TYR", "100", backbone)
    _residue(topology, chain, "SER", "100", backbone, code="A")
    with pytest.raises(InputError, match="H:CYS22 is in a disulfide"):
        find_mutated(topology, parse_mutations("H:C22A")[0])
    assert find_mutated(topology, parse_mutations("H:Y100A")[0]).name == "TYR"
    assert find_mutated(topology, parse_mutations("H:S100AA")[0]).name == "SER"
    with pytest.raises(InputError, match="residue H:100 is TYR, not S"):
        find_mutated(topology, parse_mutations("H:S100A")[0])


def test_neutral_lysine_makes_no_salt_bridge(pair):
    """Charged groups are read from their hydrogens: the Lys without Hζ3 (LYN, as PROPKA may choose) is no
    cation."""
    hz3 = next(a.index for a in pair.topology.atoms() if a.name == "HZ3")
    neutral = pair.subset([i for i in range(len(pair.positions)) if i != hz3])
    assert len(salt_bridges(pair)) == 1 and salt_bridges(neutral) == []
