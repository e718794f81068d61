"""A benchmark's result: rows of figures for us and a named peer, and the ratios between them."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Report:
    """`rows` maps a subject ("sidecars", "nginx") to its figures; `ratios` names ours over the peer's."""

    name: str
    peer: str
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, subject: str, **figures: float) -> None:
        self.rows.setdefault(subject, {}).update(figures)

    def ratio(self, label: str, ours: float, theirs: float) -> float:
        value = ours / theirs if theirs else float("inf")
        self.ratios[label] = value
        return value

    def compare(self, label: str, figure: str, peer: str, *, subject: str = "sidecars") -> float:
        """The `ratio` of one figure of two rows: `subject`'s over `peer`'s."""
        return self.ratio(label, self.rows[subject][figure], self.rows[peer][figure])

    def table(self) -> str:
        columns = sorted({k for figures in self.rows.values() for k in figures})
        width = max([len(c) for c in columns] + [12])
        lines = [f"{self.name} (peer: {self.peer})", ""]
        lines.append("subject".ljust(16) + "".join(c.rjust(width + 2) for c in columns))
        for subject, figures in self.rows.items():
            cells = "".join(_fmt(figures.get(c)).rjust(width + 2) for c in columns)
            lines.append(subject.ljust(16) + cells)
        if self.ratios:
            lines.append("")
            lines.extend(f"ratio {label}: {value:.2f}" for label, value in self.ratios.items())
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "peer": self.peer,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
            "rows": self.rows,
            "ratios": self.ratios,
            "notes": self.notes,
        }


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
