"""Regenerate docs/performance.md: run the benchmarks, each writing its section, then join them.

    python benchmarks/report.py                       # every benchmark (about 1 h on 2 cores)
    python benchmarks/report.py --only mts_drift      # rerun one, keep the other sections
    python benchmarks/report.py --assemble            # only join the existing sections

Each benchmark writes ``docs/performance/<name>.md``; ``gpu_engine`` runs only where a CUDA GPU and
gpu4pyscf are present (elsewhere its last section is kept, with the machine it names).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ROOT / "docs" / "performance"
REPORT = ROOT / "docs" / "performance.md"

#: name -> arguments of benchmarks/<name>.py, in the order of the report
BENCHMARKS = {
    "qmmm_step": ["--naive", "--md-steps", "50", "6", "3"],
    "far_field_accuracy": ["--sizes", "20000", "100000"],
    "mts_drift": ["--ps", "1.0", "--qm-every", "1", "3", "--xtb-every", "6", "8"],
    "gpu_engine": ["--sizes", "2000", "20000", "100000"],
    "parallel_replicas": ["--ranks", "2", "--steps", "40"],
    "pmf_reweighting": ["--windows", "6", "--samples", "150"],
    "energy_only": ["--method", "b3lyp", "--basis", "6-31g*", "--frames", "4", "--qm", "protocol",
                    "resname ACE ALA NME"],
    "xtb_step": ["--sizes", "2000", "20000", "100000", "--far-field"],
    "embedding_cost": ["--sizes", "20000", "100000", "--repeats", "6"],
    "memory": ["--atoms", "100000", "--samples", "40", "160"],
    "fep_cost": ["--window-samples", "30", "--figures", "docs/figures/fep"],
    "adaptive_nve": ["--ps", "2", "--figures", "docs/figures/adaptive"],
    "adaptive_two_models": ["--ps", "100", "--figures", "docs/figures/adaptive"],
    "hessian_routes": ["--figures", "docs/figures/vibrations"],
}

HEADER = """\
# Performance

Every section below is written by one script in `benchmarks/` (see `benchmarks/README.md`) and the
whole file by `python benchmarks/report.py`. Each section names its command, machine, versions and
date. Timings on shared machines are noisy: **compare ratios measured in one run, not absolute
seconds across sections**.
"""


def write_section(path: Path | None, lines: list[str]) -> None:
    """Write one benchmark's markdown section (``--write`` of every benchmark script)."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines).rstrip() + "\n")


def sized_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """``--sizes`` (target atom counts of the solvated dipeptide boxes), ``--method``, ``--basis`` and ``--write``
    of a benchmark over box sizes at one level of theory."""
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 100000])
    parser.add_argument("--method", default="b3lyp")
    parser.add_argument("--basis", default="6-31g*")
    parser.add_argument("--write", type=Path)


def protocol_benchmark_arguments(parser: argparse.ArgumentParser, figures: str) -> None:
    """``--work`` (folder for the runs), ``--write`` (the section's markdown file) and ``--figures`` (where
    ``figures`` go) of a benchmark that runs protocol files."""
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (kept; a rerun resumes)")
    parser.add_argument("--write", type=Path, default=None, help="write the section to this markdown file")
    parser.add_argument("--figures", type=Path, default=None, help=f"copy {figures} here")


def work_folder(work: Path | None, prefix: str) -> Path:
    """``work`` (created), or a new temporary folder named with ``prefix``."""
    import tempfile

    folder = work or Path(tempfile.mkdtemp(prefix=prefix))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_variant(source: Path, work: Path, name: str, changes: dict | None = None,
                protocol: dict | None = None) -> tuple[dict, float]:
    """Run the protocol file ``source`` with ``changes`` to its protocol block (or the whole block replaced by
    ``protocol``) into ``work/name``; (result record, wall seconds)."""
    import time

    import yaml

    from bioqmmm.run.runner import run_protocol

    config = yaml.safe_load(source.read_text())
    config["protocol"] = dict(protocol) if protocol is not None else {**config["protocol"], **(changes or {})}
    if "pdb" in config["system"]:
        config["system"]["pdb"] = str((source.parent / config["system"]["pdb"]).resolve())
    config["output"] = str(work / name)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.perf_counter()
    result = run_protocol(path, progress=True)
    return result, time.perf_counter() - start


def gpu_available() -> bool:
    if importlib.util.find_spec("gpu4pyscf") is None:
        return False
    import cupy

    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except cupy.cuda.runtime.CUDARuntimeError:
        return False


def assemble() -> None:
    """Join every benchmark's section; a missing one is an error (the report would lose it)."""
    missing = [name for name in BENCHMARKS if not (SECTIONS / f"{name}.md").exists()]
    if missing:
        raise SystemExit(f"no section for {missing} in {SECTIONS}: run them first (--only {' '.join(missing)})")
    REPORT.write_text("\n".join([HEADER, *((SECTIONS / f"{name}.md").read_text() for name in BENCHMARKS)]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--assemble", action="store_true", help="run nothing, only join the existing sections")
    args = parser.parse_args(argv)
    names = [] if args.assemble else (args.only or list(BENCHMARKS))
    for name in names:
        if name == "gpu_engine" and not gpu_available():
            print("gpu_engine: no CUDA GPU with gpu4pyscf here; its last section is kept", flush=True)
            continue
        command = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *BENCHMARKS[name],
                   "--write", str(SECTIONS / f"{name}.md")]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True, cwd=ROOT)
    assemble()
    print(f"wrote {REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
