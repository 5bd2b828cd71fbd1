"""The key reference of protocol files, generated from the settings declarations.

``bioqmmm protocols`` prints :func:`listing`, ``bioqmmm protocols NAME`` prints :func:`keys_text`,
and ``python -m bioqmmm.run.reference docs/running.md`` rewrites the key tables of that file
between its ``<!-- keys:begin -->`` and ``<!-- keys:end -->`` markers (:func:`markdown`), so the
documentation is the declarations, not a copy of them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bioqmmm.protocols import registry
from bioqmmm.protocols.settings import key_rows
from bioqmmm.qm.factory import engine_types
from bioqmmm.run.protocol import ProtocolFile, QMSection, ResourcesSection, SystemSection

BEGIN, END = "<!-- keys:begin -->", "<!-- keys:end -->"


def listing() -> str:
    """One line per registered protocol and per QM engine."""
    protocols = registry.available()
    width = max(len(name) for name in protocols)
    lines = ["protocols (bioqmmm protocols NAME lists its keys):"]
    lines += [f"  {name:<{width}}  {p.description}" for name, p in protocols.items()]
    lines += ["QM engines (qm: {engine: NAME}):"]
    lines += [f"  {name:<{width}}  {e.description}" for name, e in engine_types().items()]
    return "\n".join(lines)


def keys_text(name: str) -> str:
    """Every key of protocol ``name``: key, type, unit, default and meaning, aligned."""
    protocol = registry.get(name)
    rows = [("key", "type", "unit", "default", "meaning")] + key_rows(protocol.settings)
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    lines = [f"{name}: {protocol.description}", ""]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
              for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def markdown() -> str:
    """Markdown key tables: the file's own blocks, then one section per registered protocol."""
    parts = ["| block | key | type | unit | default | meaning |", "|---|---|---|---|---|---|"]
    for block, cls in {"system": SystemSection, "qm": QMSection, "resources": ResourcesSection}.items():
        parts += [_row((block, *row)) for row in key_rows(cls)]
    parts += [_row((row[0].split(".")[0], *row)) for row in key_rows(ProtocolFile)
              if row[0] in ("protocol", "output") or row[0].startswith("replicas")]
    for name, protocol in registry.available().items():
        parts += ["", f"### `type: {name}`", "", protocol.description + ".", "",
                  "| key | type | unit | default | meaning |", "|---|---|---|---|---|"]
        parts += [_row(row) for row in key_rows(protocol.settings)]
    return "\n".join(parts)


def _row(cells: tuple[str, ...]) -> str:
    """A table row; the key (the first cell holding a name) in code font, pipes escaped."""
    cells = [c.replace("|", "\\|") for c in cells]
    first = 1 if len(cells) == 6 else 0
    cells[first] = f"`{cells[first]}`"
    if first and cells[0]:
        cells[0] = f"`{cells[0]}`"
    return "| " + " | ".join(cells) + " |"


def update(path: str | Path) -> bool:
    """Rewrite the key tables of the Markdown file ``path`` between the markers; True if it changed."""
    path = Path(path)
    text = path.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    if not rest or END not in rest:
        raise ValueError(f"{path} has no {BEGIN} … {END} markers")
    new = f"{head}{BEGIN}\n{markdown()}\n{END}{tail}"
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":
    for file in sys.argv[1:]:
        print(f"{file}: {'updated' if update(file) else 'unchanged'}")
