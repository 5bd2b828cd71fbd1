"""Settings of the ``pmf`` protocol (:mod:`bioqmmm.protocols.pmf`): reaction coordinate, umbrella
windows, metadynamics, the cheap level and the estimator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bioqmmm.protocols.settings import Declared, FieldError, engine_options, level_of, setting
from bioqmmm.qm.factory import Level

#: Keys shared by umbrella windows and metadynamics (a field object may serve several dataclasses).
_INTERVAL = setting(50, doc="steps between samples", check="positive_int")
_TIMESTEP = setting(2.0, doc="time step", check="positive")


def _ordered_range(section, key: str = "range") -> None:
    value = getattr(section, key)
    if value and (len(value) != 2 or not value[1] > value[0]):
        raise FieldError(key, "must be [low, high] with high > low")


@dataclass(frozen=True)
class TermSection(Declared):
    """One term of a combined reaction coordinate: ``coefficient`` × ``kind`` of ``atoms``."""

    kind: Literal["distance", "angle"] = setting(doc="what the term measures")
    atoms: tuple[str, ...] = setting(doc="mdtraj selections of one atom each, in order")
    coefficient: float = setting(1.0, doc="weight of the term")


@dataclass(frozen=True)
class CoordinateSection(Declared):
    """The reaction coordinate (:mod:`bioqmmm.sampling.coordinates`): ``kind`` of ``atoms`` (mdtraj
    selections of one atom each, in order), or ``kind: combination`` with ``terms``. Distances in nm,
    angles and dihedrals in rad."""

    kind: Literal["distance", "distance_difference", "angle", "dihedral", "combination"] = setting(
        doc="distances in nm, angles and dihedrals in rad")
    atoms: tuple[str, ...] = setting((), doc="mdtraj selections of one atom each, in order")
    terms: tuple[TermSection, ...] = setting((), doc="the terms of a combination")

    def check(self) -> None:
        needed = {"distance": 2, "distance_difference": 4, "angle": 3, "dihedral": 4}
        if self.kind == "combination":
            if not self.terms or self.atoms:
                raise FieldError("terms", "a combination is given by 'terms' (and no 'atoms')")
        elif len(self.atoms) != needed[self.kind] or self.terms:
            raise FieldError("atoms", f"a {self.kind} needs {needed[self.kind]} atom selections (and no 'terms')")
        for term in self.terms:
            if len(term.atoms) != {"distance": 2, "angle": 3}[term.kind]:
                raise FieldError("terms", f"a {term.kind} term needs {2 if term.kind == 'distance' else 3} atoms")


@dataclass(frozen=True)
class WindowsSection(Declared):
    """Umbrella windows: ``count`` centres evenly over ``range`` (a whole turn of a dihedral counts
    once), or explicit ``centers``; force constant ``force_constant`` (kJ/mol per unit², default
    4 k_BT/spacing²). Each window: ``equilibration_steps``, then ``samples`` every ``sample_interval``
    steps of ``timestep_fs``."""

    range: tuple[float, ...] = setting((), doc="[low, high] of the centres", unit="unit of s")
    count: int = setting(0, doc="windows over the range")
    centers: tuple[float, ...] = setting((), doc="explicit centres instead of a range", unit="unit of s")
    force_constant: float | None = setting(None, doc="umbrella (default 4 k_BT/spacing²)", unit="kJ/mol/unit²",
                                           check="positive")
    samples: int = setting(500, doc="samples per window (a rerun with more extends it)", check="positive_int")
    sample_interval: int = _INTERVAL
    equilibration_steps: int = setting(5000, doc="steps before the first sample", check="non_negative")
    timestep_fs: float = _TIMESTEP

    def check(self) -> None:
        if bool(self.centers) == bool(self.range):
            raise FieldError("range", "give either 'range' (with 'count') or 'centers'")
        _ordered_range(self)
        if self.range and self.count < 2:
            raise FieldError("count", "give at least two windows over the range")
        if self.centers and (self.force_constant is None or len(set(self.centers)) != len(self.centers)):
            raise FieldError("centers", "explicit centres must differ and need 'force_constant'")

    def span(self) -> tuple[float, float]:
        return (self.range[0], self.range[1]) if self.range else (min(self.centers), max(self.centers))


@dataclass(frozen=True)
class MetadynamicsSection(Declared):
    """Well-tempered metadynamics at the cheap level over ``range`` (:mod:`bioqmmm.sampling.metadynamics`):
    Gaussians of ``width`` (unit of s) and ``height_kjmol`` every ``frequency`` steps, ``bias_factor``, for
    ``build_steps``; then the bias is frozen and ``samples`` are taken every ``sample_interval`` steps
    after ``equilibration_steps``, a state of the MBAR like any window."""

    range: tuple[float, ...] = setting(doc="[low, high] of the bias grid (a dihedral: one turn)", unit="unit of s")
    width: float = setting(doc="Gaussian width", unit="unit of s", check="positive")
    build_steps: int = setting(doc="steps that build the bias", check="positive_int")
    height_kjmol: float = setting(1.0, doc="Gaussian height", check="positive")
    bias_factor: float = setting(10.0, doc="well-tempered bias factor (> 1)")
    frequency: int = setting(500, doc="steps between Gaussians", check="positive_int")
    samples: int = setting(2000, doc="samples with the frozen bias", check="positive_int")
    sample_interval: int = _INTERVAL
    equilibration_steps: int = setting(0, doc="steps before the first sample", check="non_negative")
    timestep_fs: float = _TIMESTEP

    def check(self) -> None:
        if len(self.range) != 2:
            raise FieldError("range", "must be [low, high] with high > low")
        _ordered_range(self)
        if not self.bias_factor > 1:
            raise FieldError("bias_factor", "must exceed 1 (well-tempered)")

    def span(self) -> tuple[float, float]:
        return self.range[0], self.range[1]


@dataclass(frozen=True)
class LevelSection(Declared):
    """A QM level of theory for the QM region of the ``qm`` block: ``method`` and ``basis`` of ``engine``."""

    method: str = setting(doc="QM method")
    basis: str | None = setting(None, doc="basis set (engines with a basis)")
    engine: str = setting("pyscf", doc="QM engine by name")
    options: dict = setting(factory=dict, schema=engine_options, doc="engine options")
    new_keys = ("engine", "options")

    def check(self) -> None:
        self.level()

    def level(self) -> Level:
        """This level as a :class:`~bioqmmm.qm.factory.Level`."""
        return level_of(self)


@dataclass(frozen=True)
class PMFSettings(Declared):
    """Free-energy profile along a reaction coordinate: umbrella windows and/or a well-tempered
    metadynamics run sampled at the ``cheap`` level (``mm``: the MM force field, or a QM/MM level) and,
    optionally, ``target_windows`` sampled at the target level (the ``qm`` block), all reweighted to the
    target with MBAR (:mod:`bioqmmm.protocols.pmf`). ``reactant_range``/``product_range`` (ranges of the
    coordinate) give the barrier and reaction free energy."""

    coordinate: CoordinateSection = setting(doc="the reaction coordinate s")
    windows: WindowsSection | None = setting(None, doc="umbrella windows at the cheap level")
    metadynamics: MetadynamicsSection | None = setting(None, doc="well-tempered metadynamics at the cheap level")
    cheap: Literal["mm"] | LevelSection = setting("mm", doc="the cheap level: mm, or a QM level of the region")
    target_windows: WindowsSection | None = setting(None, doc="umbrella windows at the target level")
    temperature_k: float = setting(300.0, doc="thermostat and k_BT", check="positive")
    friction_per_ps: float = setting(1.0, doc="Langevin friction")
    seed: int = setting(1, doc="seeds every window (from the window's name)", check="positive_int")
    checkpoint_interval: int = setting(50, doc="samples between checkpoints", check="positive_int")
    bins: int = setting(36, doc="bins of the profile", check="positive_int")
    bootstraps: int = setting(0, doc="bootstrap resamplings for a second uncertainty", check="non_negative")
    reactant_range: tuple[float, ...] | None = setting(None, doc="[low, high] of s holding the reactant",
                                                       unit="unit of s")
    product_range: tuple[float, ...] | None = setting(None, doc="[low, high] of s holding the product",
                                                      unit="unit of s")
    min_ess_fraction: float = setting(0.1, doc="warn below this Kish ESS fraction of a cheap window",
                                      check="fraction")
    starts: str | None = setting(None, doc="PDB/mmCIF models the umbrella windows start from (a band's "
                                 "images.pdb): each from the model whose s is nearest its centre, not pulled")
    new_keys = ("starts",)

    def check(self) -> None:
        if self.windows is None and self.metadynamics is None:
            raise FieldError("windows", "give cheap-level 'windows', 'metadynamics', or both")
        if not self.friction_per_ps > 0:
            raise FieldError("friction_per_ps", "must be positive (umbrella sampling runs at constant temperature)")
        for key in ("reactant_range", "product_range"):
            value = getattr(self, key)
            if value is not None and (len(value) != 2 or value[0] == value[1]):
                raise FieldError(key, "must be [low, high] (low > high wraps round a dihedral's ±π)")
        if (self.product_range is None) != (self.reactant_range is None):
            raise FieldError("product_range", "give both 'reactant_range' and 'product_range', or neither")
