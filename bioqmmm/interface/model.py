"""The complex as it is scored: the two partners, the waters that bridge them, and its MM systems.

Waters are kept when their oxygen is within ``water_cutoff`` of a nitrogen or oxygen of each partner
(a bridging water) and belong to the partner whose N/O is nearer; other waters and ions are removed
(the implicit solvent replaces them). Systems are the prepared force field without cut-offs or
constraints, with the OBC2 generalised Born model (Onufriev, Bashford & Case, Proteins 55, 383
(2004)) as OpenMM's native ``GBSAOBCForce`` (ε_in 1, ε_out 78.5, ACE non-polar term): the same energy
as the ``implicit/obc2.xml`` CustomGBForce (a test checks it), through its own kernel instead of the generic one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import openmm
from openmm import app, unit

from bioqmmm.errors import InputError
from bioqmmm.interface.partners import IONS, WATER, Partners
from bioqmmm.preparation.forcefields import ForceFieldSetup
from bioqmmm.system_terms import assemble

#: O(water)–N/O distance (nm) below which a water touches a partner.
WATER_CONTACT_NM = 0.35
#: OBC2 radius offset (nm), the same as OpenMM's implicit/obc2.xml and GBSAOBCForce.
OBC_OFFSET_NM = 0.009


@dataclass
class Structure:
    """A Topology with positions (nm), its residue templates (residue index → name) and partner of each atom."""

    topology: app.Topology
    positions: np.ndarray
    side: np.ndarray
    templates: dict[int, str] = field(default_factory=dict)

    def part(self, k: int) -> Structure:
        """Partner ``k`` (0 or 1) alone, at the same positions."""
        return self.subset(np.flatnonzero(self.side == k))

    def subset(self, atoms: Sequence[int]) -> Structure:
        """The atoms ``atoms`` (with their bonds and templates) as a structure of their own."""
        return rebuild(self, atoms)


def rebuild(structure: Structure, keep: Sequence[int], *, atom_names: Mapping[int, str] | None = None,
            residue_names: Mapping[int, str] | None = None,
            added: Mapping[int, Sequence[tuple[str, str, np.ndarray, int]]] | None = None) -> Structure:
    """A new structure of the atoms ``keep`` (old indices), in their old order, with chains, residue ids and
    bonds kept; ``atom_names``/``residue_names`` rename (by old atom/residue index); ``added[residue]``
    appends atoms ``(name, element symbol, position nm, old index of the atom it bonds to)``."""
    atom_names, residue_names, added = atom_names or {}, residue_names or {}, added or {}
    keep_set = {int(i) for i in keep}
    top = app.Topology()
    new_index: dict[int, int] = {}
    new_atoms: dict[int, app.topology.Atom] = {}
    positions, side, templates, extra_bonds = [], [], {}, []
    for chain in structure.topology.chains():
        residues = [r for r in chain.residues() if any(a.index in keep_set for a in r.atoms())]
        if not residues:
            continue
        new_chain = top.addChain(chain.id)
        for res in residues:
            new_res = top.addResidue(residue_names.get(res.index, res.name), new_chain, res.id, res.insertionCode)
            if res.index in structure.templates:
                templates[new_res.index] = structure.templates[res.index]
            for atom in res.atoms():
                if atom.index in keep_set:
                    new_atoms[atom.index] = top.addAtom(atom_names.get(atom.index, atom.name), atom.element, new_res)
                    new_index[atom.index] = len(positions)
                    positions.append(structure.positions[atom.index])
                    side.append(structure.side[atom.index])
            for name, symbol, xyz, host in added.get(res.index, ()):
                extra_bonds.append((top.addAtom(name, app.Element.getBySymbol(symbol), new_res), host))
                positions.append(np.asarray(xyz, float))
                side.append(structure.side[host])
    for a, b in structure.topology.bonds():
        if a.index in new_atoms and b.index in new_atoms:
            top.addBond(new_atoms[a.index], new_atoms[b.index])
    for atom, host in extra_bonds:
        top.addBond(atom, new_atoms[host])
    return Structure(top, np.array(positions), np.array(side, int), templates)


def within(xyz: np.ndarray, points: Sequence[int], targets: Sequence[int], radius: float) -> np.ndarray:
    """Mask over ``points`` (indices into ``xyz``, nm): within ``radius`` nm of any of ``targets`` (k-d tree)."""
    from scipy.spatial import cKDTree

    points, targets = np.asarray(points, dtype=int), np.asarray(targets, dtype=int)
    if not len(points) or not len(targets):
        return np.zeros(len(points), dtype=bool)
    distance, _ = cKDTree(xyz[targets]).query(xyz[points], distance_upper_bound=radius)
    return distance < radius


def _polar(topology: app.Topology) -> np.ndarray:
    return np.array([a.element is not None and a.element.symbol in ("N", "O") for a in topology.atoms()])


def interface_structure(topology: app.Topology, positions: np.ndarray, partners: Partners,
                        templates: Mapping[int, str] | None = None,
                        water_contact: float = WATER_CONTACT_NM) -> tuple[Structure, list[str]]:
    """The complex with each atom's partner, bridging waters kept and assigned, other waters and ions
    removed; also the lines that say what was removed."""
    positions = np.asarray(positions, float)
    atoms = list(topology.atoms())
    side = np.full(len(atoms), -1)
    for atom in atoms:
        if atom.residue.name not in WATER and atom.residue.name not in IONS:
            k = partners.side_of(atom.residue.chain.id)
            side[atom.index] = -1 if k is None else k
    polar = _polar(topology)
    keep = list(np.flatnonzero(side >= 0))
    partner_polar = [np.flatnonzero(polar & (side == k)) for k in (0, 1)]  # protein only: waters do not chain
    waters = [r for r in topology.residues() if r.name in WATER]
    kept_waters = 0
    for res in waters:
        oxygen = [a.index for a in res.atoms() if a.element is not None and a.element.symbol == "O"]
        if not oxygen:
            continue
        nearest = [np.linalg.norm(positions[donors] - positions[oxygen[0]], axis=1).min() if len(donors) else np.inf
                   for donors in partner_polar]
        if max(nearest) < water_contact:
            k = int(np.argmin(nearest))
            for a in res.atoms():
                side[a.index] = k
                keep.append(a.index)
            kept_waters += 1
    removed_ions = sum(1 for r in topology.residues() if r.name in IONS)
    notes = [f"kept {kept_waters} bridging waters of {len(waters)} (O within {water_contact} nm of N/O of both "
             f"partners); removed {len(waters) - kept_waters} other waters and {removed_ions} ions"]
    full = Structure(topology, positions, side, dict(templates or {}))
    return rebuild(full, sorted(keep)), notes


def gb_forcefield(setup: ForceFieldSetup) -> ForceFieldSetup:
    """``setup`` with its implicit-solvent file, if any, replaced by OBC2."""
    files = [f for f in setup.files if not f.startswith("implicit/")]
    if not any(f.startswith("amber") for f in files):
        raise InputError(f"interface scoring uses Amber's OBC2 implicit solvent: force field {files} has none "
                         "(prepare the complex with amber14)")
    return ForceFieldSetup(files + ["implicit/obc2.xml"], dict(setup.extra), {})


def create_systems(structure: Structure, setup: ForceFieldSetup) -> tuple[openmm.System, openmm.System]:
    """(implicit-solvent System, vacuum System) of ``structure``: no cut-off, no constraints.

    ``setup`` is made by :func:`gb_forcefield`. The vacuum System is the same without its GB force.
    """
    forcefield = setup.forcefield()
    residues = list(structure.topology.residues())
    try:
        system = forcefield.createSystem(structure.topology, nonbondedMethod=app.NoCutoff, constraints=None,
                                         rigidWater=False, removeCMMotion=False,
                                         residueTemplates={residues[i]: n for i, n in structure.templates.items()})
    except Exception as exc:  # OpenMM's template errors name the residue
        raise InputError(f"cannot parameterise the interface model: {exc}") from exc
    index = next(k for k, f in enumerate(system.getForces()) if isinstance(f, openmm.CustomGBForce))
    native = native_obc2(system.getForce(index))
    system.removeForce(index)
    vacuum = openmm.XmlSerializer.clone(system)
    system.addForce(native)
    return system, vacuum


def subsystem(system: openmm.System, atoms: Sequence[int]) -> openmm.System:
    """The terms of ``system`` among ``atoms`` only, with the atoms renumbered in their order, without cut-offs.

    A partner's System is cut from the complex's so that every term is the same (OpenMM orders Amber
    improper torsions by atom index, so a partner parameterised on its own can differ by a few kJ/mol).
    """
    return assemble([(system, atoms)], nonbonded_method=openmm.NonbondedForce.NoCutoff)


def native_obc2(custom: openmm.CustomGBForce) -> openmm.GBSAOBCForce:
    """OpenMM's native OBC2 force from the per-particle (charge, offset radius, scaled radius) of
    ``implicit/obc2.xml``: radius = offset radius + 0.009 nm, scale = scaled / offset radius."""
    names = [custom.getPerParticleParameterName(i) for i in range(custom.getNumPerParticleParameters())]
    if names != ["charge", "or", "sr"]:
        raise InputError(f"unexpected OBC2 parameters {names}")
    native = openmm.GBSAOBCForce()
    native.setNonbondedMethod(openmm.GBSAOBCForce.NoCutoff)
    native.setSoluteDielectric(1.0)
    native.setSolventDielectric(78.5)
    for i in range(custom.getNumParticles()):
        charge, offset_radius, scaled = custom.getParticleParameters(i)
        native.addParticle(charge, offset_radius + OBC_OFFSET_NM, scaled / offset_radius)
    return native


def potential_energy(system: openmm.System, positions: np.ndarray, threads: int | None = None,
                     groups: set[int] | None = None) -> float:
    """Potential energy (kJ/mol) of ``system`` (of its force ``groups``, default all) at ``positions`` (nm) on
    OpenMM's CPU platform."""
    platform = openmm.Platform.getPlatformByName("CPU")
    properties = {"Threads": str(threads)} if threads else {}
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform, properties)
    context.setPositions(positions)
    state = context.getState(getEnergy=True, groups=groups or -1)
    return float(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
