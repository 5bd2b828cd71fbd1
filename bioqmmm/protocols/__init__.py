"""Protocols: one module each (``md``, ``optimize``, ``neb``, ``pmf``), found by name through
:mod:`bioqmmm.protocols.registry`; each declares its settings (:mod:`bioqmmm.protocols.settings`) and
one entry point taking a :class:`~bioqmmm.protocols.context.RunContext`. See ``docs/architecture.md``."""
