#!/usr/bin/env python3
"""Run the seven benchmarks, print their figures, and rewrite bench/RESULTS.md and bench/results.json.

Each benchmark runs as its own process (``bench/<name>.py --json …``), one after
the other, so that a failure in one is reported and the others still run, and
so that each cleans up what it made before the next starts. Meanwhile the
machine's load and the other work on it are sampled (the machine is shared).

    .venv/bin/python bench/run_all.py                 # all seven; rewrites bench/RESULTS.md (`make bench`)
    .venv/bin/python bench/run_all.py --only promotion,dag_parsing --no-write

bench/results.json is one flat JSON object, the ``keys`` of every benchmark's result merged
(sorted); a run of a subset (``--only``) updates the keys it reports and keeps the others.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from local_services import Services
from machine import OtherWork, code_version, describe
from report import Result, fmt_ratio, fmt_seconds, render

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
RESULTS_JSON = HERE / "results.json"
BENCHMARKS = {  # key → script, in the order they run
    "promotion": "promotion.py",
    "wheels": "wheels_extraction.py",
    "noop_night": "noop_night.py",
    "source_night": "source_night.py",
    "dag_parsing": "dag_parsing.py",
    "retention": "retention_scale.py",
    "scale": "scale.py",
}
TIMEOUT = 3600


def run_one(key: str, script: str, folder: Path) -> Result:
    out = folder / f"{key}.json"
    print(f"\n==> bench/{script}", flush=True)
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, str(HERE / script), "--json", str(out)], stdout=subprocess.PIPE,
                              text=True, check=False, timeout=TIMEOUT)
        print(proc.stdout, flush=True)
    except subprocess.TimeoutExpired:
        return Result(key=key, title=key, what=f"bench/{script}", error=f"timed out after {TIMEOUT} s",
                      seconds=time.monotonic() - started)
    if out.exists():
        return Result.from_json(out.read_text())
    return Result(key=key, title=key, what=f"bench/{script}", seconds=time.monotonic() - started,
                  error=f"exit code {proc.returncode}, no result written:\n{proc.stdout[-3000:]}")


def results_markdown(results: list[Result], machine: dict[str, str], other: tuple[bool, str], total: float) -> str:
    busy, load_text = other
    lines = [
        "# Benchmarks: what a night costs, side by side with the reference pipeline's way",
        "",
        "Written by `make bench` (`bench/run_all.py`); do not edit by hand. What each benchmark measures and how "
        "to run one alone: [README.md](README.md).",
        "",
        "## The machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine.items()],
        f"| `run_all.py` wall time | {fmt_seconds(total)} |",
        "",
        ("**Other work was running on this machine during the run** (shared machine): " if busy else "")
        + load_text + " The machine is shared, so absolute times are noisy; the ratios compare two ways "
        "measured back to back on the same machine.",
        "",
        "## Ratios at a glance",
        "",
        "| benchmark | ratio | value |",
        "|---|---|---|",
    ]
    for result in results:
        if result.error:
            lines.append(f"| {result.title} | **failed** (see below) | — |")
        for r in result.ratios:
            lines.append(f"| {result.title} | {r.label} | {fmt_ratio(r.value)} |")
    lines.append("")
    lines += [render(result) for result in results]
    return "\n".join(lines).rstrip() + "\n"


def merged_keys(results: list[Result], previous: dict[str, float | int] | None) -> dict[str, float | int]:
    """The keys of ``results`` over ``previous`` (the file's keys, when only some benchmarks ran), sorted."""
    keys = dict(previous or {})
    for result in results:
        for name, value in result.keys.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{result.key}: results.json key {name!r} is not a number: {value!r}")
            keys[name] = value
    return dict(sorted(keys.items()))


def write_keys(results: list[Result], subset: bool) -> None:
    """Rewrite bench/results.json: the keys of this run, and with a subset, the file's other keys too."""
    previous = json.loads(RESULTS_JSON.read_text()) if subset and RESULTS_JSON.exists() else None
    RESULTS_JSON.write_text(json.dumps(merged_keys(results, previous), indent=2) + "\n")
    print(f"wrote {RESULTS_JSON}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; leave bench/RESULTS.md and bench/results.json as they are")
    args = parser.parse_args()
    chosen = [k.strip() for k in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = [k for k in chosen if k not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    services = Services.load()
    machine = describe(services)
    watch = OtherWork()
    watch.start()
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="rocm-nightly-bench-results-") as tmp:
        for key in chosen:
            results.append(run_one(key, BENCHMARKS[key], Path(tmp)))
    total = time.monotonic() - started
    watch.stop()
    at_end = code_version()
    if at_end != machine["commit"]:
        machine["commit"] = f"{machine['commit']} at the start, {at_end} at the end (committed meanwhile by others)"
    other = watch.summary(int(machine["cores"]))
    print("\n==> ratios")
    for result in results:
        if result.error:
            print(f"  {result.title}: FAILED")
        for r in result.ratios:
            print(f"  {result.title}: {r.label}: {fmt_ratio(r.value)}")
    print(f"  {other[1]}")
    print(f"all benchmarks: {fmt_seconds(total)}")
    if not args.no_write:
        if set(chosen) != set(BENCHMARKS):
            print("(a subset ran: bench/RESULTS.md is left as it is)")
        else:
            RESULTS.write_text(results_markdown(results, machine, other, total))
            print(f"wrote {RESULTS}")
        write_keys(results, subset=set(chosen) != set(BENCHMARKS))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
