"""Numbers and times in README.md, protocols/README.md and docs/ that come from runs of the shipped examples.

A number in those pages is written between markers, ``<!--n:pmf.barrier-->37.1 ± 1.6<!--/n-->``: the key
names a measured quantity in ``docs/numbers.json``, the text between the markers is its rendering.
``python -m bioqmmm.run.docs_numbers --run NAME ...`` (or ``--run all``) runs the examples (:data:`ENTRIES`:
the quickstart, ``bioqmmm prepare 1AKI``, every shipped protocol file, the test suites), records their wall
times and headline results with the machine, and rewrites every marker; ``--check`` lists markers whose
text differs from the record (a test runs it), so a number edited by hand, or a record regenerated without
the pages, fails. Tests that run a shipped protocol compare their fresh numbers with the record
(:func:`compare`) within the stated uncertainty.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "docs" / "numbers.json"
PAGES = ("README.md", "protocols/README.md", "docs/*.md", "systems/*/README.md")
#: A marked number; one written as an example in a code span (a backtick just before it) is not one.
MARKER = re.compile(r"(?<!`)<!--n:(?P<key>[\w.]+)-->(?P<text>(?:(?!<!--).)*?)<!--/n-->", re.S)


@dataclass(frozen=True)
class Number:
    """A headline result read from ``result.json`` at ``path`` (keys, then ``value``/``uncertainty``).

    ``tolerance``: allowed |fresh − recorded| for a result without an uncertainty (deterministic up to
    platform rounding); with one, fresh and recorded must agree within 2σ of their combined uncertainty.
    ``index`` picks one element of a list value; ``select`` (key, value) the element of a list of records
    on the path whose ``key`` is ``value``. ``decimals``: as rendered.
    """

    path: tuple[str, ...]
    decimals: int = 1
    tolerance: float | None = None
    index: int | None = None
    select: tuple[str, str] | None = None


@dataclass(frozen=True)
class Entry:
    """One example: ``bioqmmm`` arguments (``{out}`` is the output folder) and the numbers it yields (read
    from ``record`` in the output folder)."""

    args: tuple[str, ...]
    numbers: dict[str, Number] = field(default_factory=dict)
    command: tuple[str, ...] = ("bioqmmm",)
    record: str = "result.json"
    #: files of the output folder copied into docs/ (output path → path under docs/), for the pages' figures
    figures: dict[str, str] = field(default_factory=dict)
    #: run by ``--run all`` (not the test suites, nor the hour-long showcases of systems/, run by name)
    in_all: bool = True


def _run(protocol: str, figures: dict[str, str] | None = None, **numbers: Number) -> Entry:
    return Entry(("run", f"protocols/{protocol}.yaml", "-o", "{out}", "--no-progress"), numbers,
                 figures=figures or {})


def _finite_size_numbers() -> dict[str, Number]:
    """E∞ and A (fitted, analytic, their difference) of both series, the host's ε and the defect's charge."""
    numbers = {"dielectric": Number(("dielectric_constant",), 3, tolerance=0.005),
               "charge": Number(("defect_charge",), 0, tolerance=0.0)}
    for series in ("qmmm", "mm"):
        numbers |= {f"{series}_e_inf": Number((series, "e_inf"), 2),
                    f"{series}_a_fit": Number((series, "a_fit"), 2),
                    f"{series}_a_analytic": Number((series, "a_analytic"), 2, tolerance=0.5),
                    f"{series}_a_deviation": Number((series, "a_deviation_percent"), 2, tolerance=0.2)}
    return numbers


def _elastic_numbers() -> dict[str, Number]:
    """The cubic constants and bulk modulus of each model (GPa), and the largest error estimate."""
    numbers = {}
    for model in ("qmmm", "mm", "host"):
        numbers |= {f"{model}_{key}": Number((model, "cubic", key), 2, tolerance=0.05)
                    for key in ("c11", "c12", "c44", "bulk_modulus")}
        numbers[f"{model}_max_error"] = Number((model, "max_error"), 2, tolerance=0.05)
    return numbers


def _interface_numbers(measured: bool) -> dict[str, Number]:
    """Headline numbers of an interface run: binding scores, QM region, and the agreement with measured ΔΔG."""
    numbers = {
        "mmgbsa": Number(("binding", "mmgbsa"), 0, tolerance=20.0),
        "qmmm": Number(("binding", "qmmm"), 0, tolerance=20.0),
        "qm_atoms": Number(("qm_region", "atoms"), 0, tolerance=0.0),
        "qm_charge": Number(("qm_region", "charge"), 0, tolerance=0.0),
        "residues": Number(("interface_residues",), 0, tolerance=0.0),
        "variants": Number(("variants",), 0, tolerance=0.0),
    }
    if measured:
        for level in ("mmgbsa", "qmmm"):
            for stat, decimals in (("pearson_r", 2), ("spearman_rho", 2), ("rmse_kcal_mol", 1),
                                   ("hot_spot_recall", 2), ("hot_spot_precision", 2), ("n", 0)):
                numbers[f"{level}_{stat}"] = Number(("measured", level, stat), decimals, tolerance=0.1)
    return numbers


#: The examples whose times and results the pages quote.
ENTRIES: dict[str, Entry] = {
    "quickstart": Entry(("quickstart", "-o", "{out}", "--no-progress", "--seed", "1")),
    "prepare_1aki": Entry(("prepare", "1AKI", "-o", "{out}", "--solvent", "explicit")),
    "propka_1aki": Entry(("prepare", "1AKI", "-o", "{out}", "--solvent", "vacuum", "--ph", "5.5"), {
        f"{residue.lower()}_pka": Number(("report", "titration", "sites", "pka"), 1, tolerance=0.05,
                                         select=("label", f"A:{residue}")) for residue in ("GLU35", "ASP52")},
        record="prepare.json"),
    "md": _run("md", mean_temperature=Number(("mean_temperature",), 0, tolerance=20.0)),
    "md_xtb": _run("md_xtb", mean_temperature=Number(("mean_temperature",), 0, tolerance=20.0)),
    "optimize": _run("optimize", steps=Number(("iterations",), 0, tolerance=15),
                     mm_steps=Number(("mm_relaxation_steps",), 0, tolerance=1000)),
    "neb_gas": _run("neb_gas", barrier=Number(("ts_refinement", "barrier_forward"), 2, tolerance=0.5),
                    reaction=Number(("reaction_energy",), 2, tolerance=0.5),
                    imaginary_frequency=Number(("ts_refinement", "imaginary_frequencies"), 0, tolerance=10.0,
                                               index=0)),
    "neb": _run("neb", barrier=Number(("barrier_forward",), 1, tolerance=3.0),
                reaction=Number(("reaction_energy",), 1, tolerance=3.0)),
    "pmf": _run("pmf", barrier=Number(("free_energy_barrier",)), reaction=Number(("reaction_free_energy",))),
    "pmf_xtb": _run("pmf_xtb", barrier=Number(("free_energy_barrier",)), reaction=Number(("reaction_free_energy",))),
    "pmf_metadynamics": _run("pmf_metadynamics", barrier=Number(("free_energy_barrier",)),
                             reaction=Number(("reaction_free_energy",))),
    "fep_region": _run("fep_region"),
    "fep_levels": _run("fep_levels"),
    "adaptive_md": _run("adaptive_md"),
    "vibrations": _run("vibrations"),
    "ts": _run("ts"),
    "replicas": _run("replicas"),
    "finite_size": _run("finite_size", {"finite_size.png": "figures/periodic/finite_size.png"},
                        **_finite_size_numbers()),
    "elastic": _run("elastic", {"elastic.png": "figures/periodic/elastic.png"}, **_elastic_numbers()),
    "interface": _run("interface", mmgbsa=Number(("binding", "mmgbsa"), 0, tolerance=5.0),
                      qmmm=Number(("binding", "qmmm"), 0, tolerance=5.0)),
    "interface_1dqj": Entry(("interface", "../shared/data/pdb/1DQJ_ABBind_prepared.pdb", "-o", "{out}",
                             "--partners", "H,L:C", "--measured", "../shared/data/ddg/1DQJ_abbind_ddg.csv",
                             "--no-progress"), _interface_numbers(measured=True),
                            figures={"measured.png": "figures/interface/1dqj_measured.png",
                                     "scan.png": "figures/interface/1dqj_scan.png"}),
    "interface_1vfb": Entry(("interface", "../shared/data/pdb/1VFB.cif", "-o", "{out}", "--partners", "A,B:C",
                             "--no-progress"), _interface_numbers(measured=False),
                            figures={"scan.png": "figures/interface/1vfb_scan.png"}),
    "interface_1vfb_dft": Entry(("interface", "../shared/data/pdb/1VFB.cif", "-o", "{out}", "--partners", "A,B:C",
                                 "--method", "b3lyp", "--basis", "6-31g*", "--budget", "12", "--qm-scan", "region",
                                 "--refine-steps", "3", "--no-progress"), _interface_numbers(measured=False)),
    "chorismate_mutase": Entry(("systems/chorismate_mutase/run", "-o", "{out}", "--no-progress"), {
        **{key: Number((key,)) for key in ("enzyme_barrier", "water_barrier", "catalytic_effect", "enzyme_reaction",
                                           "water_reaction")},
        "compute_minutes": Number(("compute_minutes",), 0, tolerance=math.inf)}, command=(sys.executable,),
        figures={"profiles.png": "figures/systems/chorismate_mutase_profiles.png"}, in_all=False),
    "tests": Entry(("-m", "pytest", "-q", "-p", "no:cacheprovider"), command=(sys.executable,), in_all=False),
    "tests_slow": Entry(("-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow or shared_data"),
                        command=(sys.executable,), in_all=False),
}


def machine() -> str:
    """CPU model, core count, Python and the main packages' versions."""
    import openmm
    import pyscf

    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, OpenMM {openmm.__version__}, "
            f"PySCF {pyscf.__version__}")


def measure(name: str, workdir: Path, show_output: bool = False) -> dict:
    """Run entry ``name`` from the repository root, output in ``workdir``: wall time (s) and numbers;
    ``show_output``: print the end of what it wrote (pytest's slowest tests, for the test entries)."""
    entry = ENTRIES[name]
    out = workdir / name
    args = [a.format(out=out) for a in entry.args]
    start = time.perf_counter()
    done = subprocess.run([*entry.command, *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed ({' '.join(args)}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    if show_output:
        print("\n".join(done.stdout.splitlines()[-40:]), flush=True)
    numbers = extract(name, json.loads((out / entry.record).read_text())) if entry.numbers else {}
    for source, target in entry.figures.items():
        (ROOT / "docs" / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / source, ROOT / "docs" / target)
    program = "bioqmmm" if entry.command == ("bioqmmm",) else "python"
    return {"wall_s": wall, "command": " ".join([program, *entry.args]), "numbers": numbers,
            "machine": machine(), "date": datetime.now(UTC).strftime("%Y-%m-%d")}


def extract(name: str, result: dict) -> dict[str, dict]:
    """Entry ``name``'s numbers from a ``result.json`` record: {key: {value, uncertainty}}."""
    numbers = {}
    for key, spec in ENTRIES[name].numbers.items():
        item = result
        for part in spec.path:
            if isinstance(item, list) and spec.select is not None:
                chosen = [x for x in item if x[spec.select[0]] == spec.select[1]]
                if not chosen:
                    raise KeyError(f"{name}.{key}: no {spec.select[0]} {spec.select[1]!r} in {'/'.join(spec.path)}")
                item = chosen[0]
            item = item[part]
        value = item["value"] if isinstance(item, dict) else item
        if spec.index is not None:
            value = value[spec.index]
        uncertainty = item.get("uncertainty") if isinstance(item, dict) else None
        numbers[key] = {"value": float(value), "uncertainty": None if uncertainty is None else float(uncertainty)}
    return numbers


def compare(name: str, result: dict, record: dict | None = None) -> list[str]:
    """Disagreements between a fresh ``result.json`` of entry ``name`` and the recorded numbers."""
    recorded = (record or read_record())["entries"][name]["numbers"]
    problems = []
    for key, fresh in extract(name, result).items():
        spec, old = ENTRIES[name].numbers[key], recorded[key]
        if old["uncertainty"] is not None and fresh["uncertainty"] is not None:
            allowed = 2 * math.hypot(old["uncertainty"], fresh["uncertainty"])
        elif spec.tolerance is not None:
            allowed = spec.tolerance
        else:
            problems.append(f"{name}.{key}: no uncertainty and no tolerance to compare with")
            continue
        if abs(fresh["value"] - old["value"]) > allowed:
            problems.append(f"{name}.{key}: fresh {fresh['value']:.4g}, recorded {old['value']:.4g} "
                            f"(allowed difference {allowed:.3g})")
    return problems


def read_record() -> dict:
    return json.loads(RECORD.read_text()) if RECORD.exists() else {"entries": {}}


def render(key: str, record: dict) -> str:
    """The text of marker ``key``: ``NAME.wall`` (a time), ``NAME.KEY`` (a number, ± its uncertainty),
    ``NAME.machine`` or ``NAME.date`` (where and when it ran)."""
    name, _, what = key.partition(".")
    entry = record["entries"][name]
    if what in ("machine", "date"):
        return entry[what]
    if what == "wall":
        return format_time(entry["wall_s"])
    number = entry["numbers"][what]
    decimals = ENTRIES[name].numbers[what].decimals
    if number["uncertainty"] is None:
        return f"{number['value']:.{decimals}f}"
    return f"{number['value']:.{decimals}f} ± {number['uncertainty']:.{decimals}f}"


def format_time(seconds: float) -> str:
    """Seconds as quoted in the pages: "40 s", "2.5 min", "25 min", "1.2 h" (two significant figures)."""
    if seconds < 100:
        return f"{_two_figures(seconds):g} s"
    if seconds < 6000:
        return f"{_two_figures(seconds / 60):g} min"
    return f"{_two_figures(seconds / 3600):g} h"


def _two_figures(x: float) -> float:
    return float(f"{x:.2g}")


def pages() -> list[Path]:
    return sorted({p for pattern in PAGES for p in ROOT.glob(pattern)})


def stale(record: dict | None = None, files: Sequence[Path] | None = None) -> list[str]:
    """Markers whose text is not the record's rendering, or whose key the record lacks: ``file: key: ...``."""
    record = record or read_record()
    problems = []
    for path in files or pages():
        for match in MARKER.finditer(path.read_text()):
            key, text = match["key"], match["text"]
            try:
                expected = render(key, record)
            except KeyError:
                problems.append(f"{path.relative_to(ROOT)}: {key}: not in docs/{RECORD.name}")
                continue
            if text != expected:
                problems.append(f"{path.relative_to(ROOT)}: {key}: the page says {text!r}, the run gave {expected!r}")
    return problems


def rewrite(record: dict) -> list[Path]:
    """Re-render every marker of the pages from ``record``; returns the files changed."""
    changed = []
    for path in pages():
        text = path.read_text()
        new = MARKER.sub(lambda m: f"<!--n:{m['key']}-->{_rendered(m, record)}<!--/n-->", text)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def _rendered(marker: re.Match, record: dict) -> str:
    """The record's text for ``marker``, or its current text when the record lacks the key (not run yet)."""
    try:
        return render(marker["key"], record)
    except KeyError:
        return marker["text"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bioqmmm.run.docs_numbers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", nargs="+", metavar="NAME", help=f"entries to run: all or any of {', '.join(ENTRIES)}")
    parser.add_argument("--check", action="store_true", help="list stale markers; exit 1 if any")
    parser.add_argument("--show-output", action="store_true", help="print the end of each run's output")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="run in this folder, kept (a rerun resumes the long examples), not a temporary one")
    args = parser.parse_args(argv)
    record = read_record()
    if args.run:
        names = [n for n, e in ENTRIES.items() if e.in_all] if args.run == ["all"] else args.run
        unknown = sorted(set(names) - set(ENTRIES))
        if unknown:
            parser.error(f"unknown entries {unknown}; known: {', '.join(ENTRIES)}")
        failed = []
        kept = contextlib.nullcontext(str(args.workdir.resolve())) if args.workdir else None
        with kept or tempfile.TemporaryDirectory() as workdir:
            for name in names:
                print(f"running {name} ...", flush=True)
                try:
                    record["entries"][name] = measure(name, Path(workdir), args.show_output)
                except (RuntimeError, KeyError, OSError) as exc:  # the others still run; nothing recorded for it
                    failed.append(name)
                    print(f"  failed: {exc}", flush=True)
                    continue
                print(f"  {format_time(record['entries'][name]['wall_s'])}", flush=True)
                RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")  # kept entry by entry
        if failed:
            print(f"failed: {', '.join(failed)}")
            return 1
    if args.check:
        problems = stale(record)
        print("\n".join(problems) or "every marked number matches docs/numbers.json")
        return 1 if problems else 0
    for path in rewrite(record):
        print(f"rewrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
