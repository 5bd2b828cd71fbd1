"""The protocol file: what ``bioqmmm run FILE.yaml`` reads.

    system:    where the molecular system comes from (a shipped example or a ready PDB)
    qm:        the QM region (selection, charge, multiplicity) and its level of theory
    protocol:  what to do, chosen by ``type`` (``md``, ``optimize``, ``neb``, ``pmf``)
    output:    the output folder (relative paths are relative to the protocol file)
    resources: threads and OpenMM platform

Keys carry their unit in the name where they have one (``timestep_fs``, ``fmax_kjmol_nm``).
A misspelt or unknown key, a value of the wrong type or a missing required key is a
:class:`~bioqmmm.run.schema.ProtocolError` naming the key and its line, raised before any
computation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bioqmmm.qm.pyscf_engine import PySCFOptions
from bioqmmm.run.schema import FieldError, load_yaml_dataclass

#: PySCFOptions fields that are not ``qm.options`` keys (set elsewhere in the file, or not from YAML).
_NOT_OPTIONS = ("method", "basis", "ladder")


def _positive(section, key: str) -> None:
    """A finite positive number (NaN and inf refused)."""
    value = getattr(section, key)
    if not (0 < value < float("inf")):
        raise FieldError(key, f"must be a positive number, not {value}")


@dataclass(frozen=True)
class SystemSection:
    """The molecular system: ``example`` (shipped, built on the fly), ``pdb`` (simulation-ready, with H)
    or ``prepared`` (a folder written by ``bioqmmm prepare``; its System is used as it is, so
    ``forcefield``, ``box_size_nm``, ``nonbonded_cutoff_nm`` and ``constraints`` do not apply)."""

    example: Literal["alanine_dipeptide", "formamide", "water_box"] | None = None
    pdb: str | None = None
    prepared: str | None = None
    forcefield: tuple[str, ...] = ("amber14-all.xml", "amber14/tip3p.xml")
    box_size_nm: float | None = None
    nonbonded_cutoff_nm: float = 0.9
    constraints: Literal["hbonds", "none"] = "hbonds"

    def __post_init__(self) -> None:
        _positive(self, "nonbonded_cutoff_nm")
        if self.box_size_nm is not None:
            _positive(self, "box_size_nm")
        given = [key for key in ("example", "pdb", "prepared") if getattr(self, key) is not None]
        if len(given) != 1:
            raise FieldError(given[-1] if given else "example", "give exactly one of 'example', 'pdb' and 'prepared'")
        if self.box_size_nm is not None and self.box_size_nm <= 2 * self.nonbonded_cutoff_nm:
            raise FieldError("box_size_nm", f"must exceed twice nonbonded_cutoff_nm ({2 * self.nonbonded_cutoff_nm})")
        if self.example == "water_box" and self.box_size_nm is None:
            raise FieldError("example", "the water_box example needs box_size_nm")


@dataclass(frozen=True)
class EmbeddingSection:
    """Periodic embedding: exact charges within ``cutoff_nm`` (switched over ``switch_width_nm``)."""

    cutoff_nm: float = 1.2
    switch_width_nm: float = 0.2

    def __post_init__(self) -> None:
        _positive(self, "cutoff_nm")
        if not 0 < self.switch_width_nm < self.cutoff_nm:
            raise FieldError("switch_width_nm", "must lie between 0 and cutoff_nm")


@dataclass(frozen=True)
class QMSection:
    """The QM region and its level of theory.

    The region is ``atoms`` (an mdtraj selection string or Topology indices), and/or
    ``sidechains`` / ``residues`` (residue names such as ``ASP66``; see :mod:`bioqmmm.region.protein`).
    """

    charge: int
    multiplicity: int
    atoms: str | tuple[int, ...] | None = None
    sidechains: tuple[str, ...] = ()
    residues: tuple[str, ...] = ()
    method: str = "b3lyp"
    basis: str = "6-31g*"
    engine: Literal["pyscf"] = "pyscf"
    options: dict = field(default_factory=dict, metadata={"schema": PySCFOptions, "exclude": _NOT_OPTIONS})
    embedding: EmbeddingSection = EmbeddingSection()
    boundary_charges: Literal["RCD", "RC", "shift"] = "RCD"
    allow_polar_cut: bool = False

    def __post_init__(self) -> None:
        if not self.atoms and not self.sidechains and not self.residues:
            raise FieldError("atoms", "the QM region is empty: give 'atoms', 'sidechains' or 'residues'")
        if not isinstance(self.atoms, str) and self.atoms is not None and min(self.atoms) < 0:
            raise FieldError("atoms", "atom indices must be non-negative")
        if self.multiplicity < 1:
            raise FieldError("multiplicity", "must be a positive integer")


@dataclass(frozen=True)
class MDProtocol:
    """QM/MM molecular dynamics: Langevin (NVT, LangevinMiddle) or Verlet (NVE), optional barostat.

    ``qm_every`` > 1: multiple time steps (:mod:`bioqmmm.simulation.mts`): MM forces every ``timestep_fs``,
    the QM force once per step, so each of ``steps`` is ``qm_every * timestep_fs`` long.
    """

    type: Literal["md"]
    steps: int
    timestep_fs: float = 0.5
    integrator: Literal["langevin", "verlet"] = "langevin"
    qm_every: int = 1
    temperature_k: float = 300.0
    friction_per_ps: float = 1.0
    pressure_bar: float | None = None
    seed: int | None = None
    minimize_mm_first: bool = True
    report_interval: int = 1
    trajectory_interval: int = 1
    trajectory_format: Literal["dcd", "xtc"] = "dcd"
    checkpoint_interval: int = 10

    def __post_init__(self) -> None:
        for key in ("steps", "report_interval", "trajectory_interval", "checkpoint_interval", "qm_every"):
            if getattr(self, key) < 1:
                raise FieldError(key, "must be a positive integer")
        for key in ("timestep_fs", "temperature_k"):
            _positive(self, key)
        if not self.friction_per_ps >= 0:
            raise FieldError("friction_per_ps", "must be zero or positive")
        if self.pressure_bar is not None:
            _positive(self, "pressure_bar")
        if self.seed is not None and self.seed < 1:
            raise FieldError("seed", "must be a positive integer (omit it for a random seed)")
        if self.report_interval > self.steps:
            raise FieldError("report_interval", f"must not exceed steps ({self.steps})")
        if self.pressure_bar is not None and self.integrator == "verlet":
            raise FieldError("pressure_bar", "a barostat needs a thermostat: use integrator 'langevin'")


@dataclass(frozen=True)
class OptimizeProtocol:
    """QM/MM geometry optimisation with microiterations (see :mod:`bioqmmm.protocols.optimize`)."""

    type: Literal["optimize"]
    fmax_kjmol_nm: float = 25.0
    energy_change_kjmol: float = 0.5
    max_steps: int = 200
    microiterations: bool = True
    active_radius_nm: float = 0.0
    freeze_beyond_nm: float | None = None
    mm_tolerance_kjmol_nm: float = 1.0
    max_step_nm: float = 0.02
    inner_steps_per_cycle: int = 20

    def __post_init__(self) -> None:
        for key in ("fmax_kjmol_nm", "energy_change_kjmol", "max_step_nm", "mm_tolerance_kjmol_nm"):
            _positive(self, key)
        if self.inner_steps_per_cycle < 1:
            raise FieldError("inner_steps_per_cycle", "must be a positive integer")
        if self.active_radius_nm < 0:
            raise FieldError("active_radius_nm", "must be zero or positive")
        if self.freeze_beyond_nm is not None:
            _positive(self, "freeze_beyond_nm")
        if self.max_steps < 1:
            raise FieldError("max_steps", "must be a positive integer")


@dataclass(frozen=True)
class DistanceSection:
    """A target distance between two atoms, each an mdtraj selection of exactly one atom."""

    atoms: tuple[str, ...]
    distance_nm: float

    def __post_init__(self) -> None:
        if len(self.atoms) != 2:
            raise FieldError("atoms", f"give two atom selections, not {len(self.atoms)}")
        _positive(self, "distance_nm")


@dataclass(frozen=True)
class NEBProtocol:
    """Nudged elastic band with climbing image between the system's structure (or ``reactant``) and
    ``product`` (see :mod:`bioqmmm.protocols.neb`). ``reactant``/``product`` are PDB or mmCIF files with
    every atom of the system in its order, or only some residues (matched by chain, residue number
    and name, and atom name), the rest taken from the system. Instead of ``product``,
    ``product_distances`` drives the reactant to the product by restrained optimisations
    (:mod:`bioqmmm.protocols.drive`; force constant ``drive_force_constant_kjmol_nm2``)."""

    type: Literal["neb"]
    product: str | None = None
    product_distances: tuple[DistanceSection, ...] = ()
    drive_force_constant_kjmol_nm2: float = 50000.0
    reactant: str | None = None
    n_images: int = 9
    climb: bool = True
    interpolation: Literal["idpp", "linear"] = "idpp"
    spring_constant_kjmol_nm2: float = 1000.0
    environment: Literal["relaxed", "restrained"] = "relaxed"
    restraint_kjmol_nm2: float = 1000.0
    relax_every: int = 10
    active_radius_nm: float = 0.0
    freeze_beyond_nm: float | None = None
    mm_tolerance_kjmol_nm: float = 1.0
    optimize_endpoints: bool = True
    endpoint_fmax_kjmol_nm: float = 10.0
    endpoint_max_steps: int = 200
    fmax_kjmol_nm: float = 25.0
    max_iterations: int = 300
    max_step_nm: float = 0.01
    ts_refine: bool = False
    ts_fmax_kjmol_nm: float = 5.0
    ts_max_steps: int = 50

    def __post_init__(self) -> None:
        for key in ("spring_constant_kjmol_nm2", "restraint_kjmol_nm2", "mm_tolerance_kjmol_nm",
                            "endpoint_fmax_kjmol_nm", "fmax_kjmol_nm", "max_step_nm", "ts_fmax_kjmol_nm"):
            _positive(self, key)
        if self.n_images < 3:
            raise FieldError("n_images", "counts both endpoints and must be at least 3")
        for key in ("relax_every", "endpoint_max_steps", "max_iterations", "ts_max_steps"):
            if getattr(self, key) < 1:
                raise FieldError(key, "must be a positive integer")
        if self.active_radius_nm < 0:
            raise FieldError("active_radius_nm", "must be zero or positive")
        if self.freeze_beyond_nm is not None:
            _positive(self, "freeze_beyond_nm")
        if (self.product is None) == (not self.product_distances):
            raise FieldError("product", "give exactly one of 'product' (a structure) and 'product_distances'")
        if self.product_distances and not self.optimize_endpoints:
            raise FieldError("optimize_endpoints", "a product driven by 'product_distances' must be optimised")
        _positive(self, "drive_force_constant_kjmol_nm2")


@dataclass(frozen=True)
class TermSection:
    """One term of a combined reaction coordinate: ``coefficient`` × ``kind`` of ``atoms``."""

    kind: Literal["distance", "angle"]
    atoms: tuple[str, ...]
    coefficient: float = 1.0


@dataclass(frozen=True)
class CoordinateSection:
    """The reaction coordinate (:mod:`bioqmmm.sampling.coordinates`): ``kind`` of ``atoms`` (mdtraj
    selections of one atom each, in order), or ``kind: combination`` with ``terms``. Distances in nm,
    angles and dihedrals in rad."""

    kind: Literal["distance", "distance_difference", "angle", "dihedral", "combination"]
    atoms: tuple[str, ...] = ()
    terms: tuple[TermSection, ...] = ()

    def __post_init__(self) -> None:
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
class WindowsSection:
    """Umbrella windows: ``count`` centres evenly over ``range`` (a whole turn of a dihedral counts
    once), or explicit ``centers``; force constant ``force_constant`` (kJ/mol per unit², default
    4 k_BT/spacing²). Each window: ``equilibration_steps``, then ``samples`` every ``sample_interval``
    steps of ``timestep_fs``."""

    range: tuple[float, ...] = ()
    count: int = 0
    centers: tuple[float, ...] = ()
    force_constant: float | None = None
    samples: int = 500
    sample_interval: int = 50
    equilibration_steps: int = 5000
    timestep_fs: float = 2.0

    def __post_init__(self) -> None:
        if bool(self.centers) == bool(self.range):
            raise FieldError("range", "give either 'range' (with 'count') or 'centers'")
        if self.range and (len(self.range) != 2 or not self.range[1] > self.range[0]):
            raise FieldError("range", "must be [low, high] with high > low")
        if self.range and self.count < 2:
            raise FieldError("count", "give at least two windows over the range")
        if self.centers and (self.force_constant is None or len(set(self.centers)) != len(self.centers)):
            raise FieldError("centers", "explicit centres must differ and need 'force_constant'")
        if self.force_constant is not None:
            _positive(self, "force_constant")
        for key in ("samples", "sample_interval"):
            if getattr(self, key) < 1:
                raise FieldError(key, "must be a positive integer")
        if self.equilibration_steps < 0:
            raise FieldError("equilibration_steps", "must be zero or positive")
        _positive(self, "timestep_fs")

    def span(self) -> tuple[float, float]:
        return (self.range[0], self.range[1]) if self.range else (min(self.centers), max(self.centers))


@dataclass(frozen=True)
class MetadynamicsSection:
    """Well-tempered metadynamics at the cheap level over ``range`` (:mod:`bioqmmm.sampling.metadynamics`):
    Gaussians of ``width`` (unit of s) and ``height_kjmol`` every ``frequency`` steps, ``bias_factor``, for
    ``build_steps``; then the bias is frozen and ``samples`` are taken every ``sample_interval`` steps
    after ``equilibration_steps``, a state of the MBAR like any window."""

    range: tuple[float, ...]
    width: float
    build_steps: int
    height_kjmol: float = 1.0
    bias_factor: float = 10.0
    frequency: int = 500
    samples: int = 2000
    sample_interval: int = 50
    equilibration_steps: int = 0
    timestep_fs: float = 2.0

    def __post_init__(self) -> None:
        if len(self.range) != 2 or not self.range[1] > self.range[0]:
            raise FieldError("range", "must be [low, high] with high > low")
        for key in ("width", "height_kjmol", "timestep_fs"):
            _positive(self, key)
        if not self.bias_factor > 1:
            raise FieldError("bias_factor", "must exceed 1 (well-tempered)")
        for key in ("build_steps", "frequency", "samples", "sample_interval"):
            if getattr(self, key) < 1:
                raise FieldError(key, "must be a positive integer")
        if self.equilibration_steps < 0:
            raise FieldError("equilibration_steps", "must be zero or positive")

    def span(self) -> tuple[float, float]:
        return self.range[0], self.range[1]


@dataclass(frozen=True)
class LevelSection:
    """A QM level of theory for the QM region of the ``qm`` block."""

    method: str
    basis: str


@dataclass(frozen=True)
class PMFProtocol:
    """Free-energy profile along a reaction coordinate: umbrella windows and/or a well-tempered
    metadynamics run sampled at the ``cheap`` level (``mm``: the MM force field, or a QM/MM
    ``method``/``basis``) and, optionally, ``target_windows``
    sampled at the target level (the ``qm`` block), all reweighted to the target with MBAR
    (see :mod:`bioqmmm.protocols.pmf`). ``reactant_range``/``product_range`` (ranges of the coordinate)
    give the barrier and reaction free energy."""

    type: Literal["pmf"]
    coordinate: CoordinateSection
    windows: WindowsSection | None = None
    metadynamics: MetadynamicsSection | None = None
    cheap: Literal["mm"] | LevelSection = "mm"
    target_windows: WindowsSection | None = None
    temperature_k: float = 300.0
    friction_per_ps: float = 1.0
    seed: int = 1
    checkpoint_interval: int = 50
    bins: int = 36
    bootstraps: int = 0
    reactant_range: tuple[float, ...] | None = None
    product_range: tuple[float, ...] | None = None
    min_ess_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.windows is None and self.metadynamics is None:
            raise FieldError("windows", "give cheap-level 'windows', 'metadynamics', or both")
        _positive(self, "temperature_k")
        if not self.friction_per_ps > 0:
            raise FieldError("friction_per_ps", "must be positive (umbrella sampling runs at constant temperature)")
        for key in ("seed", "checkpoint_interval", "bins"):
            if getattr(self, key) < 1:
                raise FieldError(key, "must be a positive integer")
        if self.bootstraps < 0:
            raise FieldError("bootstraps", "must be zero or positive")
        for key in ("reactant_range", "product_range"):
            value = getattr(self, key)
            if value is not None and (len(value) != 2 or value[0] == value[1]):
                raise FieldError(key, "must be [low, high] (low > high wraps round a dihedral's ±π)")
        if (self.product_range is None) != (self.reactant_range is None):
            raise FieldError("product_range", "give both 'reactant_range' and 'product_range', or neither")
        if not 0 <= self.min_ess_fraction <= 1:
            raise FieldError("min_ess_fraction", "must lie between 0 and 1")


@dataclass(frozen=True)
class ResourcesSection:
    """Threads for PySCF and OpenMM (None: their defaults) and the OpenMM platform."""

    threads: int | None = None
    platform: Literal["CPU", "Reference", "CUDA", "OpenCL"] = "CPU"

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise FieldError("threads", "must be a positive integer")


@dataclass(frozen=True)
class ReplicaSection:
    """One replica of a replica set: the file's protocol with these values changed.

    ``seed``, ``temperature_k`` and ``steps`` change the protocol; ``atoms``, ``sidechains``,
    ``residues``, ``charge`` and ``multiplicity`` change the QM region (replicas may differ in it).
    Each replica writes into ``OUTPUT/replicas/NAME/``.
    """

    name: str
    seed: int | None = None
    temperature_k: float | None = None
    steps: int | None = None
    atoms: str | None = None
    sidechains: tuple[str, ...] | None = None
    residues: tuple[str, ...] | None = None
    charge: int | None = None
    multiplicity: int | None = None

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ ") or self.name.startswith("."):
            raise FieldError("name", f"{self.name!r} must be a plain folder name (no spaces or slashes)")

    def protocol_changes(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("seed", "temperature_k", "steps") if getattr(self, k) is not None}

    def qm_changes(self) -> dict[str, Any]:
        keys = ("atoms", "sidechains", "residues", "charge", "multiplicity")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


@dataclass(frozen=True)
class ProtocolFile:
    """A whole protocol file."""

    system: SystemSection
    qm: QMSection
    protocol: MDProtocol | OptimizeProtocol | NEBProtocol | PMFProtocol
    output: str
    resources: ResourcesSection = ResourcesSection()
    replicas: tuple[ReplicaSection, ...] = ()
    source: Any = field(default=None, compare=False, repr=False, init=False)

    def __post_init__(self) -> None:
        if not self.output.strip():
            raise FieldError("output", "must name a folder")
        if self.replicas and isinstance(self.protocol, NEBProtocol | PMFProtocol):
            raise FieldError("replicas", f"a {self.protocol.type} protocol runs its own replicas in parallel: "
                             "give no 'replicas' list")
        names = [r.name for r in self.replicas]
        if len(set(names)) != len(names):
            raise FieldError("replicas", f"replica names must be unique, got {names}")

    def output_dir(self) -> Path:
        """The output folder, relative paths taken from the protocol file's folder."""
        out = Path(self.output)
        return out if out.is_absolute() or self.source is None else Path(self.source).parent / out


def load_protocol(path: str | Path) -> ProtocolFile:
    """Read and validate a protocol file (no computation happens here)."""
    config = load_yaml_dataclass(ProtocolFile, path)
    object.__setattr__(config, "source", Path(path).resolve())
    return config
