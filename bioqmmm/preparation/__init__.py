"""Preparation of PDB/mmCIF entries for QM/MM: :func:`prepare`, :func:`load_prepared`, :func:`freeze_beyond`."""

from bioqmmm.preparation.active import freeze_beyond
from bioqmmm.preparation.pipeline import OPTIONS, prepare
from bioqmmm.preparation.prepared import Prepared, load_prepared
from bioqmmm.preparation.report import Report

__all__ = ["OPTIONS", "Prepared", "Report", "freeze_beyond", "load_prepared", "prepare"]
