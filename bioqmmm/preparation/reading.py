"""Reading a PDB or mmCIF file with checks that name the file and line of a problem.

gemmi parses the file (both formats, alternate locations and occupancies kept); a line scan of our
own adds what gemmi does not keep: the line of each residue's first atom, for messages, and in
PDB files the TER records, which split chains.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import gemmi

from bioqmmm.errors import PreparationError

PDB_SUFFIXES = (".pdb", ".ent")
CIF_SUFFIXES = (".cif", ".mmcif")

#: (chain id, residue number, insertion code, residue name): how residues are keyed before preparation.
ResidueKey = tuple[str, int, str, str]


@dataclass
class Source:
    """A parsed input file: the gemmi structure plus line numbers and TER positions."""

    path: Path
    structure: gemmi.Structure
    lines: dict[ResidueKey, int] = field(default_factory=dict)
    ter_after: set[ResidueKey] = field(default_factory=set)

    def where(self, key: ResidueKey) -> str:
        """``file:line`` of a residue's first atom (or just the file)."""
        line = self.lines.get(key)
        return f"{self.path}:{line}" if line else str(self.path)


def read_source(path: str | Path) -> Source:
    """Parse ``path`` (.pdb/.ent or .cif/.mmcif); raise :class:`PreparationError` on an unusable file."""
    path = Path(path)
    if not path.exists():
        raise PreparationError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in PDB_SUFFIXES + CIF_SUFFIXES:
        raise PreparationError(f"{path}: unknown structure format {suffix!r} (use .pdb, .ent, .cif or .mmcif)")
    text = path.read_text(errors="replace")
    if not text.strip():
        raise PreparationError(f"{path}: the file is empty")
    source = Source(path, gemmi.Structure())
    order: list[ResidueKey] = []
    if suffix in PDB_SUFFIXES:
        text = _scan_pdb(source, text, order)
    else:
        _scan_cif(source, text)
    if not source.lines:
        raise PreparationError(f"{path}: no atom records (ATOM/HETATM) found")
    try:
        source.structure = gemmi.read_pdb_string(text) if order else gemmi.read_structure(str(path))
    except Exception as exc:  # gemmi raises RuntimeError/ValueError with its own wording
        raise PreparationError(f"{path}: cannot be parsed: {exc}") from exc
    if order:
        _restore_numbers(source.structure, order)
    if len(source.structure) == 0 or source.structure[0].count_atom_sites() == 0:
        raise PreparationError(f"{path}: no atoms in the first model")
    return source


def hybrid36(field: str) -> int:
    """A PDB residue number, decimal or hybrid-36 (what OpenMM and others write beyond 9999)."""
    field = field.strip()
    try:
        return int(field)
    except ValueError:
        pass
    digits = len(field)
    if field[:1].isupper():
        return int(field, 36) - int("A" + "0" * (digits - 1), 36) + 10**digits
    return int(field, 36) - int("a" + "0" * (digits - 1), 36) + 10**digits + 26 * 36 ** (digits - 1)


def _scan_pdb(source: Source, text: str, order: list[ResidueKey]) -> str:
    """Scan lines; returns the text for gemmi, with hybrid-36 residue numbers (which gemmi reads as 0)
    replaced by decimal ones modulo 10000, and fills ``order`` with the true residue keys in that case."""
    last: ResidueKey | None = None
    lines = text.splitlines(keepends=True)
    keys: list[ResidueKey] = []
    hybrid = False
    for number, line in enumerate(lines, start=1):
        record = line[:6].strip()
        if record == "ENDMDL":
            break
        if record == "TER" and last is not None:
            source.ter_after.add(last)
        if record not in ("ATOM", "HETATM"):
            continue
        try:
            [float(line[c : c + 8]) for c in (30, 38, 46)]
            key = (line[21].strip(), hybrid36(line[22:26]), line[26].strip(), line[17:20].strip())
        except (ValueError, IndexError):
            raise PreparationError(
                f"{source.path}:{number}: truncated or malformed {record} record (coordinates in columns 31-54): "
                f"{line.rstrip()!r}"
            ) from None
        source.lines.setdefault(key, number)
        if key != last:
            keys.append(key)
        if not line[22:26].strip().lstrip("-").isdigit():
            hybrid = True
            lines[number - 1] = f"{line[:22]}{key[1] % 10000:4d}{line[26:]}"
        last = key
    if hybrid:
        order.extend(keys)
    return "".join(lines)


def _restore_numbers(structure: gemmi.Structure, order: list[ResidueKey]) -> None:
    """Put the true (beyond 9999) residue numbers back, residue by residue in file order per chain."""
    per_chain: dict[str, list[int]] = {}
    for chain, number, _, _ in order:
        per_chain.setdefault(chain, []).append(number)
    iterators = {name: iter(numbers) for name, numbers in per_chain.items()}
    for chain in structure[0]:
        numbers = iterators.get(chain.name, iter(()))
        for residue in chain:
            residue.seqid.num = next(numbers, residue.seqid.num)


def _scan_cif(source: Source, text: str) -> None:
    """Line of each residue in the ``_atom_site`` loop; a row with missing values is a truncation."""
    columns: list[str] = []
    in_loop = False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("_atom_site."):
            in_loop = True
            columns.append(stripped.split(".", 1)[1].split()[0])
            continue
        if not in_loop or not stripped.startswith(("ATOM", "HETATM")):
            if in_loop and source.lines and (stripped.startswith(("_", "loop_", "#", "data_"))):
                break
            continue
        try:
            values = dict(zip(columns, shlex.split(stripped, posix=True), strict=True))
        except ValueError:
            raise PreparationError(
                f"{source.path}:{number}: truncated or malformed _atom_site row "
                f"({len(stripped.split())} values for {len(columns)} columns)"
            ) from None
        if values.get("pdbx_PDB_model_num", "1") not in ("1", "?", "."):
            break
        insertion = values.get("pdbx_PDB_ins_code", "?")
        key = (
            values.get("auth_asym_id", values.get("label_asym_id", "")),
            int(values.get("auth_seq_id", values.get("label_seq_id", "0"))),
            "" if insertion in ("?", ".") else insertion,
            values.get("auth_comp_id", values.get("label_comp_id", "")),
        )
        source.lines.setdefault(key, number)
