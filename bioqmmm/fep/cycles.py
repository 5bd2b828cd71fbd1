"""Thermodynamic cycles that turn level corrections into a high-level free energy.

Binding: ΔG_bind(high) = ΔG_bind(low) + ΔA_complex(low → high) − ΔA_solvent(low → high);
solvation: ΔG_solv(high) = ΔG_solv(low) + ΔA_solution(low → high) − ΔA_gas(low → high).
The legs are independent runs, so their variances add; the result is trusted only when both legs are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bioqmmm.errors import InputError

#: The leg whose ΔA enters with a plus sign, per cycle.
PLUS_LEG = {"binding": "complex", "solvation": "solution"}
OTHER_LEG = {"complex": "solvent", "solvent": "complex", "solution": "gas", "gas": "solution"}


def combine(kind: str, low: float, plus: dict[str, Any], minus: dict[str, Any]) -> dict[str, Any]:
    """ΔG(high) = ``low`` + ΔA_plus − ΔA_minus (kJ/mol) from two legs' ``free_energy`` records
    (value, uncertainty, trusted), with the propagated uncertainty."""
    value = low + plus["value"] - minus["value"]
    sigma = math.hypot(plus["uncertainty"], minus["uncertainty"])
    trusted = bool(plus.get("trusted", False) and minus.get("trusted", False))
    return {"kind": kind, "value": value, "uncertainty": sigma, "unit": "kJ/mol", "trusted": trusted,
            "low_level_free_energy": low, "correction": value - low}


def cycle_record(section, result, base: Path, output: Path, temperature_k: float) -> dict[str, Any]:
    """The cycle of a leg's ``section`` (a :class:`~bioqmmm.protocols.fep_settings.CycleSection`; ``other_leg``
    relative to ``base``): with this leg's ``result`` and the other leg's ``result.json`` the combined ΔG, else
    what is missing. With ``result`` None, only checks that the other leg is not this run (``output``)."""
    folder = Path(section.other_leg)
    folder = folder if folder.is_absolute() else base / folder
    if folder.resolve() == Path(output).resolve():
        raise InputError(f"cycle: other_leg {section.other_leg!r} is this run's own output folder")
    if result is None:
        return {}
    mine = {**result.estimate.record(), "trusted": result.trusted}
    try:
        other = json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        return {"kind": section.kind, "leg": section.leg, "low_level_free_energy": section.low_free_energy_kjmol,
                "status": f"waiting for the {OTHER_LEG[section.leg]} leg: no result.json in {folder}; run it, "
                "then rerun this file"}
    theirs = other.get("cycle", {})
    wrong = [what for what, bad in (
        ("not a fep result", other.get("protocol") != "fep"),
        (f"not the {OTHER_LEG[section.leg]} leg", theirs.get("leg", OTHER_LEG[section.leg]) != OTHER_LEG[section.leg]),
        (f"not a {section.kind} cycle", theirs.get("kind", section.kind) != section.kind),
        ("another low-level ΔG", theirs.get("low_level_free_energy", section.low_free_energy_kjmol)
         != section.low_free_energy_kjmol),
        ("another temperature", other.get("temperature", {}).get("value", temperature_k) != temperature_k),
    ) if bad]
    if wrong:
        raise InputError(f"cycle: {folder}/result.json is {', '.join(wrong)}")
    legs = {section.leg: mine, OTHER_LEG[section.leg]: other["free_energy"]}
    plus = PLUS_LEG[section.kind]
    record = combine(section.kind, section.low_free_energy_kjmol, legs[plus], legs[OTHER_LEG[plus]])
    return {**record, "leg": section.leg, "other_leg": str(folder)}
