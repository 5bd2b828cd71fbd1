"""The protocol file: what ``bioqmmm run FILE.yaml`` reads.

    system:    where the molecular system comes from (a shipped example, a ready PDB, a prepared folder)
    qm:        the QM region (selection, charge, multiplicity) and its level of theory (engine, method, basis)
    protocol:  what to do: ``type`` names a registered protocol (``bioqmmm protocols`` lists them),
               the other keys are that protocol's settings
    output:    the output folder (relative paths are relative to the protocol file)
    resources: threads and OpenMM platform
    replicas:  optional replica set (the protocol run with changed keys, one folder each)

Keys carry their unit in the name where they have one (``timestep_fs``, ``fmax_kjmol_nm``).
A misspelt or unknown key, a value of the wrong type or a missing required key is a
:class:`~bioqmmm.run.schema.ProtocolError` naming the key and its line, raised before any
computation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bioqmmm.errors import InputError
from bioqmmm.protocols import registry
from bioqmmm.protocols.settings import Declared, FieldError, engine_options, level_of, setting
from bioqmmm.qm.factory import Level
from bioqmmm.run.schema import load_yaml_dataclass


@dataclass(frozen=True)
class SystemSection(Declared):
    """The molecular system: ``example`` (shipped, built on the fly), ``pdb`` (simulation-ready, with H)
    or ``prepared`` (a folder written by ``bioqmmm prepare``; its System is used as it is, so
    ``forcefield``, ``box_size_nm``, ``nonbonded_cutoff_nm`` and ``constraints`` do not apply)."""

    example: Literal["alanine_dipeptide", "formamide", "water_box", "salt_bridge"] | None = setting(
        None, doc="a shipped example, built on the fly (solvated ones MM-relaxed with the QM atoms fixed)")
    pdb: str | None = setting(None, doc="a simulation-ready PDB/mmCIF file (hydrogens present)")
    prepared: str | None = setting(None, doc="a folder written by `bioqmmm prepare`, its System used as it is")
    forcefield: tuple[str, ...] = setting(("amber14-all.xml", "amber14/tip3p.xml"), doc="OpenMM XML files, for pdb")
    box_size_nm: float | None = setting(None, doc="examples: cubic water box edge", check="positive")
    nonbonded_cutoff_nm: float = setting(0.9, doc="PME real-space cutoff", check="positive")
    constraints: Literal["hbonds", "none"] = setting(
        "hbonds", doc="hbonds: MM X–H bonds and rigid water (never inside the QM region); none: every bond and "
        "water flexible (Hessians, vibrations, ts)")

    def check(self) -> None:
        given = [key for key in ("example", "pdb", "prepared") if getattr(self, key) is not None]
        if len(given) != 1:
            raise FieldError(given[-1] if given else "example", "give exactly one of 'example', 'pdb' and 'prepared'")
        if self.box_size_nm is not None and self.box_size_nm <= 2 * self.nonbonded_cutoff_nm:
            raise FieldError("box_size_nm", f"must exceed twice nonbonded_cutoff_nm ({2 * self.nonbonded_cutoff_nm})")
        if self.example == "salt_bridge" and self.box_size_nm is not None:
            raise FieldError("box_size_nm", "the salt_bridge example is not solvated: give no box size")
        if self.example == "water_box" and self.box_size_nm is None:
            raise FieldError("example", "the water_box example needs box_size_nm")


@dataclass(frozen=True)
class EmbeddingSection(Declared):
    """Periodic embedding: exact charges within ``cutoff_nm`` (switched over ``switch_width_nm``)."""

    cutoff_nm: float = setting(1.2, doc="MM charges this close to a QM atom are exact", check="positive")
    switch_width_nm: float = setting(0.2, doc="width of the smooth switch at the cutoff")

    def check(self) -> None:
        if not 0 < self.switch_width_nm < self.cutoff_nm:
            raise FieldError("switch_width_nm", "must lie between 0 and cutoff_nm")


@dataclass(frozen=True)
class QMSection(Declared):
    """The QM region and its level of theory.

    The region is ``atoms`` (an mdtraj selection string or Topology indices), and/or
    ``sidechains`` / ``residues`` (residue names such as ``ASP66``; see :mod:`bioqmmm.region.protein`).
    """

    charge: int | None = setting(None, doc="of the QM region, link atoms included (required with a region)",
                                 unit="e")
    multiplicity: int | None = setting(None, doc="spin multiplicity 2S + 1 (open shells run unrestricted; "
                                       "required with a region)", check="positive_int")
    atoms: str | tuple[int, ...] | None = setting(None, doc="mdtraj selection or Topology indices")
    sidechains: tuple[str, ...] = setting((), doc="residues (ASP66, A:ASP66) whose side chain is QM (Cα–Cβ cut)")
    residues: tuple[str, ...] = setting((), doc="whole residues in QM (backbone cut at Cα–C)")
    method: str = setting("b3lyp", doc="QM method (HF or a functional the engine knows)")
    basis: str = setting("6-31g*", doc="basis set (engines with a basis)")
    engine: str = setting("pyscf", doc="QM engine by name (`bioqmmm protocols` lists them)")
    options: dict = setting(factory=dict, schema=engine_options,
                            doc="engine options (pyscf: conv_tol, max_cycle, density_fit, threads, …)")
    embedding: EmbeddingSection = setting(EmbeddingSection(), doc="periodic embedding (docs/theory.md)")
    boundary_charges: Literal["RCD", "RC", "shift"] = setting("RCD", doc="MM boundary charge scheme")
    allow_polar_cut: bool = setting(False, doc="allow cuts through polar single bonds (C–N, C–O)")

    def check(self) -> None:
        if self.has_region() and (self.charge is None or self.multiplicity is None):
            raise FieldError("charge" if self.charge is None else "multiplicity", "is required with a QM region")
        if not isinstance(self.atoms, str) and self.atoms is not None and min(self.atoms) < 0:
            raise FieldError("atoms", "atom indices must be non-negative")
        self.level()

    def has_region(self) -> bool:
        """Whether the block names QM atoms (a protocol that picks its own region takes none)."""
        return bool(self.atoms or self.sidechains or self.residues)

    def level(self) -> Level:
        """The level of theory of this block."""
        return level_of(self)


@dataclass(frozen=True)
class ResourcesSection(Declared):
    """Threads for the QM engine and OpenMM (None: their defaults) and the OpenMM platform."""

    threads: int | None = setting(None, doc="CPU threads (under mpirun: cores per rank by default)",
                                  check="positive_int")
    platform: Literal["CPU", "Reference", "CUDA", "OpenCL"] = setting("CPU", doc="OpenMM platform")


@dataclass(frozen=True)
class ReplicaSection(Declared):
    """One replica of a replica set: the file's protocol with these values changed.

    ``seed``, ``temperature_k`` and ``steps`` change the protocol (where it has these keys); ``atoms``,
    ``sidechains``, ``residues``, ``charge`` and ``multiplicity`` change the QM region (replicas may
    differ in it). Each replica writes into ``OUTPUT/replicas/NAME/``.
    """

    name: str = setting(doc="the replica's folder name")
    seed: int | None = setting(None, doc="replaces the protocol key of this name")
    temperature_k: float | None = setting(None, doc="replaces the protocol key of this name")
    steps: int | None = setting(None, doc="replaces the protocol key of this name")
    atoms: str | None = setting(None, doc="replaces this key of the qm block")
    sidechains: tuple[str, ...] | None = setting(None, doc="replaces this key of the qm block")
    residues: tuple[str, ...] | None = setting(None, doc="replaces this key of the qm block")
    charge: int | None = setting(None, doc="replaces this key of the qm block")
    multiplicity: int | None = setting(None, doc="replaces this key of the qm block")

    def check(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ ") or self.name.startswith("."):
            raise FieldError("name", f"{self.name!r} must be a plain folder name (no spaces or slashes)")

    def protocol_changes(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("seed", "temperature_k", "steps") if getattr(self, k) is not None}

    def qm_changes(self) -> dict[str, Any]:
        keys = ("atoms", "sidechains", "residues", "charge", "multiplicity")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


def _protocol_settings(name: str | None) -> type:
    """The settings class of the protocol ``name`` (None: the error that lists the protocols)."""
    if name is None:
        raise InputError(f"give one of {', '.join(registry.available())}")
    return registry.get(name).settings


@dataclass(frozen=True)
class ProtocolFile(Declared):
    """A whole protocol file."""

    system: SystemSection = setting(doc="the molecular system")
    qm: QMSection = setting(doc="the QM region and level of theory")
    protocol: Declared = setting(tagged=_protocol_settings, doc="`type`: a registered protocol, then its keys "
                                 "(tables below)")
    output: str = setting(doc="output folder, relative to the protocol file")
    resources: ResourcesSection = setting(ResourcesSection(), doc="threads and platform")
    replicas: tuple[ReplicaSection, ...] = setting((), doc="a replica set (docs/parallel.md)")
    source: Any = field(default=None, compare=False, repr=False, init=False)

    def check(self) -> None:
        if not self.output.strip():
            raise FieldError("output", "must name a folder")
        if self.replicas and self.kind().parallel:
            raise FieldError("replicas", f"a {self.kind().name} protocol runs its own replicas in parallel: "
                             "give no 'replicas' list")
        own = self.kind().own_region
        if own and self.qm.has_region():
            raise FieldError("qm", f"the {self.kind().name} protocol chooses its own QM region: give only the level "
                             "(engine, method, basis, options)")
        if not own and not self.qm.has_region():
            raise FieldError("qm", "the QM region is empty: give 'atoms', 'sidechains' or 'residues'")
        names = [r.name for r in self.replicas]
        if len(set(names)) != len(names):
            raise FieldError("replicas", f"replica names must be unique, got {names}")

    def kind(self) -> registry.Protocol:
        """The registered protocol this file runs."""
        return registry.protocol_of(self.protocol)

    def output_dir(self) -> Path:
        """The output folder, relative paths taken from the protocol file's folder."""
        out = Path(self.output)
        return out if out.is_absolute() or self.source is None else Path(self.source).parent / out

    def base_dir(self) -> Path:
        """The folder relative paths in the file start from (its own; the working directory without one)."""
        return Path(self.source).parent if self.source is not None else Path.cwd()


def load_protocol(path: str | Path) -> ProtocolFile:
    """Read and validate a protocol file (no computation happens here)."""
    config = load_yaml_dataclass(ProtocolFile, path)
    object.__setattr__(config, "source", Path(path).resolve())
    return config
