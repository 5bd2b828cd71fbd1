"""What a protocol's entry point receives: the built model and everything around the run.

``bioqmmm run`` (:mod:`bioqmmm.run.runner`) makes one :class:`RunContext` per run (per replica in a
replica set) from a validated protocol file; a protocol never reads the file itself. The context is
also the way to build the same QM region at another level of theory (:meth:`RunContext.model_at`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bioqmmm.qm.factory import Level


@dataclass
class RunContext:
    """One run of a protocol.

    qmmm: the QM/MM model (:class:`~bioqmmm.qmmm.system.QMMMSystem`) at the file's level of theory.
    positions (N, 3) nm and box (3, 3) nm or None: the start structure.
    output: the output folder (created); base: the folder relative paths in the settings start from.
    identity: fingerprint of the model and settings (run lengths excluded): a checkpoint with another
    identity belongs to another run. record: what every ``result.json`` of this run starts with
    (atom counts, level, identity, target). comm: the MPI communicator (or a serial stand-in).
    poll: called by long loops; raises to stop the run (the replica runner's abort).
    model_at(level, region=None): a fresh QMMMSystem of the same region (or of ``region``, a
    :class:`~bioqmmm.region.region.QMRegion`) at another :class:`~bioqmmm.qm.factory.Level` (None: the
    file's own level). inputs_at(level): what that model is built from (system and QM
    settings, plain values), for the identities of sub-runs (endpoints, windows).
    topology, reference_system (OpenMM), forcefield (:class:`~bioqmmm.preparation.forcefields.ForceFieldSetup`
    or None for a built-in example) and level: the model as built, for protocols that pick their own QM
    region (``qmmm`` is None for them).
    system_for(topology): an OpenMM System for another structure with the ``system`` block's force field
    and options (a pdb system's; a prepared one raises InputError), e.g. a host crystal's cell.
    """

    qmmm: Any
    positions: np.ndarray
    box: np.ndarray | None
    output: Path
    base: Path
    identity: str
    record: dict[str, Any]
    comm: Any
    model_at: Callable[..., Any]
    inputs_at: Callable[[Level | None], tuple[Any, Any]]
    topology: Any = None
    reference_system: Any = None
    forcefield: Any = None
    level: Level | None = None
    system_for: Callable[[Any], Any] | None = None
    platform: str = "CPU"
    threads: int | None = None
    progress: bool = True
    poll: Callable[[], None] | None = None
