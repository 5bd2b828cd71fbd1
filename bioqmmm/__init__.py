"""bioqmmm: biomolecular QM/MM with OpenMM and PySCF."""

from bioqmmm import protein
from bioqmmm.preparation import freeze_beyond, load_prepared, prepare
from bioqmmm.system import QMMMSystem

__version__ = "0.1.0"
__all__ = ["QMMMSystem", "__version__", "freeze_beyond", "load_prepared", "prepare", "protein"]
