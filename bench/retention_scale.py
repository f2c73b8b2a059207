#!/usr/bin/env python3
"""Benchmark 6 — retention at scale: 5,000 tags on (moto) ECR, 1,000 on the local OCI registry.

Runs what the ``rocm_release_retention`` DAG's two tasks run
(``rocm_release.adapters.retention``: ``observe_retention``, ``read_base_use``;
``rocm_release.core.retention``: ``plan_retention``; then ``read_guard`` and ``apply_retention``) against the
history the retention tests use (tests/support/retention_history.py), made
large: N commits, each with a wheels and a release image per variant in the
cache repository (labels naming their base), four bases (one unused, one newer
than every image), the newest commits' public copies, the ``nightly`` aliases
(one stuck on an old commit), tags that are not ours, and a wheel store
(``file://``, a folder per commit, a real ``nightly/<variant>/`` alias naming an
old commit). Keeps the newest 14 commits. Timed per phase; calls counted (ECR:
every API call, by operation, through botocore's events; OCI: every request in
both registries' access logs; the store: retention's own ``CallCount``).

Moto lacks ECR's GetDownloadUrlForLayer (the config blob, hence the labels): as
in tests/integration/test_retention.py it is stubbed with the URL of a local HTTP
server holding the config blobs; every other ECR call is moto's. Moto dates
pushes in whole seconds, so the newest 14 commits are pushed a second after the
others.

    .venv/bin/python bench/retention_scale.py [--ecr-tags 5000] [--oci-tags 1000] [--keep 14] [--json out.json]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from local_services import Services, bench_prefix, run_id
from registry_traffic import RegistryTraffic
from report import Ratio, Result, fmt_seconds, main, progress, ratio

from tests.support.ecr import BlobServer, record_calls, stub_download_url
from tests.support.moto import MOTO_ECR_HOST, admin_client, set_connection
from tests.support.registries import remove_tags
from tests.support.retention_history import (
    EcrPusher,
    History,
    OciPusher,
    after_window,
    build_history,
    build_store,
    history_tags,
    next_second,
    run_retention,
    scene_config,
)

CONN_ID = "bench_moto"
PUBLIC_RECENT = 20  # commits whose images are still in the public repository


def commits_for(total_tags: int) -> int:
    """The smallest N whose history has at least ``total_tags`` tags in both repositories together."""
    n = PUBLIC_RECENT + 1
    while history_tags(n, PUBLIC_RECENT) < total_tags:
        n += 1
    return n


def history(push: Any, total_tags: int, keep: int, root: Path, url: str, boundary: Any) -> tuple[History, Any, float]:
    """Push the history; build its ``file://`` store at ``url`` (folder ``root``); the seconds pushing took."""
    from airflow.sdk import ObjectStoragePath

    pushing = time.monotonic()
    h = build_history(push, commits_for(total_tags), keep, PUBLIC_RECENT, boundary)
    pushed = time.monotonic() - pushing
    root.mkdir(parents=True)
    logging.getLogger("wheel").setLevel(logging.WARNING)  # one line per file added to the wheel otherwise
    store = ObjectStoragePath(url)
    build_store(store, url, h, root.parent)
    return h, store, pushed


def summary(h: History, done: Any, pushed: float) -> dict[str, Any]:
    return {"tags": len(h.digests), "commits": len(h.commits), "push_seconds": pushed, "phases": done.phases,
            "store_calls": dict(done.calls.counts), "deleted": sum(done.applied.tags_deleted.values()),
            "folders_deleted": done.applied.folders_deleted,
            "kept_commits": sum(1 for c in done.plan.commits if c.keep)}


# -- ECR on moto ----------------------------------------------------------------------------------------------------


def ecr_scenario(services: Services, args: argparse.Namespace, root: Path, prefix: str) -> dict[str, Any]:
    from rocm_release.adapters.registry.ecr import EcrRegistry
    from rocm_release.core.config import Registry

    set_connection(os.environ.__setitem__, CONN_ID, services.moto_url)
    repos = {"cache": f"{prefix}/tinyllm", "public": f"{prefix}/tinyllm-rocm"}
    admin = admin_client("ecr", services.moto_url)
    try:
        with BlobServer() as blobs:
            for repo in repos.values():
                admin.create_repository(repositoryName=repo)
            progress(f"ECR: pushing about {args.ecr_tags} tags to moto")
            url = f"file://{root / 'ecr-store'}"
            h, store, pushed = history(EcrPusher(admin, repos, blobs), args.ecr_tags, args.keep, root / "ecr-store",
                                       url, next_second)
            config = scene_config(
                Registry(kind="ecr", host=MOTO_ECR_HOST, repository=repos["cache"], connection_id=CONN_ID),
                Registry(kind="ecr", host=MOTO_ECR_HOST, repository=repos["public"], connection_id=CONN_ID), url)
            registry = EcrRegistry(MOTO_ECR_HOST, aws_conn_id=CONN_ID)
            calls = record_calls(registry)
            stub_download_url(registry, blobs)
            progress("ECR: retention")
            done = run_retention(config, registry, registry, store, args.keep, now=after_window(config))
        left = sum(len(d.get("imageTags") or []) for repo in repos.values()
                   for page in admin.get_paginator("describe_images").paginate(repositoryName=repo)
                   for d in page["imageDetails"])
    finally:
        for repo in repos.values():
            try:
                admin.delete_repository(repositoryName=repo, force=True)
            except Exception as exc:  # noqa: BLE001 - the repository may not have been created
                progress(f"ECR cleanup: {repo}: {exc}")
    return {**summary(h, done, pushed), "calls": dict(Counter(name for name, _ in calls)),
            "batches": [len(params["imageIds"]) for name, params in calls if name == "BatchDeleteImage"],
            "left": left}


# -- the local OCI registries ---------------------------------------------------------------------------------------


def oci_scenario(services: Services, args: argparse.Namespace, root: Path, prefix: str) -> dict[str, Any]:
    from rocm_release.adapters.registry.oci import OciRegistry
    from rocm_release.core.config import Registry

    hosts = {"cache": services.cache_host, "public": services.public_host}
    repos = {"cache": f"{prefix}/tinyllm", "public": f"{prefix}/tinyllm-rocm"}
    try:
        progress(f"OCI: pushing about {args.oci_tags} tags to the local registries")
        url = f"file://{root / 'oci-store'}"
        h, store, pushed = history(OciPusher({r: f"http://{host}" for r, host in hosts.items()}, repos),
                                   args.oci_tags, args.keep, root / "oci-store", url, lambda: None)
        config = scene_config(Registry(kind="oci", scheme="http", host=hosts["cache"], repository=repos["cache"]),
                              Registry(kind="oci", scheme="http", host=hosts["public"], repository=repos["public"]),
                              url)
        traffic = RegistryTraffic(services, prefix)
        progress("OCI: retention")
        with OciRegistry(hosts["cache"], scheme="http") as cache, OciRegistry(hosts["public"], scheme="http") as public:
            traffic.start()
            done = run_retention(config, cache, public, store, args.keep)
            seen = traffic.stop()
            left = sum(len(list(reg.tag_names(repos[role]))) for role, reg in (("cache", cache), ("public", public)))
    finally:
        remove_tags(services.cache_host, [repos["cache"]])
        remove_tags(services.public_host, [repos["public"]])
    return {**summary(h, done, pushed), "calls": seen.breakdown(), "requests": seen.total_requests, "left": left}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ecr-tags", type=int, default=5000, help="tags in moto ECR (both repositories)")
    parser.add_argument("--oci-tags", type=int, default=1000, help="tags in the local registries (both)")
    parser.add_argument("--keep", type=int, default=14, help="commits to keep")


def run(args: argparse.Namespace, result: Result) -> None:
    services = Services.load()
    root = Path(tempfile.mkdtemp(prefix="rocm-nightly-bench-retention-"))
    # Airflow (the ECR hook, ObjectStoragePath) reads its home at import: a throwaway one.
    os.environ.setdefault("AIRFLOW_HOME", str(root / "airflow"))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    prefix = bench_prefix(run_id())
    try:
        ecr = ecr_scenario(services, args, root, prefix)
        oci = oci_scenario(services, args, root, prefix)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    result.what = (
        f"`rocm_release.adapters.retention` + `rocm_release.core.retention` end to end "
        f"(list, read base labels, plan, re-read the aliases, delete), "
        f"keeping the newest {args.keep} commits, on a history of {ecr['tags']:,} tags in moto ECR "
        f"({ecr['commits']:,} commits, cache + public repository) and {oci['tags']:,} tags in the local OCI "
        f"registries ({oci['commits']:,} commits), each with a `file://` store of one folder per commit."
    )
    result.columns = ["", "ECR (moto)", "OCI (local registries)"]

    def both(key: str, fmt: Any = str) -> list[str]:
        return [fmt(ecr[key]), fmt(oci[key])]

    ecr_calls = sum(ecr["calls"].values())
    result.rows = [
        ["tags before / after", f"{ecr['tags']:,} / {ecr['left']:,}", f"{oci['tags']:,} / {oci['left']:,}"],
        ["tags deleted / wheel folders deleted", f"{ecr['deleted']:,} / {ecr['folders_deleted']:,}",
         f"{oci['deleted']:,} / {oci['folders_deleted']:,}"],
        ["commits kept", *both("kept_commits")],
        ["wall time, total", fmt_seconds(ecr["phases"]["total"]), fmt_seconds(oci["phases"]["total"])],
        *[[f"… {phase}", fmt_seconds(ecr["phases"][phase]), fmt_seconds(oci["phases"][phase])]
          for phase in ("list", "labels", "plan", "guard_and_delete")],
        ["registry calls", f"{ecr_calls:,} (" + ", ".join(f"{k} {v}" for k, v in sorted(ecr["calls"].items())) + ")",
         f"{oci['requests']:,} (" + ", ".join(f"{k}: {v}" for k, v in oci["calls"].items()) + ")"],
        ["retention's own `CallCount`", *(", ".join(f"{k} {v}" for k, v in sorted(s["store_calls"].items()))
                                              for s in (ecr, oci))],
        ["(setup) pushing the history", fmt_seconds(ecr["push_seconds"]), fmt_seconds(oci["push_seconds"])],
    ]
    ecr_lower = math.ceil(ecr["deleted"] / 100) + 2  # one listing per repository (moto: one page each) + batches
    result.notes += [
        f"ECR: {len(ecr['batches'])} BatchDeleteImage calls for {ecr['deleted']:,} tags (largest batch "
        f"{max(ecr['batches'] or [0])}); a per-tag cleanup like the reference's `cleanup-nightly-builds.sh` "
        f"(one DELETE per tag on the Docker Hub API) would make {ecr['deleted']:,} delete calls. The floor for "
        f"listing + deleting is {ecr_lower} calls; the rest of the {ecr_calls:,} are the label reads of the kept "
        "images (BatchGetImage + GetDownloadUrlForLayer each) and the alias look-ups.",
        "OCI: the Registry API has no push times and deletes by digest: listing costs a manifest GET per cache "
        "tag and a config GET per image (push time = the config's `created`), the public repository a HEAD per "
        "tag; deleting costs a HEAD per tag (the by-digest safety check) and one DELETE per digest.",
        f"OCI: {oci['calls'].get('cache HEAD manifest', 0):,} of the requests are `delete_tags` HEADing every "
        "cache tag again for its by-digest safety check, although the listing read those digests a moment "
        "before; handing the listed digests to `delete_tags` would save them (about a quarter of the requests).",
        "Real ECR pages DescribeImages by 1,000 images (moto answers in one page), so real ECR adds about "
        f"{math.ceil(ecr['tags'] / 1000) - 1} listing calls; GetDownloadUrlForLayer is stubbed (moto lacks it).",
    ]
    result.ratios = [
        Ratio("ECR delete calls, one per tag (the reference's cleanup style; computed) ÷ ours (batches of 100)",
              ratio(ecr["deleted"], len(ecr["batches"]))),
    ]
    result.raw = {"ecr": ecr, "oci": oci}


if __name__ == "__main__":
    sys.exit(main("retention", "6. Retention at scale", run, configure))
