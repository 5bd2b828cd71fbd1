"""bioqmmm: biomolecular QM/MM with OpenMM and PySCF.

The names below are imported on first use (PEP 562), so ``import bioqmmm.qm`` does not load the
preparation stack (PDBFixer, RDKit, ...) and a bare engine runs where only PySCF and OpenMM are
installed (a GPU node, say).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["QMMMSystem", "__version__", "freeze_beyond", "load_prepared", "prepare", "protein"]

_LAZY = {
    "QMMMSystem": "bioqmmm.qmmm.system",
    "freeze_beyond": "bioqmmm.preparation",
    "load_prepared": "bioqmmm.preparation",
    "prepare": "bioqmmm.preparation",
}


def __getattr__(name: str):
    if name == "protein":
        return importlib.import_module("bioqmmm.region.protein")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bioqmmm' has no attribute {name!r}")
