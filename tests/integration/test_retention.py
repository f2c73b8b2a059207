"""Retention against real registries and stores: moto ECR with over 2,000 tags, the local OCI registries.

Both tests build the same kind of history — N commits, each night a wheels and a release image per
variant (labels naming their base), three old bases and a newest one, public copies of the recent
nights, a ``nightly`` alias stuck on an old commit, a nightly wheel folder naming another old commit,
and tags of a variant that is not configured — then plan, apply, and check the repositories and the
store hold exactly what must stay. Commit names sort *against* push time (the newest has the smallest
name), so ordering by name would keep the wrong commits.

Where moto differs from ECR, and what the ECR test does about it (see also test_registry_ecr.py):

* **imagePushedAt** is set by moto at PutImage to the current time in *whole seconds*, and cannot be
  chosen. So the ECR test pushes all old nights first, waits for the next second, then pushes the
  newest N: the boundary is real, but commits within each group tie. Ordering among commits with
  distinct times is checked here on the OCI registry (whose push time is the config's ``created``,
  which the test sets) and in tests/unit/test_retention.py.
* **GetDownloadUrlForLayer** (config blobs, hence labels) is not implemented by moto; it is stubbed
  through botocore's ``before-call`` event with the URL of a real local HTTP server that serves the
  config blobs. BatchGetImage, DescribeImages and BatchDeleteImage are moto's.
* **Pagination**: moto answers DescribeImages in one page; real ECR would take one call per 1,000 images.

The OCI test uses the local services' registries (``make services-up``) with repositories of its own,
and a wheel store on moto S3 (ObjectStoragePath through an Airflow connection, as in production).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from rocm_release.adapters.config_file import load_config
from rocm_release.adapters.registry.ecr import EcrRegistry
from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.adapters.retention import (
    CallCount,
    apply_retention,
    observe_retention,
    read_base_use,
    read_guard,
)
from rocm_release.core.config import Registry, ReleaseConfig, WheelStore
from rocm_release.core.names import OCI_MANIFEST
from rocm_release.core.plan import (
    base_tag,
    public_tag,
    release_tag,
    wheels_tag,
)
from rocm_release.core.registry import ImageRegistry
from rocm_release.core.retention import RetentionPlan, images_to_inspect, plan_retention
from tests.integration.moto_server import MOTO_ACCOUNT, MOTO_ECR_HOST, MOTO_REGION, moto_server
from tests.integration.retention_history import (
    K0,
    K1,
    K2,
    K3,
    VARIANTS,
    History,
    OciPusher,
    P,
    Pusher,
    build_history,
    build_store,
    expected_tags,
)

pytestmark = pytest.mark.integration

ACCOUNT, REGION, ECR_HOST = MOTO_ACCOUNT, MOTO_REGION, MOTO_ECR_HOST
CONN_ID = "retention_moto"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()



# -- a moto server of our own, and a local blob server for ECR's config blobs --------------------------------


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server process of this module's own on 127.0.0.1."""
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


@pytest.fixture
def moto(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Airflow connection ``retention_moto`` (ECR and S3) pointing at our moto server."""
    extra = {"region_name": REGION, "endpoint_url": moto_url}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}",
                       json.dumps({"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto_url


def admin_client(service: str, moto_url: str) -> Any:
    """A plain boto3 client for setting the scene, not the code under test."""
    import boto3

    return boto3.client(service, region_name=REGION, endpoint_url=moto_url, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


class BlobServer:
    """Serves config blobs by digest on 127.0.0.1, where ECR's pre-signed layer URLs would point."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
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


def run_retention(config: ReleaseConfig, cache: ImageRegistry, public: ImageRegistry, store: Any,
                  keep: int) -> tuple[RetentionPlan, CallCount, dict[str, float]]:
    """What the two tasks do, timed: observe, read labels, plan, read the aliases again, apply."""
    calls = CallCount()
    log: list[str] = []
    started = time.perf_counter()
    inputs = observe_retention(config, cache=cache, public=public, store=store, keep_commits=keep, log=log.append,
                               calls=calls)
    listed = time.perf_counter()
    base_use = read_base_use(cache, images_to_inspect(inputs), log.append, calls)
    plan = plan_retention(inputs, base_use)
    planned = time.perf_counter()
    text = plan.render(dry_run=False)
    assert len(text.splitlines()) == 6 + len(plan.commits) + len(plan.decisions)
    guard = read_guard(config, public=public, store=store)
    cache_location = f"{cache.name}/{config.cache_registry.repository}"
    targets = {cache_location: (cache, config.cache_registry.repository),
               f"{public.name}/{config.public_registry.repository}": (public, config.public_registry.repository)}
    applied = apply_retention(plan.delete, targets=targets, cache_location=cache_location, store=store,
                              store_url=config.wheel_store.url, log=log.append, guard=guard)
    done = time.perf_counter()
    assert applied.skipped == ()
    return plan, calls, {"list": round(listed - started, 2), "labels_and_plan": round(planned - listed, 2),
                         "apply": round(done - planned, 2), "total": round(done - started, 2)}


def assert_store(root: Path | Any, h: History, exists: Callable[[str], bool]) -> None:
    for c in h.commits:
        assert exists(c) == (c in h.kept_commits), c
    assert exists("nightly")


# -- ECR (moto), over 2,000 tags ------------------------------------------------------------------------------


class EcrPusher(Pusher):
    """PutImage of hand-made manifests (moto has no blob store); config blobs go to the blob server."""

    def __init__(self, client: Any, repos: dict[str, str], blobs: BlobServer) -> None:
        self.client, self.repos, self.blobs = client, repos, blobs

    def image(self, role: str, tag: str, seed: str, labels: dict[str, str], seq: int) -> str:
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels},
                             "rootfs": {"type": "layers", "diff_ids": []}}, sort_keys=True).encode()
        self.blobs.blobs[sha256(config)] = config
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": sha256(seed.encode()), "size": len(seed)}],
        }, sort_keys=True).encode()
        # imageDigest: moto stores ECR's digest (sha256 of the manifest) only when told (test_registry_ecr.py)
        self.client.put_image(repositoryName=self.repos[role], imageManifest=manifest.decode(),
                              imageManifestMediaType=OCI_MANIFEST, imageTag=tag, imageDigest=sha256(manifest))
        return sha256(manifest)


def next_second() -> None:
    """moto's imagePushedAt has whole seconds: start the newest nights in a later second."""
    time.sleep(1.05 - (time.time() % 1.0))


def test_ecr_over_2000_tags_keeps_exactly_the_newest_commits_and_what_is_in_use(
    moto: str, tmp_path: Path, record_property: Any
) -> None:
    from airflow.sdk import ObjectStoragePath
    from botocore.awsrequest import AWSResponse

    run = uuid.uuid4().hex[:8]
    repos = {"cache": f"retention-{run}/tinyllm", "public": f"retention-{run}/tinyllm-rocm"}
    admin = admin_client("ecr", moto)
    for repo in repos.values():
        admin.create_repository(repositoryName=repo)
    blobs = BlobServer()
    try:
        pushing = time.perf_counter()
        h = build_history(EcrPusher(admin, repos, blobs), n=500, keep=14, public_recent=20, boundary=next_second)
        pushed = round(time.perf_counter() - pushing, 1)
        total_tags = len(h.digests)
        assert total_tags > 2000
        (tmp_path / "store").mkdir()
        config = scene_config(
            Registry(kind="ecr", host=ECR_HOST, repository=repos["cache"], connection_id=CONN_ID),
            Registry(kind="ecr", host=ECR_HOST, repository=repos["public"], connection_id=CONN_ID),
            f"file://{tmp_path}/store")
        store = ObjectStoragePath(config.wheel_store.url)
        build_store(store, config.wheel_store.url, h, tmp_path)

        registry = EcrRegistry(ECR_HOST, aws_conn_id=CONN_ID)
        operations: Counter[str] = Counter()
        batches: list[int] = []

        def seen(params: dict[str, Any], model: Any, **_: Any) -> None:
            operations[model.name] += 1
            if model.name == "BatchDeleteImage":
                batches.append(len(params["imageIds"]))

        def download_url(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
            """Stub of the AWS service for GetDownloadUrlForLayer only: moto does not implement it."""
            digest = json.loads(params["body"])["layerDigest"]
            url = f"{blobs.url}/{digest}?X-Amz-Signature=not-a-secret"
            return AWSResponse(url, 200, {}, None), {"downloadUrl": url, "layerDigest": digest}

        registry.client.meta.events.register("before-parameter-build.ecr", seen)
        registry.client.meta.events.register("before-call.ecr.GetDownloadUrlForLayer", download_url)

        plan, calls, timings = run_retention(config, registry, registry, store, keep=14)
    finally:
        blobs.close()

    # moto dates whole seconds: the old nights tie among themselves, the newest 14 come a second later
    assert {c.commit for c in plan.commits if c.keep} == h.kept_commits
    left = {role: listed_tags(admin, repo) for role, repo in repos.items()}
    for role in ("cache", "public"):
        assert left[role] == expected_tags(h, role, by_digest=False), role
    assert "latest" in left["cache"] and release_tag(h.commits[3], "rocm710") not in left["cache"]  # ECR untags
    assert {base_tag(K0, v) for v in VARIANTS}.isdisjoint(left["cache"])
    assert {base_tag(k, v) for k in (K1, K2, K3) for v in VARIANTS} <= left["cache"]
    assert_store(tmp_path / "store", h, lambda name: (tmp_path / "store" / name).is_dir())

    deleted = {role: len(h.tags(role) - left[role]) for role in repos}
    assert batches and max(batches) <= 100
    assert len(batches) == sum(math.ceil(n / 100) for n in deleted.values())
    kept_images = len(h.kept_commits) * len(VARIANTS) * 2
    assert operations["GetDownloadUrlForLayer"] == kept_images  # one label read per kept image, no more
    assert operations["BatchGetImage"] == kept_images
    assert operations["DescribeImages"] == 2 + 4  # one listing per repository; 4 alias lookups (guard)
    report = {"tags": total_tags, "deleted": deleted, "push_s": pushed, **{f"{k}_s": v for k, v in timings.items()},
              "ecr_calls": dict(operations), "store_calls": str(calls)}
    for key, value in report.items():
        record_property(key, value)
    print(f"\nretention on moto ECR, {total_tags} tags: {report}")


def listed_tags(admin: Any, repo: str) -> set[str]:
    found: set[str] = set()
    for page in admin.get_paginator("describe_images").paginate(repositoryName=repo,
                                                                 filter={"tagStatus": "TAGGED"}):
        for detail in page["imageDetails"]:
            found.update(detail.get("imageTags") or [])
    return found


def scene_config(cache: Registry, public: Registry, store_url: str, conn_id: str | None = None) -> ReleaseConfig:
    """The demo config (two variants) with this test's registries and store."""
    demo = load_config()
    return demo.model_copy(update={"cache_registry": cache, "public_registry": public,
                                   "wheel_store": WheelStore(url=store_url, connection_id=conn_id)})


# -- the local OCI registries, S3 store ---------------------------------------------------------------------------


class CountingTransport(httpx.HTTPTransport):
    """Counts the HTTP requests a client makes, by method (observation only)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.counts[request.method] += 1
        return super().handle_request(request)


def test_oci_keeps_exactly_the_newest_commits_and_what_is_in_use(
    services: dict[str, Any], moto: str, tmp_path: Path
) -> None:
    from airflow.sdk import ObjectStoragePath

    run = uuid.uuid4().hex[:8]
    hosts = {"cache": "127.0.0.1:5101", "public": "127.0.0.1:5102"}
    repos = {"cache": f"retention-{run}/tinyllm", "public": f"retention-{run}/tinyllm-rocm"}
    h = build_history(OciPusher({r: f"http://{host}" for r, host in hosts.items()}, repos), n=60, keep=5,
                      public_recent=10, boundary=lambda: None)
    assert len(h.digests) > 250
    bucket = f"wheels-{run}"
    admin_client("s3", moto).create_bucket(Bucket=bucket)
    config = scene_config(Registry(kind="oci", scheme="http", host=hosts["cache"], repository=repos["cache"]),
                          Registry(kind="oci", scheme="http", host=hosts["public"], repository=repos["public"]),
                          f"s3://{bucket}/rocm", CONN_ID)
    store = ObjectStoragePath(config.wheel_store.url, conn_id=CONN_ID)
    build_store(store, config.wheel_store.url, h, tmp_path)
    transports = {role: CountingTransport() for role in hosts}
    cache, public = (OciRegistry(hosts[r], scheme="http", transport=transports[r]) for r in ("cache", "public"))

    plan, calls, timings = run_retention(config, cache, public, store, keep=5)

    # distinct push times here: exactly the newest 5 by time (their names sort last), plus the two nightly commits
    ranked = [c.commit for c in plan.commits if c.rank is not None]
    assert ranked == list(reversed(h.commits))
    assert {c.commit for c in plan.commits if c.keep} == h.kept_commits
    left = {role: set(OciRegistry(hosts[role], scheme="http").tag_names(repos[role])) for role in hosts}
    for role in hosts:
        assert left[role] == expected_tags(h, role, by_digest=True), role
    # "latest" shares an old release image's digest: the registry deletes by digest, so both stay
    assert {"latest", release_tag(h.commits[3], "rocm710")} <= left["cache"]
    assert "shares its digest with kept tag latest" in next(
        d.reason for d in plan.decisions if d.name == release_tag(h.commits[3], "rocm710"))
    # old public base-nightly-<commit> tags share the base image with base-nightly-<variant>: kept, said why
    old_base = public_tag(P.base_nightly_commit, variant="rocm710", commit=h.commits[-7])
    assert old_base in left["public"] and h.commits[-7] not in h.kept_commits

    s3 = admin_client("s3", moto)
    prefixes = {p["Prefix"].split("/")[1] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="rocm/", Delimiter="/") for p in page.get("CommonPrefixes", [])}
    assert prefixes == h.kept_commits | {"nightly"}
    gone = OciRegistry(hosts["cache"], scheme="http").lookup(repos["cache"], wheels_tag(h.commits[10], "rocm723"))
    assert not gone.present
    requests = {role: dict(t.counts) for role, t in transports.items()}
    print(f"\nretention on the local OCI registries, {len(h.digests)} tags: {timings}; requests: {requests}; "
          f"store: {calls}")
