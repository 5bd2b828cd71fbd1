"""The seams every protocol goes through: protocol registry and run context, engine factory and named
levels, the mixed engine, the QM region value object, and the direction of the layers."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bioqmmm.cli import main
from bioqmmm.errors import InputError
from bioqmmm.protocols import registry
from bioqmmm.protocols.context import RunContext
from bioqmmm.protocols.registry import Protocol
from bioqmmm.protocols.settings import Declared, FieldError, setting
from bioqmmm.qm.factory import Level, create_engine
from bioqmmm.qm.mixed import MixedEngine
from bioqmmm.region.region import QMRegion
from bioqmmm.results import quantity, write_results
from bioqmmm.run.reference import update
from bioqmmm.run.schema import ProtocolError

ROOT = Path(__file__).resolve().parents[1]
WATER = ["O", "H", "H"]
WATER_XYZ = np.array([[0.0, 0.0, 0.0], [0.0957, 0.0, 0.0], [-0.024, 0.0927, 0.0]]) + 0.01  # nm
MM_XYZ = np.array([[0.3, 0.1, 0.0], [-0.25, 0.2, 0.1], [0.05, -0.3, 0.2]])  # nm
MM_Q = np.array([0.4, -0.8, 0.4])  # e


# ----------------------------------------------------------------------------- a toy protocol
@dataclasses.dataclass(frozen=True)
class ScaledEnergySettings(Declared):
    """The toy protocol's keys."""

    scale: float = setting(1.0, doc="factor on the QM/MM energy", check="positive")
    label: str = setting("toy", doc="written into the result")

    def check(self) -> None:
        if self.label == "forbidden":
            raise FieldError("label", "is forbidden")


def _run_scaled_energy(context: RunContext, settings: ScaledEnergySettings) -> dict:
    energy, forces = context.qmmm.energy_and_forces(context.positions, context.box)
    return write_results(context.output, "scaled_energy", {
        **context.record, "label": settings.label, "scaled_energy": quantity(settings.scale * energy, "kJ/mol"),
        "max_force": quantity(float(np.abs(forces).max()), "kJ/mol/nm")})


TOY = Protocol("scaled_energy", "one QM/MM energy, scaled (a test of the registry)", ScaledEnergySettings,
               _run_scaled_energy)

TOY_FILE = """\
system:
  example: formamide
qm:
  atoms: all
  charge: 0
  multiplicity: 1
  method: hf
  basis: sto-3g
  options:
    conv_tol: 1e-10
protocol:
  type: scaled_energy
  scale: {scale}
  label: {label}
output: out
"""


@pytest.fixture
def toy_registered(monkeypatch):
    """The toy protocol registered for one test (the registry's other entries untouched)."""
    registry.available()
    monkeypatch.setitem(registry._PROTOCOLS._items, TOY.name, TOY)
    return TOY


def test_a_protocol_registered_from_outside_runs_through_bioqmmm_run(tmp_path, toy_registered, capsys):
    """Acceptance: a protocol defined in this test module, registered here and nowhere else, is validated and
    run by `bioqmmm run`; its result is the model's energy times the scale (the model built independently)."""
    path = tmp_path / "toy.yaml"
    path.write_text(TOY_FILE.format(scale=2.5, label="checked"))
    assert main(["run", str(path), "--no-progress"]) == 0
    record = json.loads((tmp_path / "out" / "result.json").read_text())
    assert record["protocol"] == "scaled_energy" and record["label"] == "checked"
    assert record["qm_level"] == "hf/sto-3g" and record["n_qm_atoms"] == 6 and record["target"] is None

    from bioqmmm.examples import formamide
    from bioqmmm.qm import PySCFEngine
    from bioqmmm.qmmm.system import QMMMSystem

    topology, system, positions = formamide()
    qmmm = QMMMSystem(topology, system, "all", charge=0, multiplicity=1,
                      engine=PySCFEngine("hf", "sto-3g", conv_tol=1e-10))
    energy, _ = qmmm.energy_and_forces(np.array(positions.value_in_unit(positions.unit)))
    assert record["scaled_energy"]["value"] == pytest.approx(2.5 * energy, abs=1e-6)
    assert "scaled_energy" in capsys.readouterr().out

    assert main(["protocols", "scaled_energy"]) == 0  # its keys are listed from its declaration
    listed = capsys.readouterr().out
    assert "scale" in listed and "factor on the QM/MM energy" in listed and "label" in listed


def test_protocol_settings_are_validated_with_key_and_line(tmp_path, toy_registered):
    path = tmp_path / "toy.yaml"
    path.write_text(TOY_FILE.format(scale=-1, label="x"))
    with pytest.raises(ProtocolError, match=r"toy.yaml:13: 'scale': must be a positive number"):
        from bioqmmm.run.protocol import load_protocol

        load_protocol(path)
    path.write_text(TOY_FILE.format(scale=1, label="forbidden"))
    with pytest.raises(ProtocolError, match=r"toy.yaml:14: 'label': is forbidden"):
        load_protocol(path)
    path.write_text(TOY_FILE.format(scale=1, label="x").replace("  scale: 1", "  scael: 1"))
    with pytest.raises(ProtocolError, match=r"toy.yaml:13: unknown key 'scael' in 'protocol' \(did you mean 'scale'"):
        load_protocol(path)


def test_bioqmmm_protocols_lists_every_protocol_and_its_keys(capsys):
    assert main(["protocols"]) == 0
    out = capsys.readouterr().out
    for name in ("md", "optimize", "neb", "pmf", "pyscf", "mixed"):
        assert f"  {name} " in out
    assert main(["protocols", "md"]) == 0
    out = capsys.readouterr().out
    for line in ("timestep_fs", "fs", "0.5", "qm_every", "checkpoint_interval"):
        assert line in out
    assert main(["protocols", "pmf"]) == 0
    assert "windows.force_constant" in capsys.readouterr().out  # nested sections with their keys
    assert main(["protocols", "mdd"]) == 1
    assert ("unknown protocol 'mdd'; known: adaptive_md, elastic, fep, finite_size, interface, md, neb, optimize"
            in capsys.readouterr().err)


def test_running_md_key_tables_are_generated_from_the_declarations(tmp_path):
    """docs/running.md's key tables are the declarations: regenerating them changes nothing."""
    copy = tmp_path / "running.md"
    copy.write_text((ROOT / "docs" / "running.md").read_text())
    assert not update(copy), "docs/running.md is stale: run python -m bioqmmm.run.reference docs/running.md"


def test_identities_of_shipped_protocol_files_are_unchanged():
    """Checkpoints written before the protocol registry resume: the identities of the shipped files are the
    ones the earlier code computed (values recorded from commit d78c2ca, which had no registry)."""
    from bioqmmm.run.protocol import load_protocol
    from bioqmmm.run.runner import identity

    before = {"md": "eab67cebbf491c28", "optimize": "ae8a0377c45fd20a", "neb_gas": "809a0938f5ac0204",
              "neb": "a21d6af25bf3d304", "pmf": "379c7b316042d37b", "pmf_metadynamics": "88d3cde587223483",
              "replicas": "15e191c02a7f14d9"}
    assert {name: identity(load_protocol(ROOT / "protocols" / f"{name}.yaml")) for name in before} == before


def test_protocol_modules_do_not_import_the_run_layer():
    """Layers point down: importing every module of bioqmmm.protocols (in a fresh interpreter) imports no
    bioqmmm.run module."""
    code = ("import importlib, pkgutil, sys, bioqmmm.protocols as p\n"
            "for m in pkgutil.iter_modules(p.__path__, 'bioqmmm.protocols.'):\n"
            "    importlib.import_module(m.name)\n"
            "print(sorted(m for m in sys.modules if m.startswith('bioqmmm.run')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------- engines and levels
def test_levels_name_registered_engines_and_their_options_only():
    with pytest.raises(InputError, match="unknown QM engine 'orca'; known: mixed, pyscf"):
        Level("b3lyp", "def2-svp", engine="orca")
    with pytest.raises(InputError, match=r"unknown option\(s\) \['conv_tl'\] of QM engine 'pyscf'"):
        Level("hf", "sto-3g", options={"conv_tl": 1e-9})
    with pytest.raises(InputError, match="needs a basis set"):
        Level("hf")
    assert Level("hf", "sto-3g").label == "hf/sto-3g"


@dataclasses.dataclass(frozen=True)
class _ScaleOptions:
    factor: float = 2.0


class _ScaledEngine:
    """A toy engine: another engine's energy and forces times a factor."""

    def __init__(self, inner, factor: float) -> None:
        self.inner, self.factor = inner, factor

    def validate(self, symbols, charge, multiplicity) -> None:
        self.inner.validate(symbols, charge, multiplicity)

    def compute(self, *args, **kwargs):
        result = self.inner.compute(*args, **kwargs)
        return dataclasses.replace(result, energy=self.factor * result.energy, qm_forces=self.factor * result.qm_forces,
                                   mm_forces=self.factor * result.mm_forces)

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state) -> None:
        self.inner.set_state(state)


def test_an_engine_registered_from_outside_is_made_by_name(monkeypatch, tmp_path):
    """register_engine is the seam a new engine (xTB, an ML potential) goes through: a Level names it, its
    options are its own, and a protocol file selects it."""
    from bioqmmm.qm import factory

    kind = factory.EngineType("scaled", "pyscf times a factor",
                              lambda level, threads: _ScaledEngine(create_engine(Level(level.method, level.basis)),
                                                                   level.options.get("factor", 2.0)),
                              _ScaleOptions)
    factory.engine_types()
    monkeypatch.setitem(factory._ENGINES._items, "scaled", kind)
    scaled = create_engine(Level("hf", "sto-3g", engine="scaled", options={"factor": 3.0}))
    plain = create_engine(Level("hf", "sto-3g"))
    e_scaled = scaled.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q).energy
    assert e_scaled == pytest.approx(3.0 * plain.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q).energy, abs=1e-5)
    with pytest.raises(InputError, match=r"unknown option\(s\) \['conv_tol'\] of QM engine 'scaled'"):
        Level("hf", "sto-3g", engine="scaled", options={"conv_tol": 1e-9})

    from bioqmmm.run.protocol import load_protocol

    path = tmp_path / "scaled.yaml"
    path.write_text(TOY_FILE.format(scale=1, label="x").replace("protocol:\n  type: scaled_energy\n  scale: 1\n"
                                                                 "  label: x\n", "protocol:\n  type: md\n  steps: 2\n")
                    .replace("options:\n    conv_tol: 1e-10", "engine: scaled\n  options:\n    factor: 3.0"))
    assert load_protocol(path).qm.level() == Level("hf", "sto-3g", "scaled", {"factor": 3.0})


def _mixed_parts(lam: float):
    a, b = Level("hf", "sto-3g", options={"conv_tol": 1e-11}), Level("hf", "3-21g", options={"conv_tol": 1e-11})
    mixed = create_engine(Level(engine="mixed", options={"a": a, "b": dataclasses.asdict(b), "lam": lam}))
    return mixed, create_engine(a), create_engine(b)


def test_mixed_engine_is_the_linear_mix_of_its_levels_with_exact_forces():
    """E(λ) = (1 − λ) E_a + λ E_b with forces and potentials mixed alike (engines run separately as the
    reference); λ = 0 and 1 give the pure levels exactly; the forces are the gradient of the mixed energy
    (central differences, TESTING.md: ≤ 1e-6 Eh/Bohr)."""
    lam = 0.3
    mixed, engine_a, engine_b = _mixed_parts(lam)
    assert isinstance(mixed, MixedEngine)
    kwargs = {"potential_at": np.arange(3)}
    result = mixed.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q, **kwargs)
    a = engine_a.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q, **kwargs)
    b = engine_b.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q, **kwargs)
    assert result.energy == pytest.approx((1 - lam) * a.energy + lam * b.energy, abs=1e-6)
    for name in ("qm_forces", "mm_forces", "mm_potentials", "atomic_charges"):
        np.testing.assert_allclose(getattr(result, name), (1 - lam) * getattr(a, name) + lam * getattr(b, name),
                                   atol=1e-5)
    assert abs(a.energy - b.energy) > 100  # the two levels differ, so a wrong weight would show
    for end, part in ((0.0, a), (1.0, b)):
        pure = _mixed_parts(end)[0].compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q)
        assert pure.energy == pytest.approx(part.energy, abs=1e-6)

    h = 1e-5  # nm
    for atom, axis in ((0, 0), (1, 1), (2, 2)):
        plus, minus = WATER_XYZ.copy(), WATER_XYZ.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        fd = -(mixed.compute(WATER, plus, 0, 1, MM_XYZ, MM_Q).energy
               - mixed.compute(WATER, minus, 0, 1, MM_XYZ, MM_Q).energy) / (2 * h)
        assert result.qm_forces[atom, axis] == pytest.approx(fd, abs=1e-6 * 49614.75)


def test_mixed_engine_keeps_both_guesses_in_its_state():
    mixed, _, _ = _mixed_parts(0.5)
    mixed.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q)
    state = mixed.get_state()
    assert any(k.startswith("a.") for k in state) and any(k.startswith("b.") for k in state)
    fresh, _, _ = _mixed_parts(0.5)
    fresh.set_state(state)
    assert fresh.compute(WATER, WATER_XYZ, 0, 1, MM_XYZ, MM_Q).info.warm_start


def test_protocol_file_selects_the_engine_by_name(tmp_path):
    """A qm block names its engine; the mixed engine's options are type-checked like any engine's."""
    from bioqmmm.run.protocol import load_protocol

    text = TOY_FILE.format(scale=1, label="x").replace("protocol:\n  type: scaled_energy\n  scale: 1\n  label: x\n",
                                                         "protocol:\n  type: md\n  steps: 2\n")
    mixed = text.replace("  method: hf\n  basis: sto-3g\n  options:\n    conv_tol: 1e-10\n",
                         "  engine: mixed\n  options:\n    lam: 0.25\n    a: {method: hf, basis: sto-3g}\n"
                         "    b: {method: hf, basis: 3-21g}\n")
    path = tmp_path / "mixed.yaml"
    path.write_text(mixed)
    config = load_protocol(path)
    level = config.qm.level()
    assert level.engine == "mixed" and level.options["lam"] == 0.25 and level.basis is None
    path.write_text(mixed.replace("lam: 0.25", "lam: high"))
    with pytest.raises(ProtocolError, match=r"mixed.yaml:9: 'lam' must be a number"):
        load_protocol(path)
    path.write_text(mixed.replace("lam: 0.25", "lam: 2.0"))
    with pytest.raises(ProtocolError, match=r"mixed.yaml:8: 'options': mixed engine: lam must lie between 0 and 1"):
        load_protocol(path)
    path.write_text(mixed.replace("basis: 3-21g}", "basis: 3-21g, options: {conv_tl: 1}}"))
    with pytest.raises(ProtocolError, match=r"mixed.yaml:8: 'options': unknown option\(s\) \['conv_tl'\]"):
        load_protocol(path)


@pytest.mark.parametrize(("old", "new", "message"), [
    ("  cheap: mm ", "  cheap: {method: hf, engine: orca}  ", r"pmf.yaml:20: 'engine': unknown QM engine 'orca'"),
    ("  cheap: mm ", "  cheap: {method: hf, basis: sto-3g, options: {conv_tl: 1}} ",
     r"pmf.yaml:20: unknown key 'conv_tl' in 'options' \(did you mean 'conv_tol'"),
    ("  type: pmf\n", "",
     r"pmf.yaml:16: missing required key 'type' in 'protocol': give one of adaptive_md, elastic, fep, finite_size, "
     r"interface, md, neb"),
])
def test_nested_levels_and_missing_types_are_refused_with_key_and_line(tmp_path, old, new, message):
    from bioqmmm.run.protocol import load_protocol

    path = tmp_path / "pmf.yaml"
    path.write_text((ROOT / "protocols" / "pmf.yaml").read_text().replace(old, new))
    with pytest.raises(ProtocolError, match=message):
        load_protocol(path)


def test_a_mixed_level_is_named_by_its_parts():
    level = Level(engine="mixed", options={"a": {"method": "hf", "basis": "sto-3g"},
                                           "b": Level("b3lyp", "6-31g*"), "lam": 0.25})
    assert level.label == "mixed(lam=0.25; hf/sto-3g | b3lyp/6-31g*)"
    with pytest.raises(InputError, match=r"mixed engine option 'a': unknown key\(s\) \['functional'\]"):
        Level(engine="mixed", options={"a": {"functional": "hf"}, "b": {"method": "hf", "basis": "sto-3g"}})


# ----------------------------------------------------------------------------- the QM region
def test_qm_region_is_validated_once_and_used_by_the_qmmm_system(water_cluster):
    from bioqmmm.qm import PySCFEngine
    from bioqmmm.qmmm.system import QMMMSystem

    topology, system, positions = water_cluster
    region = QMRegion.select(topology, [0, 1, 2], charge=0, multiplicity=1)
    assert region.atoms == (0, 1, 2) and region.symbols == ("O", "H", "H") and region.n_electrons == 10
    assert QMRegion.atoms_of(region) == [0, 1, 2] == QMRegion.atoms_of((0, 1, 2))  # what preparation takes
    with pytest.raises(InputError, match="charge 10 leaves 0 electrons"):
        QMRegion.select(topology, [0, 1, 2], charge=10, multiplicity=1)
    with pytest.raises(InputError, match="charge 12 leaves -2 electrons .* the charge is wrong"):
        QMRegion.select(topology, [0, 1, 2], charge=12, multiplicity=1)
    with pytest.raises(InputError, match="inconsistent with 9 electrons"):
        QMRegion.select(topology, [0, 1, 2], charge=1, multiplicity=1)
    with pytest.raises(InputError, match="unknown boundary charge scheme 'RCX'"):
        QMRegion.select(topology, [0, 1, 2], charge=0, multiplicity=1, boundary_charges="RCX")

    engine = PySCFEngine("hf", "sto-3g", conv_tol=1e-10)
    from_region = QMMMSystem(topology, system, region, engine=engine)
    from_selection = QMMMSystem(topology, system, [0, 1, 2], charge=0, multiplicity=1,
                                engine=PySCFEngine("hf", "sto-3g", conv_tol=1e-10))
    assert from_region.region == from_selection.region
    e1, f1 = from_region.energy_and_forces(positions)
    e2, f2 = from_selection.energy_and_forces(positions)
    assert e1 == pytest.approx(e2, abs=1e-8) and np.allclose(f1, f2, atol=1e-4)
    with pytest.raises(InputError, match="carries its charge, multiplicity: give none"):
        QMMMSystem(topology, system, region, charge=0, multiplicity=1, engine=engine)
