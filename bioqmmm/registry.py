"""Named things of one kind, found by name: the protocols (:mod:`bioqmmm.protocols.registry`) and the QM
engines (:mod:`bioqmmm.qm.factory`) are both one of these."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bioqmmm.errors import InputError


class Registry:
    """Items with a ``name`` attribute, by name. ``load(registry)`` adds the built-in ones on first use; an
    unknown name is an :class:`~bioqmmm.errors.InputError` listing the known ones."""

    def __init__(self, kind: str, load: Callable[[Registry], None]) -> None:
        self.kind = kind
        self._load = load
        self._items: dict[str, Any] = {}
        self._loaded = False

    def add(self, item: Any) -> Any:
        """Add ``item`` (a name taken by another item is an error); return it."""
        known = self._items.get(item.name)
        if known is not None and known != item:
            raise ValueError(f"a {self.kind} named {item.name!r} is registered already")
        self._items[item.name] = item
        return item

    def all(self) -> dict[str, Any]:
        """Every item by name, sorted."""
        if not self._loaded:
            self._load(self)  # a failure propagates, and the next lookup loads again
            self._loaded = True
        return dict(sorted(self._items.items()))

    def get(self, name: str) -> Any:
        """The item called ``name``."""
        items = self.all()
        if name not in items:
            raise InputError(f"unknown {self.kind} {name!r}; known: {', '.join(items)}")
        return items[name]
