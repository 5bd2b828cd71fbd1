"""QM engines: the :class:`QMEngine` protocol, the PySCF engine and the xTB engine."""

from bioqmmm.qm.base import AtomicPolynomialPotential, PolynomialPotential, QMEngine, QMInfo, QMMoments, QMResult
from bioqmmm.qm.ladder import DEFAULT_LADDER, SCFStrategy
from bioqmmm.qm.pyscf_engine import PySCFEngine
from bioqmmm.qm.xtb_engine import XTBEngine

__all__ = [
    "DEFAULT_LADDER",
    "AtomicPolynomialPotential",
    "PolynomialPotential",
    "PySCFEngine",
    "QMEngine",
    "QMInfo",
    "QMMoments",
    "QMResult",
    "SCFStrategy",
    "XTBEngine",
]
