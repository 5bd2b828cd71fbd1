"""The complete model of each partition: which groups are QM → a QMMMSystem (or an MM System).

A partition is the set of groups treated at the high level, besides the core. :class:`PartitionModels`
builds the model of a partition when it is first needed and keeps the most recently used ones, each in
its own evaluation Context (an SCF guess per partition, so warm starts survive from step to step).
Two builders:

* :func:`qmmm_builder`: the QM region is the core region plus the groups' atoms (whole molecules, so
  no new link atoms), its charge the core's plus each group's net MM charge, its multiplicity the
  core's; each partition is a full QMMMSystem over the reference System.
  A group's QM energy includes its whole electronic energy (−13,300 kJ/mol for a water at GFN2-xTB)
  where its MM energy has only its intramolecular terms; moving a group between levels must not cost
  that difference, or the transition forces would be huge. Each group therefore carries a constant
  offset c_g = E_QM(g alone, gas phase) − E_MM,internal(g), taken once per kind of molecule at the start
  structure (:func:`group_offsets`) and subtracted whenever g is QM, so E(P ∪ g) − E(P) is the change of
  g's interactions and deformation only. Constants leave every partition's forces unchanged.
* :func:`mm_builder`: two MM models of the same particles; the core and the partition's groups take the
  high model's nonbonded parameters (charge, σ, ε), all else the low model's (pairs of one high and one low
  atom mix their parameters as the force field does; exceptions stay the low model's). All partitions share
  one Context whose parameters are switched on demand. No QM: the test bed of the adaptive schemes (e.g.
  TIP3P inside, a recharged water outside).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import openmm
from openmm import app, unit

from bioqmmm.errors import InputError
from bioqmmm.qmmm.surgery import mm_charges, qm_internal_forces
from bioqmmm.region.region import QMRegion
from bioqmmm.region.selection import describe_atom, element_symbols
from bioqmmm.simulation.composite import Evaluated, ModelContext, remember, remembered

#: Partition (QM groups) → the model: a QMMMSystem, an openmm.System, or an object that evaluates itself
#: (``evaluate(positions, box, step)``, ``forget()``, ``system``, ``qmmm``).
Builder = Callable[[frozenset[int]], object]


class PartitionModels:
    """Evaluation Contexts of partition models, built on first use, the ``capacity`` most recent kept."""

    def __init__(self, build: Builder, capacity: int, platform: str = "CPU", threads: int | None = None) -> None:
        self.build = build
        self.capacity = int(capacity)
        self.platform, self.threads = platform, threads
        self.built = 0
        self._models: OrderedDict[frozenset[int], ModelContext] = OrderedDict()

    def get(self, groups: frozenset[int]) -> ModelContext:
        """The evaluation Context of the partition with ``groups`` at the high level."""
        model = self._models.get(groups)
        if model is None:
            model = self.build(groups)
            if not hasattr(model, "evaluate"):  # a System or QMMMSystem: its own evaluation Context
                model = ModelContext(model, self.platform, self.threads)
            self.built += 1
            self._models[groups] = model
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
        self._models.move_to_end(groups)
        return model

    def items(self) -> list[tuple[frozenset[int], ModelContext]]:
        """(partition, evaluation Context) of the models kept, least recently used first."""
        return list(self._models.items())

    def forget(self) -> None:
        """Drop every remembered result (after a checkpoint restore)."""
        for model in self._models.values():
            model.forget()


def check_whole_molecules(topology: app.Topology, groups: Sequence[Sequence[int]]) -> None:
    """Every group is a whole molecule: no bond leaves it (an adaptive boundary never cuts bonds)."""
    owner = {int(i): k for k, group in enumerate(groups) for i in group}
    atoms = list(topology.atoms())
    for bond in topology.bonds():
        a, b = bond[0].index, bond[1].index
        if (a in owner or b in owner) and owner.get(a) != owner.get(b):
            inside, outside = (a, b) if a in owner else (b, a)
            raise InputError(f"adaptive group {owner[inside]} is not a whole molecule: "
                             f"{describe_atom(atoms[inside])} is bonded to {describe_atom(atoms[outside])}")


def group_charges(system: openmm.System, groups: Sequence[Sequence[int]]) -> list[int]:
    """Net MM charge (e) of each group, which must be an integer."""
    charges = mm_charges(system)
    totals = []
    for k, group in enumerate(groups):
        q = float(charges[list(group)].sum())
        if abs(q - round(q)) > 1e-3:
            raise InputError(f"adaptive group {k} carries a net MM charge of {q:.4f} e, not an integer")
        totals.append(int(round(q)))
    return totals


def qmmm_builder(topology: app.Topology, system: openmm.System, core: QMRegion,
                 groups: Sequence[Sequence[int]], make: Callable[[QMRegion], object]) -> Builder:
    """Partition → QMMMSystem made by ``make`` (e.g. a run's ``model_at``) for the core plus those groups."""
    check_whole_molecules(topology, groups)
    charges = group_charges(system, groups)
    core_atoms = set(core.atoms)
    clash = [k for k, g in enumerate(groups) if core_atoms & set(int(i) for i in g)]
    if clash:
        raise InputError(f"adaptive group {clash[0]} overlaps the core QM region")
    n_core = len(core.atoms)
    link_symbols = core.symbols[n_core:]

    def build(qm_groups: frozenset[int]) -> object:
        atoms = tuple(sorted(core_atoms.union(*(map(int, groups[g]) for g in qm_groups))))
        region = QMRegion(atoms, element_symbols(topology, atoms) + link_symbols,
                          core.charge + sum(charges[g] for g in qm_groups), core.multiplicity, core.links,
                          core.boundary_charges)
        return make(region)

    return build


#: Gas-phase QM energy (kJ/mol) of a molecule: (element symbols, positions nm, charge e) → energy.
GasEnergy = Callable[[list[str], np.ndarray, int], float]


def group_offsets(topology: app.Topology, system: openmm.System, groups: Sequence[Sequence[int]],
                  positions: np.ndarray, gas_energy: GasEnergy) -> np.ndarray:
    """c_g = E_QM(g alone) − E_MM,internal(g) (kJ/mol) of every group, one QM calculation per kind of molecule
    (residue names and elements), at the positions (nm) of its first group."""
    charges = group_charges(system, groups)
    residues = {atom.index: atom.residue.name for atom in topology.atoms()}
    offsets, known = np.zeros(len(groups)), {}
    for k, group in enumerate(groups):
        atoms = [int(i) for i in group]
        symbols = list(element_symbols(topology, atoms))
        kind = (tuple(residues[i] for i in atoms), tuple(symbols), charges[k])
        if kind not in known:
            known[kind] = gas_energy(symbols, positions[atoms], charges[k]) - _internal_mm_energy(system, atoms,
                                                                                                  positions)
        offsets[k] = known[kind]
    return offsets


def _internal_mm_energy(system: openmm.System, atoms: list[int], positions: np.ndarray) -> float:
    """The force field's terms among ``atoms`` only (kJ/mol): what becomes QM when they do."""
    internal = openmm.System()
    for i in range(system.getNumParticles()):
        internal.addParticle(system.getParticleMass(i))
    internal.setDefaultPeriodicBoxVectors(*system.getDefaultPeriodicBoxVectors())
    for force in qm_internal_forces(system, atoms):
        internal.addForce(force)
    if internal.getNumForces() == 0:
        return 0.0
    context = openmm.Context(internal, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def mm_builder(low: openmm.System, high: openmm.System, core: Sequence[int], groups: Sequence[Sequence[int]],
               platform: str = "CPU", threads: int | None = None) -> Builder:
    """Partition → ``low`` with the core's and the partition groups' nonbonded parameters taken from ``high``.

    Every partition shares one Context of ``low``: switching partitions rewrites the parameters that differ
    (``updateParametersInContext``), which costs far less than a Context per partition."""
    if low.getNumParticles() != high.getNumParticles():
        raise InputError(f"the two MM models differ in particle count ({low.getNumParticles()} and "
                         f"{high.getNumParticles()})")
    shared = _SharedMMContext(low, high, [int(i) for i in core], [[int(i) for i in g] for g in groups], platform,
                              threads)
    return lambda qm_groups: _MMPartition(shared, qm_groups)


class _SharedMMContext:
    """One Context of the low MM model whose nonbonded parameters are set to those of a partition on demand."""

    def __init__(self, low: openmm.System, high: openmm.System, core: list[int], groups: list[list[int]],
                 platform: str, threads: int | None) -> None:
        self.system = copy.deepcopy(low)
        self.force = _nonbonded(self.system, "low")
        high_force = _nonbonded(high, "high")  # read now: the force lives only as long as ``high``
        self.low = [self.force.getParticleParameters(i) for i in range(low.getNumParticles())]
        self.high = [high_force.getParticleParameters(i) for i in range(high.getNumParticles())]
        self.core, self.groups = core, groups
        for i in core:
            self.force.setParticleParameters(i, *self.high[i])
        self.context = ModelContext(self.system, platform, threads)
        self.current: frozenset[int] = frozenset()

    def select(self, qm_groups: frozenset[int]) -> None:
        """Give the Context the parameters of the partition with ``qm_groups`` at the high level."""
        if qm_groups == self.current:
            return
        for g in qm_groups ^ self.current:
            table = self.high if g in qm_groups else self.low
            for i in self.groups[g]:
                self.force.setParticleParameters(i, *table[i])
        self.force.updateParametersInContext(self.context.context)
        self.context.forget()
        self.current = qm_groups


class _MMPartition:
    """The view of one partition on a :class:`_SharedMMContext` (what :class:`PartitionModels` keeps)."""

    qmmm = None

    def __init__(self, shared: _SharedMMContext, qm_groups: frozenset[int]) -> None:
        self.shared, self.groups = shared, frozenset(qm_groups)
        self.system = shared.system
        self._last: Evaluated | None = None

    def evaluate(self, positions: np.ndarray, box: np.ndarray | None, step: int) -> tuple[float, np.ndarray]:
        """Energy (kJ/mol) and forces (kJ/mol/nm) of this partition at ``positions`` (nm)."""
        if remembered(self._last, positions, box):
            return self._last[2], self._last[3]
        self.shared.select(self.groups)
        energy, forces = self.shared.context.evaluate(positions, box, step)
        self._last = remember(positions, box, energy, forces)
        return energy, forces

    def forget(self) -> None:
        self._last = None


def _nonbonded(system: openmm.System, name: str) -> openmm.NonbondedForce:
    forces = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)]
    if len(forces) != 1:
        raise InputError(f"the {name} MM model needs exactly one NonbondedForce, it has {len(forces)}")
    return forces[0]
