"""Run identities: short hashes of what a checkpoint or a stored result was computed from.

A rerun compares the identity of its inputs with the one stored beside the checkpoint: equal, it
resumes; different, the folder belongs to another run and is refused (:func:`require_same_run`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bioqmmm.errors import InputError


def array_digest(array: np.ndarray, decimals: int = 6) -> str:
    """sha256 of an array rounded to ``decimals`` (coordinates in nm: 1e-6 nm)."""
    return hashlib.sha256(np.ascontiguousarray(np.round(array, decimals)).tobytes()).hexdigest()


def fingerprint(*parts) -> str:
    """A short hash of the settings a checkpoint belongs to (run lengths excluded by the caller)."""
    text = json.dumps([asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def require_same_run(stored: str | None, identity: str, folder: str | Path, what: str = "checkpoint") -> None:
    """Refuse to resume from a ``what`` in ``folder`` whose stored identity is not ``identity``."""
    if stored != identity:
        raise InputError(f"{folder} holds a {what} of a different run (other system or settings): "
                         "use another output folder or remove the old one")
