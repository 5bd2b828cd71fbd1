"""The ``bioqmmm`` command line.

Subcommands are thin wrappers around library functions. Library code raises typed
errors; only :func:`main` turns a :class:`bioqmmm.errors.BioQMMMError` into a one-line
message on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from bioqmmm import __version__
from bioqmmm.errors import BioQMMMError
from bioqmmm.parallel.comm import launcher_rank
from bioqmmm.quickstart import DEFAULT_METHOD, DEFAULT_STEPS, NEXT_STEPS, format_summary, run_quickstart


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (``bioqmmm prepare: error: ...``), not the usage block plus the error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bioqmmm`` command, with one subparser per subcommand."""
    parser = _OneLineParser(
        prog="bioqmmm",
        description="Biomolecular QM/MM: an OpenMM System with a PySCF QM force.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    quickstart = subparsers.add_parser(
        "quickstart",
        help="short QM/MM MD of alanine dipeptide in water (about a minute on 2 cores)",
        description=(
            "Build alanine dipeptide in a cubic TIP3P box, treat the dipeptide with QM (GFN2-xTB by "
            "default, or a PySCF method and basis) and the water with amber14/TIP3P, relax and thermalise "
            "the solvent at MM cost and run 0.5 fs steps of QM/MM Langevin MD at 300 K. Writes topology.pdb, "
            "trajectory.dcd, energies.csv and energies.png into OUTDIR."
        ),
    )
    add = quickstart.add_argument
    add("-o", "--outdir", default="quickstart_out", help="output directory (default: %(default)s)")
    add("--steps", type=_positive_int, default=DEFAULT_STEPS, help="number of 0.5 fs MD steps (default: %(default)s)")
    add("--method", default=DEFAULT_METHOD,
        help="QM method: gfn2-xtb or gfn1-xtb (xtb), or hf, uhf or a DFT functional PySCF knows "
             "(default: %(default)s)")
    add("--basis", default="sto-3g", help="basis set of a PySCF method (default: %(default)s)")
    add("--box", type=_positive_float, default=2.7, metavar="NM", help="edge of the cubic water box, nm "
        "(default: %(default)s)")
    add("--threads", type=_positive_int, default=None, help="CPU threads for PySCF and OpenMM (default: their own)")
    add("--seed", type=int, default=None, help="seed for the velocities and the Langevin noise (default: random)")
    add("--no-progress", action="store_true", help="do not show the progress bar")
    quickstart.set_defaults(handler=_quickstart)

    run = subparsers.add_parser(
        "run",
        help="run a protocol file (md, optimize, ...)",
        description=(
            "Validate the protocol file (every key, type and required value, before any computation), build "
            "the QM/MM model and run the protocol. Writes result.json, summary.txt and plots into the output "
            "folder; a rerun into the same folder resumes from its checkpoint."
        ),
    )
    run.add_argument("protocol_file", help="protocol file (YAML); see protocols/ for one per protocol")
    run.add_argument("-o", "--output", default=None, help="output folder (overrides the file's 'output')")
    run.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    run.set_defaults(handler=_run)

    protocols = subparsers.add_parser(
        "protocols",
        help="list the registered protocols and QM engines, or the keys of one protocol",
        description="Without NAME: every registered protocol and QM engine with a one-line description. With "
                    "NAME: every key of that protocol's section of a protocol file, with type, unit and default.",
    )
    protocols.add_argument("name", nargs="?", help="a protocol name (md, optimize, ...)")
    protocols.set_defaults(handler=_protocols)

    prepare = subparsers.add_parser(
        "prepare",
        help="prepare a PDB/mmCIF entry: fix, protonate, parameterise, solvate",
        description=(
            "Resolve altlocs, strip deposited hydrogens, build missing atoms and short gaps, cap or terminate "
            "chain breaks, add hydrogens at pH, parameterise ligands (QM-only template or GAFF2/AM1-BCC), add "
            "solvent, and write structure.pdb/.cif, system.xml, prepare.json and report.txt into DIR."
        ),
    )
    add = prepare.add_argument
    add("structure", help="input .pdb/.ent/.cif/.mmcif file, or a PDB id (1AKI and 2DSX are shipped; "
                          "others are downloaded from the RCSB)")
    add("-o", "--output", required=True, metavar="DIR", help="output folder")
    add("--ph", type=float, default=7.0, help="pH for protonation states (default: %(default)s)")
    add("--protonation", choices=("propka", "rules"), default="propka",
        help="states from PROPKA 3 pKa values, or from fixed model pKa values (default: %(default)s)")
    add("--state", action="append", default=[], metavar="RES=STATE",
        help="protonation state that wins over any prediction, e.g. A:GLU35=GLH or A:HIS57=HIP; repeatable")
    add("--solvent", choices=("explicit", "implicit", "vacuum"), default="explicit", help="(default: %(default)s)")
    add("--forcefield", choices=("amber14", "charmm36"), default="amber14", help="(default: %(default)s)")
    add("--padding", type=_positive_float, default=1.0, metavar="NM", help="water padding, nm (default: %(default)s)")
    add("--box-shape", choices=("cube", "dodecahedron", "octahedron"), default="cube", help="(default: %(default)s)")
    add("--ionic-strength", type=float, default=0.15, metavar="MOLAR", help="NaCl, mol/L (default: %(default)s)")
    add("--keep-water", action=argparse.BooleanOptionalAction, default=None,
        help="keep crystal waters (default: only with explicit solvent)")
    add("--keep-additives", action="store_true", help="keep crystallisation additives (FMT, GOL, SO4, ...)")
    add("--max-gap", type=int, default=10, help="longest run of missing residues to build (default: %(default)s)")
    add("--long-gaps", choices=("error", "cap"), default="error", help="(default: %(default)s)")
    add("--chain-breaks", choices=("cap", "termini"), default="cap", help="(default: %(default)s)")
    add("--qm-residue", action="append", default=[], metavar="SEL",
        help="residue that will be entirely QM (R47, A:301 or A:R47301); repeatable")
    add("--ligand-charge", action="append", default=[], metavar="RES=Q", help="net charge of a ligand; repeatable")
    add("--ligand-smiles", action="append", default=[], metavar="RES=SMILES",
        help="bond orders and protonation of a ligand whose hydrogens are missing; repeatable")
    add("--ffxml", action="append", default=[], metavar="FILE", help="extra OpenMM force-field XML; repeatable")
    add("--seed", type=int, default=0,
        help="seed for the placement of built atoms, hydrogens and ions (default: %(default)s)")
    prepare.set_defaults(handler=_prepare)

    interface = subparsers.add_parser(
        "interface",
        help="antibody–antigen (protein–protein) interface: hot spots, QM/MM refinement, alanine scan",
        description=(
            "Prepare the complex (implicit solvent, crystal waters kept) unless a prepared folder is given, "
            "find the interface, build a hot-spot QM region, refine it at QM/MM level and score the wild type "
            "and every interface alanine mutant at MM-GBSA and QM/MM-corrected level. Writes interface.yaml "
            "(rerun with bioqmmm run), result.json, residues.csv, variants.csv and figures into DIR."
        ),
    )
    add = interface.add_argument
    add("structure", help="prepared folder, .pdb/.cif file or PDB id")
    add("-o", "--output", required=True, metavar="DIR", help="output folder")
    add("--partners", default=None, help="chain ids, e.g. H,L:C (default: H,L against the rest, or two chains)")
    add("--method", default="gfn2-xtb", help="QM method: gfn2-xtb, gfn1-xtb, or a PySCF method (default: "
                                              "%(default)s)")
    add("--basis", default="6-31g*", help="basis set of a PySCF method (default: %(default)s)")
    add("--budget", type=_positive_int, default=None, help="QM atoms at most, link atoms included")
    add("--refine-steps", type=int, default=None, help="QM/MM optimisation steps (0: none)")
    add("--mutation", action="append", default=[], metavar="MUT",
        help="another variant to score, e.g. H:D32A or H:D32A,C:K97A; repeatable")
    add("--measured", default=None, metavar="CSV", help="measured ΔΔG (columns mutation, ddG_kcal_mol)")
    add("--qm-scan", choices=("all", "region", "none"), default=None,
        help="variants that get the QM/MM correction (default: all)")
    add("--counterpoise", action="store_true", help="add the counterpoise estimate of the QM part's BSSE (PySCF)")
    add("--ph", type=float, default=7.0, help="pH for preparing a raw structure (default: %(default)s)")
    add("--no-progress", action="store_true", help="do not show the progress bar")
    interface.set_defaults(handler=_interface)
    return parser


def _pairs(items: list[str], convert, what: str) -> dict:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise BioQMMMError(f"{what} {item!r} is not RES=VALUE")
        try:
            pairs[name] = convert(value)
        except ValueError:
            raise BioQMMMError(f"{what} {item!r}: bad value {value!r}") from None
    return pairs


def _prepare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bioqmmm.preparation import prepare

    output = Path(args.output)
    prepared = prepare(
        args.structure,
        ph=args.ph,
        protonation=args.protonation,
        states=_pairs(args.state, str, "--state"),
        solvent=args.solvent,
        forcefield=args.forcefield,
        padding_nm=args.padding,
        box_shape=args.box_shape,
        ionic_strength_molar=args.ionic_strength,
        keep_water=args.keep_water,
        keep_additives=args.keep_additives,
        max_gap=args.max_gap,
        long_gaps=args.long_gaps,
        chain_breaks=args.chain_breaks,
        qm_residues=args.qm_residue,
        ligand_charges=_pairs(args.ligand_charge, int, "--ligand-charge"),
        ligand_smiles=_pairs(args.ligand_smiles, str, "--ligand-smiles"),
        forcefield_files=args.ffxml,
        cache_dir=output / "forcefields" / "cache",
        seed=args.seed,
    )
    prepared.save(output)
    print(f"{prepared.report}\n\n{prepared.topology.getNumAtoms()} atoms; written to {output}/")
    return 0


def _interface(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bioqmmm.interface.command import level_block, prepared_folder, write_protocol
    from bioqmmm.results import format_summary as format_result
    from bioqmmm.run.runner import run_protocol

    output = Path(args.output).resolve()
    measured = str(Path(args.measured).resolve()) if args.measured else None
    keys = {"partners": args.partners, "qm_budget_atoms": args.budget, "refine_steps": args.refine_steps,
            "mutations": args.mutation or None, "measured_ddg": measured, "qm_scan": args.qm_scan,
            "counterpoise": args.counterpoise or None}
    path = write_protocol(output, prepared_folder(args.structure, output, args.ph),
                          level_block(args.method, args.basis), keys)
    record = run_protocol(path, progress=not args.no_progress)
    if launcher_rank() == 0:
        print(format_result(record))
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    summary = run_quickstart(
        args.outdir,
        steps=args.steps,
        method=args.method,
        basis=args.basis,
        box_size=args.box,
        threads=args.threads,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(f"{format_summary(summary)}\n\n{NEXT_STEPS}")
    return 0


def _protocols(args: argparse.Namespace) -> int:
    from bioqmmm.run.reference import keys_text, listing

    print(keys_text(args.name) if args.name else listing())
    return 0


def _run(args: argparse.Namespace) -> int:
    from bioqmmm.results import format_summary as format_result
    from bioqmmm.run.runner import run_protocol

    record = run_protocol(args.protocol_file, output=args.output, progress=not args.no_progress)
    if launcher_rank() == 0:
        print(format_result(record))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bioqmmm`` command; returns the exit status.

    0 on success, 1 for a :class:`~bioqmmm.errors.BioQMMMError` (reported as one line on
    stderr), 2 for a usage error, 130 when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except BioQMMMError as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        if launcher_rank() == 0:  # under mpirun every rank has the same error: one line is enough
            print(f"bioqmmm {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"bioqmmm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
