"""The benchmark's results: rows of figures with their references, targets, and the table `make bench` prints."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    """One figure: what was measured, its value, the reference measured beside it, and the target if any.

    `ratio` is value / reference, and none when either is below zero (a latency measured from a moment the
    event may precede) or the reference is zero: such a quotient means nothing.  A target is a bound on the value (`at_most` or `at_least`, in the
    row's unit); a row without a target is informational.
    """

    section: str
    name: str
    value: float
    unit: str
    reference: float | None = None
    reference_name: str = ""
    at_most: float | None = None
    at_least: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.reference is None or math.isnan(self.reference) or self.reference <= 0 or self.value < 0:
            return None
        return self.value / self.reference

    @property
    def met(self) -> bool | None:
        if self.at_most is None and self.at_least is None:
            return None
        if math.isnan(self.value):
            return False
        if self.at_most is not None and self.value > self.at_most:
            return False
        if self.at_least is not None and self.value < self.at_least:
            return False
        return True

    def target_text(self) -> str:
        if self.at_most is not None:
            return f"≤ {_number(self.at_most)}"
        if self.at_least is not None:
            return f"≥ {_number(self.at_least)}"
        return ""


@dataclass
class Results:
    machine: dict[str, Any]
    seconds: float
    rows: list[Row] = field(default_factory=list)
    elapsed: float = 0.0

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def all_met(self) -> bool:
        return all(row.met is not False for row in self.rows)

    def as_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "load_seconds": self.seconds, "elapsed_seconds": round(self.elapsed, 1),
                "all_targets_met": self.all_met(),
                "rows": [dict(asdict(row), ratio=row.ratio, met=row.met) for row in self.rows]}


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if math.isnan(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render(results: Results) -> str:
    """A plain-text table: section, figure, value, reference, ratio, target, verdict."""
    header = ("section", "figure", "value", "reference", "ratio", "target", "")
    lines: list[tuple[str, ...]] = [header]
    for row in results.rows:
        reference = f"{_number(row.reference)} {row.unit} ({row.reference_name})" if row.reference is not None else ""
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else ""
        target = f"{row.target_text()} {row.unit}" if row.target_text() else ""
        verdict = {True: "met", False: "MISSED", None: ""}[row.met]
        lines.append((row.section, row.name, f"{_number(row.value)} {row.unit}", reference, ratio, target, verdict))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    machine = results.machine
    out.append(f"grafana-aggregator benchmark: {machine.get('cpu')}, {machine.get('cores')} cores, "
               f"Python {machine.get('python')}, Linux {machine.get('kernel')}; loads of {results.seconds:g} s")
    for index, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    met = sum(1 for row in results.rows if row.met)
    targets = sum(1 for row in results.rows if row.met is not None)
    out.append(f"{met} of {targets} targets met; the run took {results.elapsed:.0f} s")
    return "\n".join(out)
