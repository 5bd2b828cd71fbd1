"""QM engines: the :class:`QMEngine` protocol and the PySCF engine."""

from bioqmmm.qm.base import PolynomialPotential, QMEngine, QMInfo, QMMoments, QMResult
from bioqmmm.qm.ladder import DEFAULT_LADDER, SCFStrategy
from bioqmmm.qm.pyscf_engine import PySCFEngine

__all__ = [
    "DEFAULT_LADDER",
    "PolynomialPotential",
    "PySCFEngine",
    "QMEngine",
    "QMInfo",
    "QMMoments",
    "QMResult",
    "SCFStrategy",
]
