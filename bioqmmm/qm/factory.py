"""QM engines by name, and levels of theory as values.

An engine type registers under a name with the dataclass of its options; a :class:`Level` (engine
name, method, basis, options) is checked against it when it is made, so an unknown engine or
option is an :class:`~bioqmmm.errors.InputError` before anything is computed, and
:func:`create_engine` turns it into a :class:`~bioqmmm.qm.base.QMEngine`. Protocol files name
the engine in their ``qm`` block (``engine: pyscf``); in Python any registered name works::

    engine = create_engine(Level("b3lyp", "6-31g*", options={"conv_tol": 1e-9}))
    mixed = create_engine(Level("mixed", options={"a": Level("hf", "sto-3g"), "b": Level("b3lyp", "6-31g*"),
                                                  "lam": 0.5}))

``mixed`` is the composite engine E(λ) = (1 − λ) E_a + λ E_b (:mod:`bioqmmm.qm.mixed`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bioqmmm.errors import InputError
from bioqmmm.qm.base import QMEngine
from bioqmmm.registry import Registry


@dataclass(frozen=True)
class EngineType:
    """A registered engine: ``create(level, threads)`` builds it; ``options`` is the dataclass whose fields
    (less ``excluded``) are the options a :class:`Level` may set; ``basis`` whether a level needs a basis;
    ``check(options)`` raises InputError for options that cannot work (run when a Level is made);
    ``label(level)`` names a level in results (default ``method/basis``); ``methods``, where given, the
    only methods the engine has."""

    name: str
    description: str
    create: Callable[[Level, int | None], QMEngine]
    options: type
    excluded: tuple[str, ...] = ()
    basis: bool = True
    check: Callable[[Mapping[str, Any]], None] | None = None
    label: Callable[[Level], str] | None = None
    methods: tuple[str, ...] = ()

    def check_method(self, method: str) -> None:
        """InputError unless the engine has ``method`` (engines that list their methods)."""
        if self.methods and method.lower() not in self.methods:
            raise InputError(f"QM engine {self.name!r} has no method {method!r}; known: {', '.join(self.methods)}")

    def option_names(self) -> list[str]:
        return sorted({f.name for f in dataclasses.fields(self.options)} - set(self.excluded))


def register_engine(engine: EngineType) -> EngineType:
    """Make ``engine`` available by its name (in protocol files and :class:`Level`)."""
    return _ENGINES.add(engine)


def engine_types() -> dict[str, EngineType]:
    """Every registered engine by name."""
    return _ENGINES.all()


def engine_type(name: str) -> EngineType:
    """The engine called ``name``; an InputError listing the known ones if none is."""
    return _ENGINES.get(name)


@dataclass(frozen=True)
class Level:
    """A level of theory: ``method`` and ``basis`` (None for engines without one) of engine ``engine``,
    with engine ``options``. Checked when made: the engine exists, the options are its own."""

    method: str = ""
    basis: str | None = None
    engine: str = "pyscf"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kind = engine_type(self.engine)
        unknown = sorted(set(self.options) - set(kind.option_names()))
        if unknown:
            raise InputError(f"unknown option(s) {unknown} of QM engine {self.engine!r}; known: "
                             f"{', '.join(kind.option_names())}")
        kind.check_method(self.method)
        if kind.basis and not self.basis:
            raise InputError(f"QM engine {self.engine!r} needs a basis set (level {self.method!r})")
        if kind.check is not None:
            kind.check(self.options)

    @property
    def label(self) -> str:
        """How results name this level: ``method/basis`` (``method`` alone without a basis) unless the engine
        names its levels itself."""
        kind = engine_type(self.engine)
        if kind.label is not None:
            return kind.label(self)
        return f"{self.method}/{self.basis}" if self.basis else self.method or self.engine


def create_engine(level: Level, threads: int | None = None) -> QMEngine:
    """A new engine at ``level`` (``threads``: CPU threads where the options leave them unset)."""
    return engine_type(level.engine).create(level, threads)


def _options_with_threads(level: Level, threads: int | None) -> dict[str, Any]:
    """The level's options, with ``threads`` where they leave it unset."""
    options = dict(level.options)
    if threads is not None:
        options.setdefault("threads", threads)
    return options


def _create_pyscf(level: Level, threads: int | None) -> QMEngine:
    from bioqmmm.qm.pyscf_engine import PySCFEngine

    return PySCFEngine(level.method, level.basis, **_options_with_threads(level, threads))


def _create_xtb(level: Level, threads: int | None) -> QMEngine:
    from bioqmmm.qm.xtb_engine import XTBEngine

    return XTBEngine(level.method, **_options_with_threads(level, threads))


def _check_xtb(options: Mapping[str, Any]) -> None:
    from bioqmmm.qm.xtb_engine import XTBOptions, check_options

    check_options(XTBOptions(**options))


def _mixed_levels(options: Mapping[str, Any]) -> tuple[Level, Level, float]:
    """The two end levels and λ of a mixed engine's options, each checked."""
    from bioqmmm.qm.mixed import MixedOptions

    try:
        mixed = MixedOptions(**options)
    except TypeError as exc:
        raise InputError(f"mixed engine: {exc}") from exc
    if not 0.0 <= mixed.lam <= 1.0:
        raise InputError(f"mixed engine: lam must lie between 0 and 1, not {mixed.lam}")
    return _level(mixed.a, "a"), _level(mixed.b, "b"), mixed.lam


def _mixed_label(level: Level) -> str:
    a, b, lam = _mixed_levels(level.options)
    return f"mixed(lam={lam:g}; {a.label} | {b.label})"


def _create_mixed(level: Level, threads: int | None) -> QMEngine:
    from bioqmmm.qm.mixed import MixedEngine

    a, b, lam = _mixed_levels(level.options)
    return MixedEngine(create_engine(a, threads), create_engine(b, threads), lam)


def _level(value: Level | Mapping[str, Any], key: str) -> Level:
    """A mixed engine's end level, given as a Level or as a mapping of its fields."""
    if isinstance(value, Level):
        return value
    known = [f.name for f in dataclasses.fields(Level)]
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise InputError(f"mixed engine option {key!r}: unknown key(s) {unknown}; a level has {', '.join(known)}")
    return Level(**value)


def _builtin(engines: Registry) -> None:
    """The engines bioqmmm ships (their modules imported only when an engine is made)."""
    from bioqmmm.qm.mixed import MixedOptions
    from bioqmmm.qm.pyscf_engine import PySCFOptions
    from bioqmmm.qm.xtb_engine import METHODS, XTBOptions

    engines.add(EngineType("pyscf", "HF or any DFT functional PySCF knows, on CPU or GPU (gpu4pyscf)",
                           _create_pyscf, PySCFOptions, excluded=("method", "basis", "ladder")))
    engines.add(EngineType("mixed", "(1 - lam) E_a + lam E_b of two levels a and b, forces likewise",
                           _create_mixed, MixedOptions, basis=False, check=_mixed_levels, label=_mixed_label))
    engines.add(EngineType("xtb", "GFN2-xTB or GFN1-xTB tight binding (xtb-python), point-charge embedding",
                           _create_xtb, XTBOptions, excluded=("method",), basis=False, check=_check_xtb,
                           label=lambda level: f"{level.method.lower()}-xtb", methods=METHODS))


_ENGINES = Registry("QM engine", _builtin)
