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
  Every push is then "recent" too (``retention.protect_recent_hours``): the ECR run happens "later"
  (``now`` just past the window, ``after_window``).
* **GetDownloadUrlForLayer** (config blobs, hence labels) is not implemented by moto; it is stubbed
  through botocore's ``before-call`` event with the URL of a real local HTTP server that serves the
  config blobs. BatchGetImage, DescribeImages and BatchDeleteImage are moto's.
* **Pagination**: moto answers DescribeImages in one page; real ECR would take one call per 1,000 images.

The OCI test uses the local services' registries (``make services-up``) with repositories of its own,
and a wheel store on moto S3 (ObjectStoragePath through an Airflow connection, as in production).
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from rocm_release.adapters.registry.ecr import EcrRegistry
from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.core.config import Registry
from rocm_release.core.plan import (
    base_tag,
    public_tag,
    release_tag,
    wheels_tag,
)
from tests.support.ecr import BlobServer, record_calls, stub_download_url
from tests.support.moto import MOTO_ECR_HOST, admin_client, set_connection
from tests.support.retention_history import (
    K0,
    K1,
    K2,
    K3,
    VARIANTS,
    EcrPusher,
    History,
    OciPusher,
    P,
    RetentionRun,
    after_window,
    build_history,
    build_store,
    expected_tags,
    next_second,
    run_retention,
    scene_config,
)

pytestmark = pytest.mark.integration

ECR_HOST = MOTO_ECR_HOST
CONN_ID = "retention_moto"


# -- a moto server of our own (``moto_url``, tests/conftest.py), a local blob server for ECR's config blobs ----


@pytest.fixture
def moto(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Airflow connection ``retention_moto`` (ECR and S3) pointing at our moto server."""
    set_connection(monkeypatch.setenv, CONN_ID, moto_url)
    return moto_url


def checked(run: RetentionRun) -> RetentionRun:
    """The run's plan renders one line per commit and decision; nothing was skipped."""
    text = run.plan.render(dry_run=False)
    assert len(text.splitlines()) == 6 + len(run.plan.notes) + len(run.plan.commits) + len(run.plan.decisions)
    assert run.applied.skipped == ()
    return run


def assert_store(root: Path | Any, h: History, exists: Callable[[str], bool]) -> None:
    for c in h.commits:
        assert exists(c) == (c in h.kept_commits), c
    assert exists("nightly")


# -- ECR (moto), over 2,000 tags ------------------------------------------------------------------------------


def test_ecr_over_2000_tags_keeps_exactly_the_newest_commits_and_what_is_in_use(
    moto: str, tmp_path: Path, record_property: Any
) -> None:
    from airflow.sdk import ObjectStoragePath

    run = uuid.uuid4().hex[:8]
    repos = {"cache": f"retention-{run}/tinyllm", "public": f"retention-{run}/tinyllm-rocm"}
    admin = admin_client("ecr", moto)
    for repo in repos.values():
        admin.create_repository(repositoryName=repo)
    with BlobServer() as blobs:
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
        seen = record_calls(registry)
        stub_download_url(registry, blobs)

        done = checked(run_retention(config, registry, registry, store, keep=14, now=after_window(config)))
    plan = done.plan
    operations = Counter(name for name, _ in seen)
    batches = [len(params["imageIds"]) for name, params in seen if name == "BatchDeleteImage"]

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
    # per repository: one listing of its tags and one of its untagged images (none here), and one listing again
    # just before deleting; 4 alias lookups (read again too)
    assert operations["DescribeImages"] == 2 * 2 + 2 + 4
    report = {"tags": total_tags, "deleted": deleted, "push_s": pushed,
              **{f"{k}_s": round(v, 2) for k, v in done.phases.items()}, "ecr_calls": dict(operations),
              "store_calls": str(done.calls)}
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

    done = checked(run_retention(config, cache, public, store, keep=5))
    plan = done.plan

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
    timings = {k: round(v, 2) for k, v in done.phases.items()}
    print(f"\nretention on the local OCI registries, {len(h.digests)} tags: {timings}; requests: {requests}; "
          f"store: {done.calls}")
