"""Protocols by name: what ``bioqmmm run`` validates and runs, and ``bioqmmm protocols`` lists.

A protocol is a module of this package with a module-level ``PROTOCOL = Protocol(...)``: its name,
a one-line description, its settings dataclass (keys declared with
:func:`bioqmmm.protocols.settings.setting`) and its entry point ``run(context, settings) -> dict``
(:class:`bioqmmm.protocols.context.RunContext` in, the ``result.json`` record out). The package is
scanned once, on first lookup; :func:`register` adds a protocol defined anywhere else (a plug-in, a
test). There is no other list of protocols.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bioqmmm.protocols.settings import settings_record
from bioqmmm.registry import Registry


@dataclass(frozen=True)
class Protocol:
    """A registered protocol.

    ``length_keys``: settings a rerun may change and still continue the run (the first, if any, is the
    run's length: its target). ``parallel``: the protocol shares its own work out over MPI ranks (a file
    with it takes no ``replicas`` list). ``own_region``: the protocol picks its QM region from the structure
    (the file's ``qm`` block gives only the level; the context has no ``qmmm`` but the model's topology,
    System and force field). Keys added to a protocol later are declared in its settings'
    ``new_keys`` (:class:`~bioqmmm.protocols.settings.Declared`).
    """

    name: str
    description: str
    settings: type
    run: Callable[[Any, Any], dict[str, Any]]
    length_keys: tuple[str, ...] = ()
    parallel: bool = False
    own_region: bool = False

    def __post_init__(self) -> None:
        if not dataclasses.is_dataclass(self.settings):
            raise TypeError(f"protocol {self.name!r}: settings must be a dataclass")
        keys = {f.name for f in dataclasses.fields(self.settings)}
        unknown = [k for k in self.length_keys if k not in keys]
        if unknown:
            raise TypeError(f"protocol {self.name!r}: {unknown} are not keys of {self.settings.__name__}")

    def target(self, settings) -> int | None:
        """The run length a finished run reached (its first length key), or None."""
        return getattr(settings, self.length_keys[0]) if self.length_keys else None

    def identity_record(self, settings) -> dict[str, Any]:
        """The settings a checkpoint belongs to (:func:`~bioqmmm.protocols.settings.settings_record`), run
        lengths set to 1."""
        if type(settings) is not self.settings:
            raise TypeError(f"protocol {self.name!r} takes {self.settings.__name__}, not {type(settings).__name__}")
        return {"type": self.name, **settings_record(settings), **dict.fromkeys(self.length_keys, 1)}


def _scan(protocols: Registry) -> None:
    """Add the ``PROTOCOL`` of every module of this package."""
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__, f"{__package__}."):
        protocol = getattr(importlib.import_module(module.name), "PROTOCOL", None)
        if isinstance(protocol, Protocol):
            protocols.add(protocol)


_PROTOCOLS = Registry("protocol", _scan)


def register(protocol: Protocol) -> Protocol:
    """Add ``protocol`` (a name registered twice by different protocols is an error)."""
    return _PROTOCOLS.add(protocol)


def available() -> dict[str, Protocol]:
    """Every registered protocol by name, the package's own found on first use."""
    return _PROTOCOLS.all()


def get(name: str) -> Protocol:
    """The protocol called ``name``; an :class:`~bioqmmm.errors.InputError` listing the known ones if none is."""
    return _PROTOCOLS.get(name)


def protocol_of(settings: Any) -> Protocol:
    """The protocol whose settings ``settings`` are."""
    for protocol in available().values():
        if type(settings) is protocol.settings:
            return protocol
    raise TypeError(f"{type(settings).__name__} is the settings class of no registered protocol")
