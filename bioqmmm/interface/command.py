"""``bioqmmm interface``: a structure (raw or prepared) to an interface protocol file, run in one go.

A raw PDB/mmCIF file or PDB id is prepared first (implicit solvent, crystal waters kept for the
bridging-water search) into ``OUTPUT/prepared``; a rerun reuses it. The protocol file written to
``OUTPUT/interface.yaml`` records every choice and reruns the same job with ``bioqmmm run``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from bioqmmm.quickstart import XTB_METHODS

#: Fermi smearing (K) of GFN-xTB for interface regions: charged side chains of both partners in one region,
#: salt bridges at proton-sharing distances after MM relaxation: at xtb's 300 K the SCC of such regions can fail
#: to converge (it did for the relaxed HyHEL-63–lysozyme hot spots), at 1000 K it converges in a few cycles.
#: One temperature for every model of a run keeps the complex − partners differences consistent.
XTB_INTERFACE_TEMPERATURE = 1000.0


def level_block(method: str, basis: str) -> dict[str, Any]:
    """The ``qm`` block of a method name: GFN-xTB through xtb (with :data:`XTB_INTERFACE_TEMPERATURE`), anything
    else through PySCF."""
    if method.lower() in XTB_METHODS:
        return {"engine": "xtb", "method": XTB_METHODS[method.lower()],
                "options": {"electronic_temperature": XTB_INTERFACE_TEMPERATURE}}
    return {"engine": "pyscf", "method": method, "basis": basis}


def prepared_folder(structure: str, output: Path, ph: float) -> Path:
    """``structure`` itself when it is a prepared folder, else its preparation in ``output/prepared``."""
    from bioqmmm.preparation import prepare

    if (Path(structure) / "prepare.json").exists():
        return Path(structure).resolve()
    folder = output / "prepared"
    meta = folder / "prepare.json"
    if meta.exists():
        stored = json.loads(meta.read_text())
        if stored.get("source", "").endswith(Path(structure).name) and stored.get("options", {}).get("ph") == ph:
            return folder
    prepare(structure, solvent="implicit", keep_water=True, ph=ph).save(folder)
    return folder


def write_protocol(output: Path, prepared: Path, qm: dict[str, Any], protocol: dict[str, Any]) -> Path:
    """``output/interface.yaml`` for ``prepared`` with the level ``qm`` and the interface keys ``protocol``."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / "interface.yaml"
    config = {"system": {"prepared": str(prepared.resolve())}, "qm": qm,
              "protocol": {"type": "interface", **{k: v for k, v in protocol.items() if v is not None}},
              "output": "."}
    path.write_text("# written by bioqmmm interface; rerun with: bioqmmm run interface.yaml\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return path
