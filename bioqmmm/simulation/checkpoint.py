"""Checkpoints: OpenMM's own checkpoint and every piece of Python-side state, in one file.

One ``.npz`` holds the OpenMM checkpoint (positions, velocities, box, step count, time,
integrator random state), the engine state (SCF guess), the QM force's cached result and a
JSON ``meta`` record (protocol fingerprint, step, anything the protocol adds). It is written
to a temporary file, flushed to disk and renamed over the previous checkpoint: a run killed
at any moment leaves either the old or the new checkpoint, never a partial one.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import openmm

from bioqmmm.errors import InputError
from bioqmmm.simulation.identity import require_same_run

FORMAT_VERSION = 1


def write_checkpoint(path: str | Path, context: openmm.Context, qmmm, meta: dict[str, Any]) -> None:
    """Atomically write the checkpoint of ``context`` and ``qmmm`` (a QMMMSystem, or None for an MM
    System) to ``path``."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"openmm": np.frombuffer(context.createCheckpoint(), dtype=np.uint8)}
    if qmmm is not None:
        arrays.update({f"engine.{k}": v for k, v in qmmm.engine.get_state().items()})
        arrays.update({f"kernel.{k}": v for k, v in qmmm.kernel.get_state().items()})
        reference = getattr(qmmm, "reference_kernel", None)
        if reference is not None:  # two-level multiple time steps: the cheap level's cached result
            arrays.update({f"reference.{k}": v for k, v in reference.get_state().items()})
        if qmmm.reference_springs is not None:  # multiple time steps: the fitted springs (bioqmmm.simulation.mts)
            arrays["mts.springs"] = qmmm.reference_springs
    arrays["meta"] = np.array(json.dumps({"format": FORMAT_VERSION, **meta}))
    save_arrays(path, arrays)


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to the ``.npz`` file ``path`` atomically: a temporary file, flushed to disk,
    renamed over the old one (a run killed at any moment leaves a complete file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_directory(path.parent)


Result = TypeVar("Result")


def staged(path: str | Path, identity: str, compute: Callable[[], Result]) -> Result:
    """The result of one stage of a run: read from ``path`` when this run (``identity``) stored it there,
    else ``compute()``, stored atomically (pickled with the identity; a file of another run is refused)."""
    path = Path(path)
    if path.exists():
        with open(path, "rb") as handle:
            stored_identity, result = pickle.load(handle)
        require_same_run(stored_identity, identity, path.parent, what=f"stage file {path.name}")
        return result
    result = compute()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        pickle.dump((identity, result), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return result


def read_meta(path: str | Path) -> dict[str, Any]:
    """The JSON record of a checkpoint, without touching any Context."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return json.loads(str(data["meta"]))
    except Exception as exc:  # zipfile.BadZipFile, KeyError, JSON errors: not a usable checkpoint
        raise InputError(f"cannot read checkpoint {path}: {exc}") from exc


def read_section(path: str | Path, prefix: str) -> dict[str, np.ndarray]:
    """The arrays of a checkpoint whose names start with ``prefix`` (prefix removed), without a Context."""
    with np.load(path, allow_pickle=False) as data:
        return _section(data, prefix)


def read_checkpoint(path: str | Path, context: openmm.Context, qmmm) -> dict[str, Any]:
    """Restore ``context`` and ``qmmm`` (None for an MM System) from ``path``; return its ``meta`` record."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != FORMAT_VERSION:
                raise InputError(f"checkpoint {path} has format {meta.get('format')}, expected {FORMAT_VERSION}")
            context.loadCheckpoint(data["openmm"].tobytes())
            if qmmm is not None:
                qmmm.engine.set_state(_section(data, "engine."))
                qmmm.kernel.set_state(_section(data, "kernel."))
                if getattr(qmmm, "reference_kernel", None) is not None:
                    qmmm.reference_kernel.set_state(_section(data, "reference."))
    except InputError:
        raise
    except Exception as exc:  # BadZipFile, KeyError, OpenMMException (e.g. another platform's checkpoint)
        raise InputError(f"cannot restore checkpoint {path}: {exc}") from exc
    return meta


def _section(data, prefix: str) -> dict[str, np.ndarray]:
    return {key[len(prefix):]: data[key] for key in data.files if key.startswith(prefix)}


def _fsync_directory(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
