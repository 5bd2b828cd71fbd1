"""Where an input structure comes from: a file, a PDB id shipped with bioqmmm, or a PDB id downloaded.

``bioqmmm prepare 1AKI`` works offline for the entries in ``bioqmmm/data`` (small public-domain
PDB entries, their coordinate sections: :data:`SHIPPED`); any other four-character id is fetched as
mmCIF from the RCSB (``https://files.rcsb.org``) into a download folder, once.
"""

from __future__ import annotations

import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from bioqmmm.errors import PreparationError

DATA = Path(__file__).resolve().parents[1] / "data"

#: PDB entries shipped in ``bioqmmm/data`` (coordinate sections of the public-domain entries).
SHIPPED = {
    "1AKI": "hen egg-white lysozyme, 1.5 Å, 129 residues, no hydrogens (Artymiuk et al. 1982)",
    "2DSX": "rubredoxin from D. gigas, 0.68 Å, Fe(Cys)4 site (Chen et al. 2006)",
}

PDB_ID = re.compile(r"^[1-9][A-Za-z0-9]{3}$")
DOWNLOAD_URL = "https://files.rcsb.org/download/{}.cif"
DOWNLOAD_TIMEOUT_S = 30


def download_dir() -> Path:
    """``$XDG_CACHE_HOME/bioqmmm/pdb`` (default ``~/.cache/bioqmmm/pdb``): where downloaded entries are kept."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bioqmmm" / "pdb"


def resolve_structure(source: str | Path, downloads: Path | None = None) -> Path:
    """The file to read for ``source``: the file itself if it exists; for a PDB id (e.g. ``1AKI``) the
    shipped copy, else the entry's mmCIF downloaded into ``downloads`` (default :func:`download_dir`).

    Raises :class:`~bioqmmm.errors.PreparationError` for a missing file that is no PDB id, or when a
    download fails (no network), naming the id and the URL.
    """
    path = Path(source)
    if path.is_file() or not PDB_ID.match(str(source)):
        return path  # the reader names a missing file
    entry = str(source).upper()
    if entry in SHIPPED:
        return DATA / f"{entry}.pdb"
    folder = downloads or download_dir()
    target = folder / f"{entry}.cif"
    if target.exists():
        return target
    url = DOWNLOAD_URL.format(entry)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            text = response.read()
    except urllib.error.HTTPError as exc:
        raise PreparationError(f"PDB id {entry}: {url} answered {exc.code} ({exc.reason}); is the id right?") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PreparationError(
            f"PDB id {entry}: cannot download {url} ({reason}); without a network, download the entry "
            f"elsewhere and give its file path, or use a shipped entry ({', '.join(SHIPPED)})"
        ) from None
    if not text.lstrip().startswith(b"data_"):
        raise PreparationError(f"PDB id {entry}: {url} did not return an mmCIF file (a proxy or an error page?)")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".part", delete=False) as partial:
        partial.write(text)
    os.replace(partial.name, target)  # atomic: a concurrent download never leaves half a file
    return target
