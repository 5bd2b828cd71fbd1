"""The adaptive QM/MM Hamiltonian: a buffered partition, a model per partition, a combination scheme.

:class:`AdaptiveHamiltonian` is what MD runs on: its :attr:`~AdaptiveHamiltonian.system` holds the
particles, masses and constraints of the reference (the core's own constraints freed, as in a fixed
QM/MM model) and one ``PythonForce`` that, at every force call, finds each group's weight
(:mod:`bioqmmm.adaptive.partition`), evaluates the partitions the scheme needs
(:mod:`bioqmmm.adaptive.models`) and combines them (:mod:`bioqmmm.adaptive.schemes`). Every change of
a group's state (MM, buffer, QM) is logged with its step and distance; the counters say how many
evaluations were made and how often the buffer cap was exceeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import openmm

from bioqmmm.adaptive.models import Builder, PartitionModels
from bioqmmm.adaptive.partition import BufferedPartition, GroupWeights
from bioqmmm.adaptive.schemes import SCHEMES, interpolation, pap
from bioqmmm.errors import InputError
from bioqmmm.simulation.composite import CompositeHamiltonian, Evaluated, check_same_particles, remember, remembered

MM, BUFFER, QM = "mm", "buffer", "qm"


@dataclass(frozen=True)
class Exchange:
    """A group changing state at an OpenMM step: ``before``/``after`` one of mm, buffer, qm; ``r_nm`` its
    distance from the centre then."""

    step: int
    group: int
    before: str
    after: str
    r_nm: float


class _PartitionStates:
    """``get_state``/``set_state`` of one kind of object (``engine``: SCF guess, ``kernel``: cached result) of
    every partition model kept, keys prefixed by the partition (``"3-7."``, ``"none."``): what a checkpoint
    stores, so a resumed run continues bit for bit."""

    def __init__(self, hamiltonian: AdaptiveHamiltonian, attribute: str) -> None:
        self._hamiltonian, self._models, self._attribute = hamiltonian, hamiltonian.models, attribute

    def get_state(self) -> dict[str, np.ndarray]:
        state = {}
        for groups, model in self._models.items():
            if model.qmmm is not None:
                label = "-".join(map(str, sorted(groups))) or "none"
                state.update({f"{label}.{key}": value
                              for key, value in getattr(model.qmmm, self._attribute).get_state().items()})
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self._hamiltonian.forget()
        by_partition: dict[str, dict[str, np.ndarray]] = {}
        for name, value in state.items():
            label, key = name.split(".", 1)
            by_partition.setdefault(label, {})[key] = value
        for label, part in by_partition.items():
            groups = frozenset() if label == "none" else frozenset(int(g) for g in label.split("-"))
            getattr(self._models.get(groups).qmmm, self._attribute).set_state(part)


class AdaptiveHamiltonian(CompositeHamiltonian):
    """Adaptive QM/MM (or MM/MM) over ``partition``'s groups.

    build: partition (QM groups) → model (:func:`~bioqmmm.adaptive.models.qmmm_builder` or
    :func:`~bioqmmm.adaptive.models.mm_builder`). template: the System whose masses, constraints and box
    the dynamics uses (the MM reference); constraints between two ``core`` atoms are dropped when
    ``free_core`` (a QM core relaxes its X–H bonds as in a fixed QM/MM model). scheme: ``"pap"``
    (Hamiltonian, 2ⁿ evaluations for n buffer groups) or ``"interpolation"`` (2 evaluations, not
    Hamiltonian). offsets: constant c_g (kJ/mol) subtracted from a partition's energy for each QM group g
    (:func:`~bioqmmm.adaptive.models.group_offsets`; none for two MM models). cache: partition models kept
    (default 2^max_buffer_groups + 4).
    """

    def __init__(self, partition: BufferedPartition, build: Builder, template: openmm.System, *,
                 core: Sequence[int], scheme: str = "pap", free_core: bool = True, platform: str = "CPU",
                 threads: int | None = None, cache: int | None = None, offsets: np.ndarray | None = None) -> None:
        if scheme not in SCHEMES:
            raise InputError(f"unknown adaptive scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
        self.partition = partition
        self.scheme = scheme
        self.core = np.array(sorted(int(i) for i in core), dtype=int)
        self.offsets = np.zeros(len(partition.groups)) if offsets is None else np.asarray(offsets, dtype=float)
        if self.offsets.shape != (len(partition.groups),):
            raise InputError(f"give one offset per group ({len(partition.groups)}), not {self.offsets.shape}")
        self.models = PartitionModels(build, cache or 2**partition.max_buffer_groups + 4, platform, threads)
        check_same_particles(template, [("the model without buffer groups", self.models.get(frozenset()).system)],
                             "the template System")
        self.system = self.host_system(template, "AdaptiveQMMM",
                                       frozenset(self.core.tolist()) if free_core else frozenset())
        self.engine = _PartitionStates(self, "engine")
        self.kernel = _PartitionStates(self, "kernel")
        self.exchanges: list[Exchange] = []
        self.evaluations = 0
        self.capped_steps = 0
        self.last: GroupWeights | None = None
        self.last_step: int | None = None
        self._states = np.full(len(partition.groups), MM, dtype=object)
        self._evaluated: Evaluated | None = None

    @property
    def hamiltonian(self) -> bool:
        """Whether the forces are the exact gradient of the energy (the permuted scheme)."""
        return self.scheme == "pap"

    def evaluate(self, positions: np.ndarray, box: np.ndarray | None = None, step: int = 0) -> tuple[float, np.ndarray]:
        """Energy (kJ/mol) and forces (kJ/mol/nm) at ``positions`` (nm); the same structure twice is free."""
        positions = np.asarray(positions, dtype=float)
        if remembered(self._evaluated, positions, box):
            return self._evaluated[2], self._evaluated[3].copy()
        weights = self.partition.weights(positions, box)
        n = len(positions)

        def evaluate(groups: frozenset[int]) -> tuple[float, np.ndarray]:
            energy, forces = self.models.get(groups).evaluate(positions, box, step)
            return energy - float(self.offsets[sorted(groups)].sum()), forces

        if self.scheme == "pap":
            energy, forces, calls = pap(weights, evaluate, n)
        else:
            energy, forces, calls = interpolation(weights, evaluate, self.partition.groups, self.core, n)
        self.evaluations += calls
        self.capped_steps += bool(weights.dropped)
        self._log(weights, positions, box, step)
        self.last, self.last_step = weights, step
        self._evaluated = remember(positions, box, energy, forces.copy())
        return energy, forces

    def _log(self, weights: GroupWeights, positions: np.ndarray, box: np.ndarray | None, step: int) -> None:
        states = np.full(len(self.partition.groups), MM, dtype=object)
        states[list(weights.inner)] = QM
        states[list(weights.buffer)] = BUFFER
        changed = np.flatnonzero(states != self._states) if self.last is not None else []
        if len(changed):
            r, _ = self.partition.distances(positions, box)
            self.exchanges += [Exchange(int(step), int(g), str(self._states[g]), str(states[g]), float(r[g]))
                               for g in changed]
        self._states = states

    def forget(self) -> None:
        """Drop remembered results (after a checkpoint restore)."""
        self._evaluated = None
        self.models.forget()
