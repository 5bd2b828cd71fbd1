"""bioqmmm: biomolecular QM/MM with OpenMM and PySCF."""

from bioqmmm import protein
from bioqmmm.system import QMMMSystem

__version__ = "0.1.0"
__all__ = ["QMMMSystem", "__version__", "protein"]
