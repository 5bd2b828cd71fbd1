"""Declared settings: one frozen dataclass per protocol (and per nested section), every key with its
type, unit, default, one-line meaning and range check in one place.

The YAML loader (:mod:`bioqmmm.run.schema`) validates protocol files against these dataclasses,
``bioqmmm protocols NAME`` prints them and the key tables of ``docs/running.md`` are generated from
them (:func:`key_rows`), so the three cannot drift apart::

    @dataclass(frozen=True)
    class MySettings(Declared):
        steps: int = setting(doc="number of steps", check="positive")
        timestep_fs: float = setting(0.5, doc="time step", check="positive")

A key's unit is read from its name (``_fs``, ``_nm``, ``_kjmol_nm`` …) unless ``unit`` says otherwise.
Cross-key rules go in :meth:`Declared.check` and raise :class:`FieldError` naming the key at fault.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

#: Unit of a key, from the end of its name (longest suffix first).
UNIT_SUFFIXES = {
    "_kjmol_nm2": "kJ/mol/nm²", "_kjmol_nm": "kJ/mol/nm", "_kjmol": "kJ/mol", "_per_ps": "1/ps", "_fs": "fs",
    "_ps": "ps", "_nm": "nm", "_bar": "bar", "_k": "K",
}

#: Range checks a key can declare: the test and the message when it fails.
CHECKS = {
    "positive": (lambda v: 0 < v < float("inf"), "must be a positive number, not {value}"),
    "positive_int": (lambda v: v >= 1, "must be a positive integer"),
    "non_negative": (lambda v: v >= 0, "must be zero or positive"),
    "fraction": (lambda v: 0 <= v <= 1, "must lie between 0 and 1"),
}


class FieldError(ValueError):
    """Raised while validating a settings dataclass: ``key`` is the field at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def setting(default: Any = dataclasses.MISSING, *, doc: str, unit: str | None = None, check: str | None = None,
            factory: Any = dataclasses.MISSING, **loader: Any) -> Any:
    """A declared key: ``default`` (or ``factory``; neither: required), one-line ``doc``, ``unit`` (default:
    from the key's name) and a range ``check`` (a key of :data:`CHECKS`, applied unless the value is None).
    ``loader`` entries (``tagged``, ``schema``) steer the YAML loader (:mod:`bioqmmm.run.schema`)."""
    if check is not None and check not in CHECKS:
        raise ValueError(f"unknown check {check!r}; known: {', '.join(CHECKS)}")
    return dataclasses.field(default=default, default_factory=factory,
                             metadata={"doc": doc, "unit": unit, "check": check, **loader})


class Declared:
    """Base of settings dataclasses: runs each key's declared check, then :meth:`check`.

    ``new_keys`` (a class attribute): keys added after the first release, left out of
    :func:`settings_record` while at their default, so that runs stored before they existed still resume.
    """

    new_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            name = f.metadata.get("check")
            value = getattr(self, f.name)
            if name is None or value is None:
                continue
            test, message = CHECKS[name]
            if not test(value):
                raise FieldError(f.name, message.format(value=value))
        self.check()

    def check(self) -> None:
        """Rules that join several keys (raise :class:`FieldError`)."""


def settings_record(value: Any) -> Any:
    """``value`` as plain data for run identities: dataclasses as dicts (recursively), each one's
    ``new_keys`` left out while at their default."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        omit = set(getattr(value, "new_keys", ()))
        return {f.name: settings_record(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (f.name in omit and getattr(value, f.name) == f.default)}
    if isinstance(value, tuple | list):
        return [settings_record(v) for v in value]
    if isinstance(value, dict):
        return {k: settings_record(v) for k, v in value.items()}
    return value


def unit_of(f: dataclasses.Field) -> str:
    """The unit of a key: declared, or read from the end of its name ('' when it has none)."""
    if f.metadata.get("unit") is not None:
        return f.metadata["unit"]
    return next((unit for suffix, unit in UNIT_SUFFIXES.items() if f.name.endswith(suffix)), "")


def describe_type(hint) -> str:
    """A type hint in words (``a number``, ``one of 'dcd', 'xtc'``, ``a list of strings``)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    if origin in (list, tuple):
        return f"a list of {_plural(typing.get_args(hint)[0])}"
    if dataclasses.is_dataclass(hint) or hint is dict or origin is dict or hint is Declared:
        return "a mapping"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _plural(hint) -> str:
    return {int: "integers", float: "numbers", str: "strings"}.get(hint, "mappings" if dataclasses.is_dataclass(hint)
                                                                   else describe_type(hint))


def key_rows(cls: type, prefix: str = "") -> list[tuple[str, str, str, str, str]]:
    """(key, type, unit, default, meaning) for every key of ``cls``, nested sections as ``section.key``."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        hint = hints[f.name]
        if f.default is not dataclasses.MISSING:
            default = "none" if f.default is None else _show_default(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = _show_default(f.default_factory())
        else:
            default = "required"
        rows.append((prefix + f.name, describe_type(hint), unit_of(f), default, f.metadata.get("doc", "")))
        for section in _sections(hint):
            rows += key_rows(section, f"{prefix}{f.name}.")
    return rows


def _sections(hint) -> list[type]:
    """The dataclasses a key's value may be (a nested section, or one arm of a union)."""
    arms = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType, list, tuple) else (hint,)
    return [arm for arm in arms if dataclasses.is_dataclass(arm)]


def _show_default(value: Any) -> str:
    if dataclasses.is_dataclass(value):
        return "(section defaults)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return "[" + ", ".join(map(str, value)) + "]" if value else "[]"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    return str(value)


def engine_options(values: dict[str, Any]) -> tuple[type, tuple[str, ...]]:
    """The options schema of the QM engine a section names (key ``engine``, default pyscf): the options
    dataclass and the names it excludes. An unknown engine is a :class:`FieldError` on ``engine``."""
    from bioqmmm.errors import InputError
    from bioqmmm.qm.factory import engine_type

    try:
        kind = engine_type(values.get("engine", "pyscf"))
    except InputError as exc:
        raise FieldError("engine", str(exc)) from None
    return kind.options, kind.excluded


def level_of(section: Any):
    """The :class:`~bioqmmm.qm.factory.Level` of a section with keys ``method``, ``basis``, ``engine`` and
    ``options`` (the basis dropped for engines without one); errors are a :class:`FieldError` on the key."""
    from bioqmmm.errors import InputError
    from bioqmmm.qm.factory import Level, engine_type

    engine_options({"engine": section.engine})
    try:
        engine_type(section.engine).check_method(section.method)
    except InputError as exc:
        raise FieldError("method", str(exc)) from None
    needs_basis = engine_type(section.engine).basis
    if needs_basis and not section.basis:
        raise FieldError("basis", f"QM engine {section.engine!r} needs a basis set")
    try:
        return Level(section.method, section.basis if needs_basis else None, section.engine, dict(section.options))
    except InputError as exc:
        raise FieldError("options", str(exc)) from None
