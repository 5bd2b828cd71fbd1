"""The preparation report: every change made to the input structure, and every decision taken.

A *change* alters the structure (an atom, residue or chain added, removed or moved); a *decision*
records a choice that leaves the structure as it is (protonation state of a residue whose
hydrogens were already complete, a disulfide, the template of an ion). Rerunning preparation on
its own output must give a report without changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Entry:
    """One line of the report: ``kind`` (e.g. ``"altloc"``), the residues concerned, and what was done."""

    kind: str
    residues: tuple[str, ...]
    detail: str

    def text(self, max_residues: int = 12) -> str:
        shown = ", ".join(self.residues[:max_residues])
        more = f" (+{len(self.residues) - max_residues} more)" if len(self.residues) > max_residues else ""
        where = f" [{shown}{more}]" if self.residues else ""
        return f"{self.kind}: {self.detail}{where}"


@dataclass
class Report:
    """Changes and decisions, in the order they were made."""

    changes: list[Entry] = field(default_factory=list)
    decisions: list[Entry] = field(default_factory=list)
    #: Protonation: {"method", "ph", "sites": [{label, group, pka, model_pka, state, note}]}
    #: (:mod:`bioqmmm.preparation.pka`); empty before hydrogens are added.
    titration: dict = field(default_factory=dict)

    def change(self, kind: str, detail: str, residues: tuple[str, ...] | list[str] = ()) -> None:
        self.changes.append(Entry(kind, tuple(residues), detail))

    def decide(self, kind: str, detail: str, residues: tuple[str, ...] | list[str] = ()) -> None:
        self.decisions.append(Entry(kind, tuple(residues), detail))

    def kinds(self) -> set[str]:
        """Kinds of the changes made."""
        return {entry.kind for entry in self.changes}

    def to_dict(self) -> dict:
        return {"changes": [asdict(e) for e in self.changes], "decisions": [asdict(e) for e in self.decisions],
                "titration": self.titration}

    @classmethod
    def from_dict(cls, data: dict) -> Report:
        def entries(items: list[dict]) -> list[Entry]:
            return [Entry(e["kind"], tuple(e["residues"]), e["detail"]) for e in items]

        return cls(entries(data["changes"]), entries(data["decisions"]), data.get("titration", {}))

    def __str__(self) -> str:
        lines = [f"Changes ({len(self.changes)}):"]
        lines += [f"  - {e.text()}" for e in self.changes] or ["  (none)"]
        lines.append(f"Decisions ({len(self.decisions)}):")
        lines += [f"  - {e.text()}" for e in self.decisions] or ["  (none)"]
        if self.titration.get("sites"):
            lines.append(f"Titratable groups ({self.titration['method']}, pH {self.titration['ph']:g}):")
            lines.append(f"  {'residue':<12} {'group':<5} {'pKa':>6} {'model':>6}  state")
            for site in self.titration["sites"]:
                state = site["state"] or "-"
                note = f"  ({site['note']})" if site["note"] else ""
                lines.append(f"  {site['label']:<12} {site['group']:<5} {site['pka']:>6.2f} {site['model_pka']:>6.2f}"
                             f"  {state}{note}")
        return "\n".join(lines)
