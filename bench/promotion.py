#!/usr/bin/env python3
"""Benchmark 1 — promotion: publishing a ~1 GiB image to the public registry, and moving an alias onto it.

**Ours** (``push_images`` + ``promote_nightly``): ``OciRegistry.tag`` gives the
built digest its cache tag (a manifest GET + PUT), ``copy_image`` copies it to
the public registry as ``nightly-<commit>-<variant>`` (only the blobs the target
lacks, streamed registry to registry, manifest last), and ``OciRegistry.tag``
points ``nightly-<variant>`` at it there.

**Reference** (REFERENCE_PIPELINE.md §1 step 7): on a CI host that does not have
the image — a private, empty ``dockerd`` of our own — ``docker pull`` from the
cache registry, ``docker tag`` twice, ``docker push`` twice.

Measured twice: (a) first publication (the public registry has none of the
image's blobs), (b) promotion of an image that is already published (ours:
retag only; the reference pipeline pulls and pushes again — its push then finds
every blob there). Bytes are read from both registries' access logs (blob and
manifest bodies of our repositories only); ours also from ``CopyResult``.

    .venv/bin/python bench/promotion.py [--layers 4] [--layer-mib 256] [--repeat 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from big_image import build_and_push
from local_services import Services, bench_prefix, registry_client, run_id
from registry_traffic import RegistryTraffic, Traffic, human_bytes
from report import Ratio, Result, fmt_seconds, fmt_spread, main, median, progress, ratio

from tests.support.dockerd import private_dockerd
from tests.support.registries import remove_tags

VARIANT = "rocm710"


def measured(traffic: RegistryTraffic, work: Callable[[], Any]) -> tuple[float, Traffic, Any]:
    """Wall time of ``work()`` and the registry traffic it caused."""
    traffic.start()
    started = time.monotonic()
    value = work()
    seconds = time.monotonic() - started
    return seconds, traffic.stop(), value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", type=int, default=4, help="random-data layers (default 4)")
    parser.add_argument("--layer-mib", type=int, default=256, help="MiB per layer (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each heavy measurement (median)")
    parser.add_argument("--retag-repeat", type=int, default=10, help="repetitions of our retag (median)")


def run(args: argparse.Namespace, result: Result) -> None:
    from rocm_release.adapters.registry.image_copy import copy_image

    services = Services.load()
    rid = run_id()
    prefix = bench_prefix(rid)
    commit = hashlib.sha1(rid.encode()).hexdigest()  # noqa: S324 - a made-up commit id, not security
    src_repo = f"{prefix}/release"
    commit_tag, alias = f"nightly-{commit}-{VARIANT}", f"nightly-{VARIANT}"
    traffic = RegistryTraffic(services, prefix)
    cache_repos, public_repos = [src_repo], []
    result.what = (
        f"A {args.layers}×{args.layer_mib} MiB image (plus the base OS image's layer) is published from the "
        "cache registry to the public registry. Ours: `OciRegistry.tag` (cache tag) + `copy_image` (missing "
        "blobs only) + `OciRegistry.tag` (the `nightly` alias). Reference: `docker pull` + `docker tag` + "
        "`docker push` (two tags) on an empty private dockerd. (a) first publication; (b) the image is "
        "already published and only the alias must move. Bytes: blob and manifest bodies in both registries' "
        "access logs."
    )
    cache = registry_client(services.cache_host)
    public = registry_client(services.public_host)
    try:
        progress(f"building the {args.layers}×{args.layer_mib} MiB image on a private dockerd")
        with private_dockerd() as builder:
            image = build_and_push(services, builder, f"{services.cache_host}/{src_repo}:build-{rid}",
                                   layers=args.layers, layer_mib=args.layer_mib)
        manifest = json.loads(cache.manifest(src_repo, image.digest).raw)
        size = sum(layer["size"] for layer in manifest["layers"]) + manifest["config"]["size"]
        result.raw["image"] = {"digest": image.digest, "bytes": size, "layers": len(manifest["layers"]),
                               "build_seconds": image.build_seconds, "push_seconds": image.push_seconds}

        # -- ours -----------------------------------------------------------------------------
        ours_a, ours_a_traffic, copies = [], [], []
        for i in range(args.repeat):
            dst_repo = f"{prefix}/ours-{i}"
            public_repos.append(dst_repo)
            progress(f"ours (a): tag + copy_image + alias → {dst_repo}")

            def publish(dst_repo: str = dst_repo) -> Any:
                cache.tag(src_repo, image.digest, f"{commit}-{VARIANT}")
                copied = copy_image(cache, src_repo, image.digest, public, dst_repo, [commit_tag])
                public.tag(dst_repo, image.digest, alias)
                return copied

            seconds, seen, copied = measured(traffic, publish)
            ours_a.append(seconds)
            ours_a_traffic.append(seen)
            copies.append(copied)
        ours_b, ours_b_traffic = [], []
        for _ in range(args.retag_repeat):
            seconds, seen, _ = measured(traffic, lambda: public.tag(f"{prefix}/ours-0", image.digest, alias))
            ours_b.append(seconds)
            ours_b_traffic.append(seen)

        # -- reference ------------------------------------------------------------------------
        ref_a, ref_a_traffic, ref_b, ref_b_traffic, ref_digests = [], [], [], [], set()
        for i in range(args.repeat):
            dst_repo = f"{prefix}/ref-{i}"
            public_repos.append(dst_repo)
            for phase in ("a", "b"):
                progress(f"reference ({phase}): docker pull/tag/push on an empty private dockerd → {dst_repo}")
                with private_dockerd() as host:

                    def pull_tag_push(host_url: str = host.host, dst_repo: str = dst_repo) -> list[str]:
                        src = f"{services.cache_host}/{src_repo}:build-{rid}"
                        services.docker(["pull", src], host=host_url)
                        outs = []
                        for tag in (commit_tag, alias):
                            dst = f"{services.public_host}/{dst_repo}:{tag}"
                            services.docker(["tag", src, dst], host=host_url)
                            outs.append(services.docker(["push", dst], host=host_url).stdout)
                        return outs

                    seconds, seen, outs = measured(traffic, pull_tag_push)
                for out in outs:
                    ref_digests.update(line.split("digest: ")[1].split()[0] for line in out.splitlines()
                                       if "digest: sha256:" in line)
                (ref_a if phase == "a" else ref_b).append(seconds)
                (ref_a_traffic if phase == "a" else ref_b_traffic).append(seen)
    finally:
        problems = remove_tags(services.cache_host, cache_repos) + remove_tags(services.public_host, public_repos)
        cache.close()
        public.close()
        if problems:
            result.notes.append("cleanup problems: " + "; ".join(problems))

    def row(name: str, seconds: list[float], seen: list[Traffic]) -> list[str]:
        t = seen[0]
        return [name, fmt_spread(seconds), human_bytes(t.total_bytes),
                human_bytes(t.blob_bytes_down), human_bytes(t.blob_bytes_up), str(t.total_requests)]

    result.columns = ["way", "wall time (median)", "bytes over the wire", "blob bytes read", "blob bytes written",
                      "registry requests"]
    result.rows = [
        row("ours (a) first publication: tag + copy_image + alias", ours_a, ours_a_traffic),
        row("reference (a) first publication: pull + tag + push ×2", ref_a, ref_a_traffic),
        row("ours (b) already published: retag the alias", ours_b, ours_b_traffic),
        row("reference (b) already published: pull + tag + push", ref_b, ref_b_traffic),
    ]
    oa, ra, ob, rb = (median(x) for x in (ours_a, ref_a, ours_b, ref_b))
    bytes_a = (ref_a_traffic[0].total_bytes, ours_a_traffic[0].total_bytes)
    bytes_b = (ref_b_traffic[0].total_bytes, ours_b_traffic[0].total_bytes)
    result.ratios = [
        Ratio("(a) wall time, reference ÷ ours", ratio(ra, oa)),
        Ratio("(a) bytes over the wire, reference ÷ ours", ratio(*bytes_a)),
        Ratio("(b) wall time, reference ÷ ours", ratio(rb, ob)),
        Ratio("(b) bytes over the wire, reference ÷ ours", ratio(*bytes_b),
              f"ours moves {human_bytes(ours_b_traffic[0].total_bytes)} (one manifest GET + PUT), the "
              f"reference {human_bytes(ref_b_traffic[0].total_bytes)}"),
    ]
    copied = copies[0]
    preserved = ref_digests == {image.digest}
    result.notes += [
        f"Image: {human_bytes(size)} compressed in {len(manifest['layers'])} layers "
        f"(built on a private dockerd in {fmt_seconds(image.build_seconds)}, pushed in "
        f"{fmt_seconds(image.push_seconds)}).",
        f"`CopyResult` of ours (a): {copied.blobs_copied} blobs / {human_bytes(copied.bytes_copied)} copied, "
        f"{copied.blobs_skipped} skipped; manifests pushed: {copied.manifests_pushed}.",
        "Physical limit of (a): every blob crosses once from the cache to the public registry through the "
        f"copying host: {human_bytes(size)} read + {human_bytes(size)} written = {human_bytes(2 * size)}. We "
        f"move {human_bytes(ours_a_traffic[0].total_bytes)} ({ours_a_traffic[0].total_bytes / (2 * size):.3f}× the "
        "limit), streamed registry to registry without touching the disk; the reference "
        f"{human_bytes(ref_a_traffic[0].total_bytes)} ({ref_a_traffic[0].total_bytes / (2 * size):.3f}×), and its "
        "`docker pull` also decompresses and unpacks every layer to disk and its `docker push` compresses them "
        "again: that is where its extra time goes.",
        "Physical limit of (b): one manifest (a few KiB). Ours: "
        f"{human_bytes(ours_b_traffic[0].total_bytes)} in {ours_b_traffic[0].total_requests} requests.",
        "The reference's pushed digests " + ("equal the source digest (its gzip re-compression happened to "
                                             "give the same bytes)." if preserved else
                                             f"differ from the source digest ({sorted(ref_digests)} vs "
                                             f"{image.digest}): re-compression changed the bytes, so the "
                                             "published image is not the one that was tested."),
        f"Repetitions: {args.repeat} of (a) and of the reference's (b), {args.retag_repeat} of our (b); medians shown.",
    ]
    result.raw.update({
        "ours_a_seconds": ours_a, "ours_b_seconds": ours_b, "ref_a_seconds": ref_a, "ref_b_seconds": ref_b,
        "ours_a_traffic": [t.as_dict() for t in ours_a_traffic], "ours_b_traffic": ours_b_traffic[0].as_dict(),
        "ref_a_traffic": [t.as_dict() for t in ref_a_traffic], "ref_b_traffic": [t.as_dict() for t in ref_b_traffic],
        "copy_result": {"blobs_copied": copied.blobs_copied, "bytes_copied": copied.bytes_copied,
                        "blobs_skipped": copied.blobs_skipped, "manifests_pushed": copied.manifests_pushed},
        "reference_digests": sorted(ref_digests),
    })


if __name__ == "__main__":
    sys.exit(main("promotion", "1. Promotion of a ~1 GiB image", run, configure))
