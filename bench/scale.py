#!/usr/bin/env python3
"""Benchmark 7 — three nights at vLLM's sizes: bytes and requests against the wheel store and the registries.

Per variant a set of fabricated but valid base wheels (≥ 4 GiB: torch, triton,
aiter, flash_attn, torchvision, torchaudio, amdsmi, triton_kernels) and a
project wheel (≥ 0.5 GiB, ``vllm``), incompressible, in wheels images pushed
as a build would (``scale_images``); the wheel store is a bucket on the shared
moto server, reached through an Airflow connection. Three nights call the
nightly DAG's step functions in its order (``scale_world``): a first night
(nothing exists), a no-op night (the same commit again) and a source-only night
(the next commit, same base key). Counting reverse proxies in front of moto and
both registries count requests by method and body bytes read and written, per
night and step. Side by side: the reference pipeline's way (every night
uploads every wheel, base and project, into the commit's folder), computed
from the same wheel sizes.

    .venv/bin/python bench/scale.py [--small] [--base-gib 4 --project-gib 0.5 --variants 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from local_services import Services, run_id
from registry_traffic import human_bytes
from report import Ratio, Result, fmt_seconds, main, progress, ratio
from scale_world import SERVICES, DiskWatch, Night, ScaleWorld

GIB = 1 << 30
NIGHTS = (("first", "initial", "first night (nothing exists)"),
          ("noop", "initial", "no-op night (same commit)"),
          ("source", "source_change", "source-only night (next commit)"))
STEPS = ("sensors", "builds", "push_images", "publish_wheels", "promote", "report")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-gib", type=float, default=4.0, help="base wheels per variant (GiB, default 4)")
    parser.add_argument("--project-gib", type=float, default=0.5, help="project wheel per variant (GiB, default 0.5)")
    parser.add_argument("--variants", type=int, default=2, help="variants of the demo config (default 2)")
    parser.add_argument("--small", action="store_true", help="a quick check: 48 MiB base + 16 MiB project wheels")


def run(args: argparse.Namespace, result: Result) -> None:
    base_bytes, project_bytes = int(args.base_gib * GIB), int(args.project_gib * GIB)
    if args.small:
        base_bytes, project_bytes = 48 << 20, 16 << 20
    services = Services.load()
    rid = run_id()
    result.what = (
        f"Three nights of {args.variants} variants at vLLM's sizes: per variant {human_bytes(base_bytes)} of "
        f"base wheels (8 wheels) and a {human_bytes(project_bytes)} project wheel, fabricated (valid, "
        "incompressible), in wheels images pushed through the registry API; the wheel store an S3 bucket on "
        "moto. Each night calls the DAG's steps in order (sensors, decision, builds = pushing the fabricated "
        "images, `push_variant_images`, `publish_variant_wheels`, `promote_variant`, `image_sizes`); "
        "counting proxies in front of moto and both registries count requests and body bytes.")
    root = Path(tempfile.mkdtemp(prefix="rocm-nightly-bench-scale-"))
    world = ScaleWorld(services, rid, root, variants=args.variants, base_bytes=base_bytes,
                       project_bytes=project_bytes)
    disk = DiskWatch(root)
    disk.start()
    nights: list[Night] = []
    # Airflow's and the steps' log lines go to stderr with the progress lines: stdout is the section.
    with contextlib.redirect_stdout(sys.stderr):
        fabricate_seconds, storage = _nights(world, disk, nights, result)
    assert world.factory is not None
    report(result, world, nights, storage, fabricate_seconds, disk.peak)


def _nights(world: ScaleWorld, disk: DiskWatch, nights: list[Night], result: Result) -> tuple[float, dict[str, int]]:
    """Set up, fabricate, run the three nights into ``nights``, list the bucket; clean up whatever happens."""
    try:
        progress(f"setting up in {world.root}: history, bucket {world.bucket}, proxies, plans")
        registry_before = world.registry_bytes()
        world.setup()
        started = time.monotonic()
        progress("fabricating wheels and layers")
        world.fabricate()
        fabricate_seconds = time.monotonic() - started
        for name, label, what in NIGHTS:
            progress(f"night {name}: {what}")
            nights.append(world.night(name, label))
            progress(f"  {fmt_seconds(nights[-1].seconds)}; builds {nights[-1].builds}")
        storage = world.storage()
        grown = world.registry_bytes() - registry_before
        result.raw["registry_storage_growth_bytes"] = grown
        result.notes.append(f"The shared registries' storage grew by {human_bytes(grown)} during the run (blobs "
                            "stay until a registry GC; the wheels' bytes are seeded, so a rerun pushes the same "
                            "blobs and adds only configs and manifests).")
    except BaseException:
        result.notes.append("last step log lines: " + " | ".join(list(world.log_lines)[-15:]))
        raise
    finally:
        disk.stop()
        problems = world.cleanup()
        if problems:
            result.notes.append("cleanup problems: " + "; ".join(problems))
    return fabricate_seconds, storage


def _wheel_sizes(world: ScaleWorld) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Per variant: base wheels' bytes; per commit label and variant: the project wheel's bytes."""
    assert world.factory is not None
    base: dict[str, int] = {}
    project: dict[str, dict[str, int]] = {}
    for label, plan in world.plans.items():
        for v in plan.variants:
            base[v.name] = world.factory.layer(plan, v, "base_wheels").wheel_bytes
            project.setdefault(label, {})[v.name] = world.factory.layer(plan, v, "wheels").wheel_bytes
    return base, project


def report(result: Result, world: ScaleWorld, nights: list[Night], storage: dict[str, int],
           fabricate_seconds: float, disk_peak: int) -> None:
    n = world.variant_count
    first, noop, source = nights
    base, project = _wheel_sizes(world)
    base_mean = sum(base.values()) / n
    project_mean = sum(project["source_change"].values()) / n
    commit2 = world.plans["source_change"].commit
    per_commit = [storage.get(f"{commit2}/{v.name}/", 0) for v in world.plans["source_change"].variants]
    storage_mean = sum(per_commit) / n
    other = {k: b for k, b in storage.items() if not any(k.startswith(p.commit) for p in world.plans.values())}
    # The reference pipeline: night 1 builds the base wheels, uploads them to rocm/cache/<key>/ and every
    # wheel to rocm/<commit>/; every later night downloads the base wheels from the cache and uploads every
    # wheel again to the commit's folder (a no-op night included: it has no such notion).
    ref_written = {"first": 2 * base_mean + project_mean, "noop": base_mean + project_mean,
                   "source": base_mean + project_mean}
    ref_read = {"first": 0.0, "noop": base_mean, "source": base_mean}
    result.columns = ["figure", *(what for _, _, what in NIGHTS)]
    rows = [["wall time", *(fmt_seconds(x.seconds) for x in nights)],
            ["builds run (per variant)", *(", ".join(sorted({b for bs in x.builds.values() for b in bs})) or "none"
                                           for x in nights)]]
    for service in SERVICES:
        rows.append([f"{service}: requests", *(_requests(x.total(service)) for x in nights)])
        rows.append([f"{service}: bytes read / written (per variant)",
                     *(f"{human_bytes(x.total(service).bytes_read / n)} / "
                       f"{human_bytes(x.total(service).bytes_written / n)}" for x in nights)])
    rows.append(["all three, without the builds: read / written (per variant)",
                 *(f"{human_bytes(x.all_services(exclude='builds').bytes_read / n)} / "
                   f"{human_bytes(x.all_services(exclude='builds').bytes_written / n)}" for x in nights)])
    for step in STEPS:
        rows.append([f"step `{step}`: read / written, all services (per variant)",
                     *(f"{human_bytes(x.all_services(step).bytes_read / n)} / "
                       f"{human_bytes(x.all_services(step).bytes_written / n)}" for x in nights)])
    rows.append(["reference way: store read / written (per variant, computed)",
                 *(f"{human_bytes(ref_read[x.name])} / {human_bytes(ref_written[x.name])}" for x in nights)])
    commit1 = world.plans["initial"].commit
    first_mean = sum(storage.get(f"{commit1}/{v.name}/", 0) for v in world.plans["initial"].variants) / n
    result.rows = rows + [
        ["storage under the night's `<commit>/<variant>/` (mean per variant, listed after the three nights)",
         human_bytes(first_mean), human_bytes(first_mean), human_bytes(storage_mean)],
        ["reference way: storage per commit per variant", *[human_bytes(base_mean + project_mean)] * 3],
    ]
    noop_read = noop.all_services().bytes_read / n
    noop_written = noop.all_services().bytes_written
    source_store_written = source.total("store").bytes_written / n
    result.ratios = [
        Ratio("source-only night, store bytes written per variant: the reference way ÷ ours",
              ratio(ref_written["source"], source_store_written)),
        Ratio("storage per commit per variant: the reference way ÷ ours",
              ratio(base_mean + project_mean, storage_mean)),
    ]
    result.keys = {
        "scale.noop_night.bytes_read_per_variant": noop_read,
        "scale.noop_night.bytes_written": noop_written,
        "scale.source_night.store_bytes_written_per_variant": source_store_written,
        "scale.source_night.project_wheel_bytes_per_variant": project_mean,
        "scale.storage_per_commit_per_variant": storage_mean,
        "scale.base_wheel_bytes_per_variant": base_mean,
        "scale.noop_night.requests": noop.all_services().total_requests,
        "scale.noop_night.store_bytes_read_per_variant": noop.total("store").bytes_read / n,
        "scale.source_night.bytes_read_per_variant": source.all_services(exclude="builds").bytes_read / n,
        "scale.source_night.requests": source.all_services().total_requests,
        "scale.source_night.store_written_over_project_wheels": ratio(source_store_written, project_mean) or 0.0,
        "scale.storage_per_commit_over_project_wheels": ratio(storage_mean, project_mean) or 0.0,
        "scale.reference.store_bytes_written_per_night_per_variant": ref_written["source"],
        "scale.reference.storage_per_commit_per_variant": base_mean + project_mean,
        **{f"scale.{x.name}_night.seconds": round(x.seconds, 2) for x in nights},
    }
    result.notes += [
        f"Wheels per variant: base {human_bytes(base_mean)} in 8 wheels, project {human_bytes(project_mean)}; "
        f"fabricated in {fmt_seconds(fabricate_seconds)} (not part of any night). Peak disk use of the run's "
        f"temporary folder (layers, the publishing step's temp folders): {human_bytes(disk_peak)}.",
        "Bucket after the three nights: " + ", ".join(f"`{k}` {human_bytes(b)}" for k, b in storage.items()) + ".",
        "Other prefixes (not a commit's): " + (", ".join(f"`{k}` {human_bytes(b)}" for k, b in other.items())
                                               or "none") + ".",
        "Bytes are HTTP body bytes through the proxies (headers not counted); `builds` is the fabricated "
        "images' push (what a build's push would send), not a step of ours.",
        "The summary's `store_report` (RELEASE.md/RELEASE.json, a few KiB) is not run: the night ends with "
        "`image_sizes`.",
        "Reference way (computed from the same wheel sizes): the first night uploads the base wheels to its "
        "cache folder and every wheel to `rocm/<commit>/<variant>/`; every later night, a no-op one included, "
        "downloads the base wheels from that cache and uploads every wheel again.",
        "Responses a client hung up on (counted up to there): " + ("; ".join(
            f"{name}: {line}" for name, proxy in world.proxies.items() for line in proxy.aborted) or "none") + ".",
        "Promotion is on (`scheduled` runs): `promote_variant` reads the demo history's git repository.",
        "Step breakdown (store requests by method, per night): " + "; ".join(
            f"{x.name}: " + ", ".join(f"{step} {_requests(x.total('store', step))}" for step in STEPS
                                      if x.total("store", step).total_requests) for x in nights) + ".",
    ]
    result.raw.update({
        "nights": {x.name: {"commit": x.commit, "seconds": x.seconds, "builds": x.builds,
                            "promoted": x.promoted,
                            "tallies": {s: {p: t.as_dict() for p, t in ph.items()} for s, ph in x.tallies.items()}}
                   for x in nights},
        "storage": storage, "base_wheel_bytes": base, "project_wheel_bytes": project,
        "disk_peak_bytes": disk_peak, "fabricate_seconds": fabricate_seconds,
    })


def _requests(tally: object) -> str:
    from counting_proxy import Tally

    assert isinstance(tally, Tally)
    methods = ", ".join(f"{m} {c}" for m, c in sorted(tally.requests.items()))
    return f"{tally.total_requests}" + (f" ({methods})" if methods else "")


if __name__ == "__main__":
    sys.exit(main("scale", "7. Three nights at vLLM's sizes", run, configure))
