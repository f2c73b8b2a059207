"""What a benchmark hands back (figures, ratios, notes), printed as Markdown and saved as JSON.

Every benchmark script ends in :func:`main`: it runs the benchmark, prints its
section of RESULTS.md, and with ``--json PATH`` also writes the result for
``run_all.py``, which assembles RESULTS.md from all seven. A result's ``keys``
(flat, dotted names → numbers) are what ``run_all.py`` merges into
``bench/results.json``, for tools and acceptance checks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Ratio:
    """One side-by-side figure, ``value`` = the other way ÷ ours (above 1: ours costs less); the label says which."""

    label: str
    value: float | None
    text: str = ""


@dataclass
class Result:
    key: str
    title: str
    what: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    # Headline figures for bench/results.json: "<benchmark>.<figure>" → a number (seconds, bytes, a ratio).
    keys: dict[str, float | int] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> Result:
        data = json.loads(text)
        data["ratios"] = [Ratio(**r) for r in data.get("ratios", [])]
        return cls(**data)


def ratio(reference: float, ours: float) -> float | None:
    """other / ours, or None when ours is 0 (the ratio is then unbounded: shown as such)."""
    return reference / ours if ours else None


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "∞ (ours: 0)"
    if value >= 100:
        return f"{value:,.0f}×"
    return f"{value:.1f}×"


def fmt_seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fmt_spread(values: Sequence[float]) -> str:
    """The median, and the range when there were several runs: ``46.9 s (44.0 s–50.1 s, 3 runs)``."""
    if len(values) < 2:
        return fmt_seconds(median(values))
    return f"{fmt_seconds(median(values))} ({fmt_seconds(min(values))}–{fmt_seconds(max(values))}, {len(values)} runs)"


def render(result: Result, level: int = 2) -> str:
    """The result as a Markdown section."""
    head = "#" * level
    lines = [f"{head} {result.title}", "", result.what, ""]
    if result.error:
        lines += ["**This benchmark failed:**", "", "```", result.error.strip()[-4000:], "```", ""]
    if result.columns and result.rows:
        lines.append("| " + " | ".join(result.columns) + " |")
        lines.append("|" + "|".join("---" for _ in result.columns) + "|")
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in result.rows]
        lines.append("")
    if result.ratios:
        lines += ["Ratios (the other way ÷ ours: above 1× means ours costs less):", ""]
        lines += [f"- **{fmt_ratio(r.value)}** {r.label}" + (f" — {r.text}" if r.text else "") for r in result.ratios]
        lines.append("")
    if result.notes:
        lines += [f"- {note}" for note in result.notes]
        lines.append("")
    lines += [f"_This benchmark took {fmt_seconds(result.seconds)}._", ""]
    return "\n".join(lines)


def main(key: str, title: str, run: Callable[[argparse.Namespace, Result], None],
         configure: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """Parse ``--json``, run the benchmark into a fresh Result, print it, save it; exit 1 on failure."""
    parser = argparse.ArgumentParser(description=title)
    parser.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    if configure is not None:
        configure(parser)
    args = parser.parse_args()
    result = Result(key=key, title=title, what="")
    started = time.monotonic()
    try:
        run(args, result)
    except BaseException as exc:  # reported in the result (and as the exit code)
        result.error = "".join(traceback.format_exception(exc))
        if isinstance(exc, KeyboardInterrupt):
            raise
    result.seconds = time.monotonic() - started
    print(render(result))
    if args.json:
        args.json.write_text(result.to_json())
    return 1 if result.error else 0


def progress(message: str) -> None:
    """A progress line on stderr (the figures go to stdout)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)
