"""The table's cells: a sample's median with min and max, and a row pairing ours with a baseline.

Every row holds both sides' samples from the same run, the ratio of their medians (ours over the
baseline: below 1 is better for times and sizes, above 1 for throughput), and the target it is
held to, so a reader sees at once whether the goal is met.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field


@dataclass
class Sample:
    """Repeated measurements of one thing, in ``unit`` (s, MB, rps, ms)."""

    values: list[float]
    unit: str = "s"
    peak_kib: int | None = None  # the largest process's peak memory over the runs

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def cell(self) -> str:
        if not self.values:
            return "n/a"
        fmt = _fmt(self.median, self.unit)
        if len(self.values) > 1 and min(self.values) != max(self.values):
            fmt += f" ({_fmt(min(self.values), '')}–{_fmt(max(self.values), '')})"
        return fmt

    def peak_cell(self) -> str:
        return "" if self.peak_kib is None else f"{self.peak_kib / 1024:.0f} MiB"

    def to_json(self) -> dict:
        out = {"unit": self.unit, "values": [round(v, 4) for v in self.values]}
        if self.values:
            out |= {"median": self.median, "min": min(self.values), "max": max(self.values)}
        if self.peak_kib is not None:
            out["peak_kib"] = self.peak_kib
        return out


def _fmt(v: float, unit: str) -> str:
    if unit == "rps" or abs(v) >= 100:
        s = f"{v:.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return f"{s} {unit}".strip()


@dataclass
class Row:
    """One line of the table: ours against a named baseline, with the target for the ratio."""

    case: str
    ours: Sample
    baseline_name: str
    baseline: Sample | None
    target: str = ""  # e.g. "<= 0.33x"
    limit: float | None = None  # the ratio bound of the target
    higher_is_better: bool = False
    note: str = ""
    extra: dict = field(default_factory=dict)  # kept in the JSON only
    # what the baseline is, for a reader of the JSON: "pip Dockerfile", "uv Dockerfile",
    # "MLServer", "ociforge" (itself, another way), "tool" (tar, skopeo, ...), "bound" (a limit)
    baseline_kind: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline.values or not self.ours.values:
            return None
        if self.baseline.median == 0:
            return 0.0 if self.ours.median == 0 else None
        return self.ours.median / self.baseline.median

    @property
    def met(self) -> bool | None:
        if self.limit is None or self.ratio is None:
            return None
        return self.ratio >= self.limit if self.higher_is_better else self.ratio <= self.limit

    def to_json(self) -> dict:
        d = asdict(self)
        d["ours"] = self.ours.to_json()
        d["baseline"] = self.baseline.to_json() if self.baseline else None
        d["ratio"] = self.ratio
        d["met"] = self.met
        return d


COLUMNS = [
    "case", "ociforge", "peak", "baseline", "baseline value", "baseline peak", "ratio", "target",
    "met", "note",
]  # fmt: skip


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(rows: list[Row]) -> str:
    """The rows as a markdown table (medians with min–max; ratio = ociforge / baseline)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}x"
        met = {True: "yes", False: "**no**", None: ""}[r.met]
        cells = [
            r.case, r.ours.cell(), r.ours.peak_cell(), r.baseline_name,
            r.baseline.cell() if r.baseline else "", r.baseline.peak_cell() if r.baseline else "",
            ratio, r.target, met, r.note,
        ]  # fmt: skip
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    return "\n".join(lines)
