"""Protocols built on the QM/MM model: reaction paths (:mod:`bioqmmm.paths.neb`)."""
