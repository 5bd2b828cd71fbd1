"""YAML → frozen dataclasses, with every error naming the key and the line.

A schema is a tree of frozen dataclasses (:mod:`bioqmmm.protocols.settings`): field names are the
keys, type hints the allowed types (``int``, ``float``, ``str``, ``bool``, ``Literal``, ``list[...]``,
unions, ``dict`` and nested dataclasses), defaults make keys optional. Two field metadata entries
steer the builder: ``"tagged"``, a function from the mapping's ``type`` value to the dataclass to
build (the protocol section, looked up in the registry); ``"schema"``, a function from the keys read
so far to ``(dataclass, excluded names)``, for a ``dict`` whose keys are some of that dataclass's
fields, each checked against its type hint (engine options, whose schema depends on ``engine``).
Cross-field checks raise :class:`~bioqmmm.protocols.settings.FieldError` naming the offending key.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from bioqmmm.errors import InputError
from bioqmmm.protocols.settings import FieldError, describe_type


class ProtocolError(InputError):
    """A protocol file that does not fit the schema (message: ``FILE:LINE: problem``)."""


def load_yaml_dataclass(cls: type, path: str | Path):
    """Parse ``path`` into an instance of the dataclass ``cls``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ProtocolError(f"cannot read protocol file {path}: {exc.strerror}") from exc
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ProtocolError(f"{path}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if node is None:
        raise ProtocolError(f"{path}: the protocol file is empty")
    return _Builder(path).build(cls, node, "the file")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-8`` (no dot, YAML 1.2 style) as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _Builder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._loader = _Loader("")

    def error(self, node: yaml.Node, message: str) -> ProtocolError:
        return ProtocolError(f"{self.path}:{_line(node)}: {message}")

    def build(self, cls: type, node: yaml.Node, where: str, skip: tuple[str, ...] = ()):
        """An instance of ``cls`` from the mapping ``node``; keys in ``skip`` are read elsewhere."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{where} must be a mapping of keys to values")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        key_nodes: dict[str, yaml.Node] = {}
        later: list[tuple[str, yaml.Node]] = []  # mappings whose schema depends on other keys
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error(key_node, f"keys in {where} must be plain names")
            key = key_node.value
            if key in key_nodes:
                raise self.error(key_node, f"key {key!r} appears twice in {where}")
            key_nodes[key] = key_node
            if key in skip:
                continue
            if key not in fields:
                hint = difflib.get_close_matches(key, list(fields), n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else f"; known keys: {', '.join(fields)}"
                raise self.error(key_node, f"unknown key {key!r} in {where}{suggestion}")
            if "schema" in fields[key].metadata:
                later.append((key, value_node))
            else:
                values[key] = self.convert(hints[key], value_node, f"{key!r}", fields[key])
        for name, f in fields.items():
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and name not in values and name not in dict(later):
                raise self.error(node, f"missing required key {name!r} in {where}")
        try:
            for key, value_node in later:
                values[key] = self.mapping(*fields[key].metadata["schema"](values), value_node, f"{key!r}")
            return cls(**values)
        except FieldError as exc:
            raise self.error(key_nodes.get(exc.key, node), f"{exc.key!r}: {exc}") from None

    def mapping(self, schema: type, exclude: tuple[str, ...], node: yaml.Node, where: str) -> dict[str, Any]:
        """A mapping of some of ``schema``'s fields (not ``exclude``), each checked against its type hint."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{where} must be a mapping")
        hints = typing.get_type_hints(schema)
        allowed = sorted(set(hints) - set(exclude))
        out = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in out:
                raise self.error(key_node, f"key {key!r} appears twice in {where}")
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                more = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(allowed)}"
                raise self.error(key_node, f"unknown key {key!r} in {where}{more}")
            out[key] = self.convert(hints[key], value_node, f"{key!r}")
        return out

    def convert(self, hint, node: yaml.Node, where: str, f: dataclasses.Field | None = None):
        if f is not None and "tagged" in f.metadata:
            return self.build(self._tagged(f.metadata["tagged"], node, where), node, where, skip=("type",))
        origin = typing.get_origin(hint)
        if origin in (Union, types.UnionType):
            arms = typing.get_args(hint)
            sections = [arm for arm in arms if dataclasses.is_dataclass(arm)]
            if isinstance(node, yaml.MappingNode) and len(sections) == 1:  # its own errors name key and line
                return self.build(sections[0], node, where)
            for arm in arms:
                try:
                    return self.convert(arm, node, where, f)
                except ProtocolError:
                    continue
            raise self.error(node, f"{where} must be {describe_type(hint)}")
        if hint is type(None):
            value = self._scalar(node, where)
            if value is not None:
                raise self.error(node, f"{where} must be null")
            return None
        if origin is Literal:
            value = self._scalar(node, where)
            choices = typing.get_args(hint)
            if value not in choices:
                raise self.error(node, f"{where} must be one of {', '.join(map(repr, choices))}, not {value!r}")
            return value
        if dataclasses.is_dataclass(hint):
            return self.build(hint, node, where)
        if origin in (list, tuple):
            if not isinstance(node, yaml.SequenceNode):
                raise self.error(node, f"{where} must be a list")
            (item,) = typing.get_args(hint)[:1]
            return tuple(self.convert(item, child, f"an item of {where}") for child in node.value)
        if hint is dict or origin is dict:
            if not isinstance(node, yaml.MappingNode):
                raise self.error(node, f"{where} must be a mapping")
            return self._loader.construct_object(node, deep=True)
        value = self._scalar(node, where)
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if hint in (int, float, str, bool) and (type(value) is not hint):
            raise self.error(node, f"{where} must be {describe_type(hint)}, not {_show(value)}")
        return value

    def _tagged(self, lookup, node: yaml.Node, where: str) -> type:
        """The dataclass ``lookup`` gives for the mapping's ``type`` key."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{where} must be a mapping")
        for key_node, value_node in node.value:
            if key_node.value == "type":
                tag = self._scalar(value_node, "'type'")
                try:
                    return lookup(tag)
                except InputError as exc:
                    raise self.error(value_node, f"{where}: {exc}") from None
        try:
            lookup(None)
        except InputError as exc:
            raise self.error(node, f"missing required key 'type' in {where}: {exc}") from None
        raise AssertionError("a tagged lookup must refuse a missing type")

    def _scalar(self, node: yaml.Node, where: str):
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, f"{where} must be a single value, not a list or mapping")
        return self._loader.construct_object(node, deep=True)


def _show(value) -> str:
    return f"{type(value).__name__} {value!r}"
