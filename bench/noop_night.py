#!/usr/bin/env python3
"""Benchmark 3 — a no-op night: the same commit again, when everything already exists and is published.

A full run of the real DAG (``airflow dags test rocm_nightly_release -c
'{"commit": <sha>, "promote": true, "variants": [...]}'``) on the sample
project, after a first night built and published that commit. Measured: wall
time, time inside tasks (Airflow's own records), requests to both registries
(every access-log line of our repositories during the run), bytes moved, builds
run (from RELEASE.json's ``path``: must be none), and the wheel store's file
system calls (counted in a second, identical no-op night under ``strace``,
whose wall time is not used).

The reference pipeline has no no-op night: every night pulls both images from
ECR and pushes them again (step 7), and rebuilds or re-downloads the wheels.

    .venv/bin/python bench/noop_night.py [--variants rocm710,rocm723] [--json out.json]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

from local_services import Services
from nights import NightWorld
from registry_traffic import RegistryTraffic, human_bytes
from report import Ratio, Result, fmt_seconds, main, progress, ratio

from tests.support.dockerd import private_dockerd

STRACE_LINE = re.compile(r'^\d+\s+(?P<call>\w+)\((?P<args>.*)\)\s+=\s+(?P<ret>-?\d+|\?)')


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variants", default="rocm710,rocm723", help="comma-separated demo variants")
    parser.add_argument("--no-strace", action="store_true", help="skip the store-call count (no strace run)")


def store_calls(trace: Path, store: Path) -> Counter[str]:
    """File system calls on paths under ``store``, by kind (from ``strace -f -e trace=%file``)."""
    calls: Counter[str] = Counter()
    read_paths: set[str] = set()
    needle = f'"{store}'
    for line in trace.read_text(errors="replace").splitlines():
        match = STRACE_LINE.match(line)
        if not match or needle not in match["args"]:
            continue
        call, args = match["call"], match["args"]
        missing = match["ret"].startswith("-")
        if call in ("open", "openat", "openat2"):
            if missing:
                kind = "opens of missing files (ENOENT)"
            elif "O_DIRECTORY" in args:
                kind = "directory listings (open of a folder)"
            elif "O_WRONLY" in args or "O_RDWR" in args or "O_CREAT" in args:
                kind = "file opens for writing"
            else:
                kind = "file opens for reading"
                read_paths.add(args.split('"')[1])
        elif "stat" in call or call.startswith("access") or call.startswith("faccessat") or "readlink" in call:
            kind = "metadata lookups (stat/access)" + (", missing" if missing else "")
        elif call.startswith(("rename", "unlink", "mkdir", "rmdir", "link", "symlink", "chmod", "utime")):
            kind = "changes (mkdir/rename/unlink/…)"
        else:
            kind = f"other ({call})"
        calls[kind] += 1
    if read_paths:
        calls["distinct files read"] = len(read_paths)
    return calls


def run(args: argparse.Namespace, result: Result) -> None:
    services = Services.load()
    variants = [v for v in args.variants.split(",") if v]
    world = NightWorld(services, variants)
    result.what = (
        f"A second night of the same commit of the sample project ({len(variants)} variants: "
        f"{', '.join(variants)}), after a first night built and published it: `airflow dags test "
        "rocm_nightly_release` with `promote: true`, builds on an empty private dockerd."
    )
    try:
        progress("setting up: history, repositories, config, airflow db")
        world.setup()
        progress("night 1 (setup): build and publish the commit")
        with private_dockerd() as daemon:
            first = world.night(world.conf("initial"), daemon.host)
        progress("night 2 (measured): the same commit again")
        traffic = RegistryTraffic(services, world.prefix)
        with private_dockerd() as daemon:
            traffic.start()
            night = world.night(world.conf("initial"), daemon.host)
            seen = traffic.stop()
        calls: Counter[str] = Counter()
        if not args.no_strace and shutil.which("strace"):
            progress("night 3 (store calls): the same again under strace")
            with private_dockerd() as daemon, \
                    tempfile.TemporaryDirectory(prefix="rocm-nightly-bench-strace-") as tmp:
                trace = Path(tmp) / "trace"
                world.night(world.conf("initial"), daemon.host,
                            wrapper=["strace", "-f", "--seccomp-bpf", "-qq", "-s", "1024", "-e", "trace=%file",
                                     "-o", str(trace)])
                calls = store_calls(trace, world.store)
    finally:
        problems = world.cleanup()
        if problems:
            result.notes.append("cleanup problems: " + "; ".join(problems))

    builds = night.builds()
    ran = sorted({b for bs in builds.values() for b in bs})
    in_tasks = night.task_seconds()
    resolve = night.tasks.get("resolve_release", 0.0)
    result.columns = ["figure", "no-op night", "first night (setup, for scale)"]
    result.rows = [
        ["wall time (`airflow dags test`)", fmt_seconds(night.seconds), fmt_seconds(first.seconds)],
        ["time inside tasks (sum)", fmt_seconds(in_tasks), fmt_seconds(first.task_seconds())],
        ["of which `resolve_release` (git mirror update, parent digest)", fmt_seconds(resolve),
         fmt_seconds(first.tasks.get("resolve_release", 0.0))],
        ["builds run", str(len(ran)) + (f" ({', '.join(ran)})" if ran else ""),
         str(sum(len(b) for b in first.builds().values()))],
        ["registry requests (cache + public)", f"{seen.total_requests} ({seen.count('cache')} + "
         f"{seen.count('public')})", "—"],
        ["bytes moved (registry bodies)", human_bytes(seen.total_bytes), "—"],
        ["blob bytes read / written", f"{human_bytes(seen.blob_bytes_down)} / {human_bytes(seen.blob_bytes_up)}",
         "—"],
    ]
    for kind, count in sorted(calls.items()):
        result.rows.append([f"wheel store: {kind}", str(count), "—"])
    if ran:
        result.error = f"a no-op night ran builds: {builds}"
    result.ratios = [
        Ratio("wall time, the first night (builds everything) ÷ the no-op night", ratio(first.seconds, night.seconds)),
        Ratio("time inside tasks, the first night ÷ the no-op night", ratio(first.task_seconds(), in_tasks)),
    ]
    breakdown = seen.breakdown()
    result.notes += [
        "Request breakdown: " + ", ".join(f"{k}: {v}" for k, v in breakdown.items()) + ".",
        f"Everything outside the tasks ({fmt_seconds(night.seconds - in_tasks)} of "
        f"{fmt_seconds(night.seconds)}) is `airflow dags test` itself: interpreter and Airflow start, "
        "DAG parsing, the SQLite metadata database, scheduling each task in turn.",
        "Physical limit: a no-op night only has to ask — is each artifact there, what do the labels say — and "
        f"move no layer: here {seen.total_requests} requests and {human_bytes(seen.total_bytes)}; the "
        f"{human_bytes(seen.blob_bytes_down)} of blob bodies are image configs (labels) and the wheels images' "
        "small /dist layers (SHA256SUMS verified).",
        "The reference pipeline has no such night: step 7 pulls both images and pushes them again every "
        "night (see benchmark 1 (b)), and its wheel step builds or downloads the wheels again.",
    ]
    rewrites = seen.count("public", "PUT", "manifest") + seen.count("cache", "PUT", "manifest")
    if rewrites:
        result.notes.append(
            f"The no-op night still writes {rewrites} manifests (public registry: "
            f"{seen.count('public', 'PUT', 'manifest')}): `copy_image` PUTs the per-commit tags even when they "
            "already point at the digest. Harmless (same bytes), but a HEAD first would make the night read-only "
            "(and not touch the tags' update time on Docker Hub).")
    if calls:
        result.notes.append("Store calls were counted in a third, identical no-op night under "
                            "`strace -f --seccomp-bpf -e trace=%file` (paths under the store only; its wall "
                            "time is not reported).")
    result.raw.update({
        "seconds": night.seconds, "task_seconds": in_tasks, "tasks": night.tasks, "builds": builds,
        "traffic": seen.as_dict(), "store_calls": dict(calls), "first_night_seconds": first.seconds,
        "first_night_tasks": first.tasks, "commit": night.conf["commit"],
    })


if __name__ == "__main__":
    sys.exit(main("noop_night", "3. A no-op night", run, configure))
