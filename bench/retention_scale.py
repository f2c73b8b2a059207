#!/usr/bin/env python3
"""Benchmark 6 — retention at scale: 5,000 tags on (moto) ECR, 1,000 on the local OCI registry.

Runs what the ``rocm_release_retention`` DAG's two tasks run
(``rocm_release.adapters.retention``: ``observe_retention``, ``read_base_use``;
``rocm_release.core.retention``: ``plan_retention``; then ``read_guard`` and ``apply_retention``) against a
history made for the purpose: N commits, each with a wheels and a release image
per variant in the cache repository (labels naming their base), two bases, the
newest commits' public copies, the ``nightly`` aliases, and a wheel store
(``file://``, a folder per commit, a real ``nightly/<variant>/`` alias). Keeps
the newest 14 commits. Timed per phase; calls counted (ECR: every API call, by
operation, through botocore's events; OCI: every request in both registries'
access logs; the store: retention's own ``CallCount``).

Moto lacks ECR's GetDownloadUrlForLayer (the config blob, hence the labels): as
in tests/integration/test_retention.py it is stubbed with the URL of a local HTTP
server holding the config blobs; every other ECR call is moto's. Moto dates
pushes in whole seconds, so the newest 14 commits are pushed a second after the
others.

    .venv/bin/python bench/retention_scale.py [--ecr-tags 5000] [--oci-tags 1000] [--keep 14] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from local_services import REPO, Services, bench_prefix, remove_tags, run_id
from registry_traffic import RegistryTraffic
from report import Ratio, Result, fmt_seconds, main, progress, ratio
from wheels_extraction import make_wheel

VARIANTS = ("rocm710", "rocm723")
ACCOUNT, REGION = "123456789012", "us-east-1"  # moto's default account
ECR_HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
CONN_ID = "bench_moto"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
KEY_OLD, KEY_NEW = "00000000000000b1", "00000000000000b2"
PUBLIC_RECENT = 20  # commits whose images are still in the public repository


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def commits_for(total_tags: int) -> int:
    """N such that the history has about ``total_tags`` tags in both repositories together."""
    fixed = 2 * 2 * len(VARIANTS) + PUBLIC_RECENT * 2 * len(VARIANTS) + 2 * len(VARIANTS)
    return max(PUBLIC_RECENT + 1, (total_tags - fixed) // (2 * len(VARIANTS)))


@dataclass
class Image:
    manifest: bytes
    config: bytes
    layer: bytes

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def make_image(seed: str, labels: dict[str, str], seq: int) -> Image:
    created = f"2026-{1 + seq // 40000:02d}-{1 + seq // 1440 % 28:02d}T{seq // 60 % 24:02d}:{seq % 60:02d}:00Z"
    layer = seed.encode()
    config = json.dumps({"architecture": "amd64", "os": "linux", "created": created, "config": {"Labels": labels},
                         "rootfs": {"type": "layers", "diff_ids": []}}, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(layer),
                    "size": len(layer)}],
    }, sort_keys=True).encode()
    return Image(manifest, config, layer)


@dataclass
class History:
    """(role, tag) → image, in push order; the commit order; which group is pushed after the boundary."""

    commits: list[str]
    keep: int
    old: list[tuple[str, str, Image]] = field(default_factory=list)
    new: list[tuple[str, str, Image]] = field(default_factory=list)

    @property
    def tags(self) -> int:
        return len(self.old) + len(self.new)


def build_history(n: int, keep: int) -> History:
    """Bases, n nights (wheels + release per variant), public copies of the recent nights, the aliases."""
    from rocm_release.core.config import PublicTagPatterns
    from rocm_release.core.plan import (
        LABEL_BASE_DIGEST,
        LABEL_BASE_KEY,
        LABEL_COMMIT,
        LABEL_KIND,
        LABEL_VARIANT,
        base_tag,
        base_wheels_tag,
        public_tag,
        release_tag,
        wheels_tag,
    )

    patterns = PublicTagPatterns()
    commits = [hashlib.sha1(f"bench commit {i}".encode()).hexdigest() for i in range(n)]  # noqa: S324 - names
    h = History(commits, keep)
    seq = 0
    bases: dict[tuple[str, str], Image] = {}
    for key in (KEY_OLD, KEY_NEW):
        for v in VARIANTS:
            seq += 1
            bases[(key, v)] = make_image(f"base {key} {v}", {LABEL_BASE_KEY: key, LABEL_KIND: "base"}, seq)
            h.old.append(("cache", base_tag(key, v), bases[(key, v)]))
            h.old.append(("cache", base_wheels_tag(key, v), make_image(
                f"base-wheels {key} {v}", {LABEL_BASE_KEY: key, LABEL_KIND: "base_wheels"}, seq)))
    releases: dict[tuple[str, str], Image] = {}
    for i, c in enumerate(commits):
        seq += 1
        group = h.new if i >= n - keep else h.old
        key = KEY_NEW if i >= n // 2 else KEY_OLD
        for v in VARIANTS:
            common = {LABEL_BASE_KEY: key, LABEL_BASE_DIGEST: bases[(key, v)].digest, LABEL_COMMIT: c,
                      LABEL_VARIANT: v}
            group.append(("cache", wheels_tag(c, v), make_image(f"wheels {c} {v}", {**common, LABEL_KIND: "wheels"},
                                                                seq)))
            releases[(c, v)] = make_image(f"release {c} {v}", {**common, LABEL_KIND: "release"}, seq)
            group.append(("cache", release_tag(c, v), releases[(c, v)]))
            if i >= n - PUBLIC_RECENT:
                group.append(("public", public_tag(patterns.nightly_commit, variant=v, commit=c), releases[(c, v)]))
                group.append(("public", public_tag(patterns.base_nightly_commit, variant=v, commit=c),
                              bases[(key, v)]))
    for v in VARIANTS:
        h.new.append(("public", public_tag(patterns.nightly, variant=v, commit=""), releases[(commits[-1], v)]))
        h.new.append(("public", public_tag(patterns.base_nightly, variant=v, commit=""), bases[(KEY_NEW, v)]))
    return h


def build_store(root: Path, url: str, h: History) -> Any:
    """A folder per commit and a real ``nightly/rocm710/`` alias (published wheel + index) naming the newest."""
    from airflow.sdk import ObjectStoragePath

    from rocm_release.adapters.wheels_publish import promote_index, publish_wheels

    root.mkdir(parents=True)
    logging.getLogger("wheel").setLevel(logging.WARNING)  # one line per file added to the wheel otherwise
    store = ObjectStoragePath(url)
    for c in h.commits[:-1]:
        (root / c / "rocm710").mkdir(parents=True)
        (root / c / "rocm710" / "index.html").write_text("<html></html>")
    newest = h.commits[-1]
    wheel = make_wheel(root.parent / "wheel", 0)
    source = f"{url}/{newest}/rocm710/"
    publish_wheels([wheel], store / newest / "rocm710", source, lambda _: None)
    promote_index(store / newest / "rocm710", source, store / "nightly" / "rocm710", f"{url}/nightly/rocm710/",
                  commit=newest, variant="rocm710", log=lambda _: None)
    return store


class BlobServer:
    """Config blobs by digest on 127.0.0.1, where ECR's pre-signed layer URLs would point (moto has none)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = server.blobs.get(self.path.split("?")[0].lstrip("/"))
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def run_retention(config: Any, cache: Any, public: Any, store: Any, keep: int) -> tuple[Any, Any, Any, dict]:
    """What the two retention tasks do, timed by phase."""
    from rocm_release.adapters.retention import (
        CallCount,
        apply_retention,
        observe_retention,
        read_base_use,
        read_guard,
    )
    from rocm_release.core.retention import images_to_inspect, plan_retention

    calls = CallCount()
    log: list[str] = []
    t0 = time.perf_counter()
    inputs = observe_retention(config, cache=cache, public=public, store=store, keep_commits=keep,
                               log=log.append, calls=calls)
    t1 = time.perf_counter()
    base_use = read_base_use(cache, images_to_inspect(inputs), log.append, calls)
    t2 = time.perf_counter()
    plan = plan_retention(inputs, base_use)
    t3 = time.perf_counter()
    guard = read_guard(config, public=public, store=store)
    cache_location = f"{cache.name}/{config.cache_registry.repository}"
    targets = {cache_location: (cache, config.cache_registry.repository),
               f"{public.name}/{config.public_registry.repository}": (public, config.public_registry.repository)}
    applied = apply_retention(plan.delete, targets=targets, cache_location=cache_location, store=store,
                              store_url=config.wheel_store.url, log=log.append, guard=guard)
    t4 = time.perf_counter()
    phases = {"list": t1 - t0, "labels": t2 - t1, "plan": t3 - t2, "guard_and_delete": t4 - t3, "total": t4 - t0}
    return plan, applied, calls, phases


def scene_config(cache: Any, public: Any, store_url: str) -> Any:
    """The demo config (two variants) with this run's registries and store."""
    from rocm_release.adapters.config_file import load_config
    from rocm_release.core.config import WheelStore

    demo = load_config(REPO / "include" / "config" / "demo.yaml")
    return demo.model_copy(update={"cache_registry": cache, "public_registry": public,
                                   "wheel_store": WheelStore(url=store_url)})


def next_second() -> None:
    """moto's imagePushedAt has whole seconds: the newest commits start in a later second."""
    time.sleep(1.05 - (time.time() % 1.0))


# -- ECR on moto ----------------------------------------------------------------------------------------------------


def ecr_scenario(services: Services, args: argparse.Namespace, root: Path, prefix: str) -> dict[str, Any]:
    import boto3

    from rocm_release.adapters.registry.ecr import EcrRegistry
    from rocm_release.core.config import Registry

    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"region_name": REGION, "endpoint_url": services.moto_url}})
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    repos = {"cache": f"{prefix}/tinyllm", "public": f"{prefix}/tinyllm-rocm"}
    admin = boto3.client("ecr", region_name=REGION, endpoint_url=services.moto_url, aws_access_key_id="testing",
                         aws_secret_access_key="testing")  # noqa: S106 - moto takes any key
    blobs = BlobServer()
    h = build_history(commits_for(args.ecr_tags), args.keep)
    try:
        for repo in repos.values():
            admin.create_repository(repositoryName=repo)
        progress(f"ECR: pushing {h.tags} tags to moto")
        pushing = time.monotonic()
        for group in (h.old, h.new):
            if group is h.new:
                next_second()
            for role, tag, image in group:
                blobs.blobs[sha256(image.config)] = image.config
                admin.put_image(repositoryName=repos[role], imageManifest=image.manifest.decode(),
                                imageManifestMediaType=OCI_MANIFEST, imageTag=tag, imageDigest=image.digest)
        pushed = time.monotonic() - pushing
        url = f"file://{root / 'ecr-store'}"
        store = build_store(root / "ecr-store", url, h)
        config = scene_config(Registry(kind="ecr", host=ECR_HOST, repository=repos["cache"], connection_id=CONN_ID),
                              Registry(kind="ecr", host=ECR_HOST, repository=repos["public"], connection_id=CONN_ID),
                              url)
        registry = EcrRegistry(ECR_HOST, aws_conn_id=CONN_ID)
        operations: Counter[str] = Counter()
        batches: list[int] = []

        def seen(params: dict[str, Any], model: Any, **_: Any) -> None:
            operations[model.name] += 1
            if model.name == "BatchDeleteImage":
                batches.append(len(params["imageIds"]))

        def download_url(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
            from botocore.awsrequest import AWSResponse

            digest = json.loads(params["body"])["layerDigest"]
            location = f"{blobs.url}/{digest}?X-Amz-Signature=not-a-secret"
            return AWSResponse(location, 200, {}, None), {"downloadUrl": location, "layerDigest": digest}

        registry.client.meta.events.register("before-parameter-build.ecr", seen)
        registry.client.meta.events.register("before-call.ecr.GetDownloadUrlForLayer", download_url)
        progress("ECR: retention")
        plan, applied, calls, phases = run_retention(config, registry, registry, store, args.keep)
        left = sum(len(d.get("imageTags") or []) for repo in repos.values()
                   for page in admin.get_paginator("describe_images").paginate(repositoryName=repo)
                   for d in page["imageDetails"])
    finally:
        blobs.close()
        for repo in repos.values():
            try:
                admin.delete_repository(repositoryName=repo, force=True)
            except Exception as exc:  # noqa: BLE001 - the repository may not have been created
                progress(f"ECR cleanup: {repo}: {exc}")
    return {"tags": h.tags, "commits": len(h.commits), "push_seconds": pushed, "phases": phases,
            "calls": dict(operations), "batches": batches, "store_calls": dict(calls.counts),
            "deleted": sum(applied.tags_deleted.values()), "folders_deleted": applied.folders_deleted,
            "left": left, "kept_commits": sum(1 for c in plan.commits if c.keep)}


# -- the local OCI registries ---------------------------------------------------------------------------------------


def oci_scenario(services: Services, args: argparse.Namespace, root: Path, prefix: str) -> dict[str, Any]:
    from rocm_release.adapters.registry.oci import OciRegistry
    from rocm_release.core.config import Registry

    hosts = {"cache": services.cache_host, "public": services.public_host}
    repos = {"cache": f"{prefix}/tinyllm", "public": f"{prefix}/tinyllm-rocm"}
    h = build_history(commits_for(args.oci_tags), args.keep)
    try:
        progress(f"OCI: pushing {h.tags} tags to the local registries")
        pushing = time.monotonic()
        with httpx.Client(timeout=30) as client:
            done: set[tuple[str, str]] = set()
            for role, tag, image in h.old + h.new:
                base, repo = f"http://{hosts[role]}", repos[role]
                for blob in (image.config, image.layer):
                    if (role, sha256(blob)) in done:
                        continue
                    start = client.post(f"{base}/v2/{repo}/blobs/uploads/")
                    upload = httpx.URL(base).join(start.headers["location"]).copy_merge_params(
                        {"digest": sha256(blob)})
                    client.put(upload, content=blob, headers={"Content-Type": "application/octet-stream"})
                    done.add((role, sha256(blob)))
                put = client.put(f"{base}/v2/{repo}/manifests/{tag}", content=image.manifest,
                                 headers={"Content-Type": OCI_MANIFEST})
                if put.status_code != 201:
                    raise RuntimeError(f"PUT manifest {tag}: HTTP {put.status_code} {put.text[:200]}")
        pushed = time.monotonic() - pushing
        url = f"file://{root / 'oci-store'}"
        store = build_store(root / "oci-store", url, h)
        config = scene_config(Registry(kind="oci", scheme="http", host=hosts["cache"], repository=repos["cache"]),
                              Registry(kind="oci", scheme="http", host=hosts["public"], repository=repos["public"]),
                              url)
        traffic = RegistryTraffic(services, prefix)
        progress("OCI: retention")
        with OciRegistry(hosts["cache"], scheme="http") as cache, OciRegistry(hosts["public"], scheme="http") as public:
            traffic.start()
            plan, applied, calls, phases = run_retention(config, cache, public, store, args.keep)
            seen = traffic.stop()
            left = sum(len(list(reg.tag_names(repos[role]))) for role, reg in (("cache", cache), ("public", public)))
    finally:
        remove_tags(services.cache_host, [repos["cache"]])
        remove_tags(services.public_host, [repos["public"]])
    return {"tags": h.tags, "commits": len(h.commits), "push_seconds": pushed, "phases": phases,
            "calls": seen.breakdown(), "requests": seen.total_requests, "store_calls": dict(calls.counts),
            "deleted": sum(applied.tags_deleted.values()), "folders_deleted": applied.folders_deleted,
            "left": left, "kept_commits": sum(1 for c in plan.commits if c.keep)}


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
