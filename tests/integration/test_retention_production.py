"""Retention in production (issue #11, defect 7): untagged images, runs in progress, recent pushes, and the
last look before deleting — against moto's ECR and the local OCI registries.

Where moto differs from ECR: it dates every push with the current time (``imagePushedAt`` cannot be
chosen), so these tests run retention "later" (``now`` past ``retention.protect_recent_hours``) instead;
and a tag moved to another image deletes moto's old image, where ECR keeps it untagged, so the images
a rebuild leaves untagged are pushed here without a tag, which is what ECR then holds.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rocm_release.adapters.registry.ecr import EcrRegistry
from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.core.config import Registry
from rocm_release.core.names import OCI_INDEX, OCI_MANIFEST
from rocm_release.core.plan import base_tag, release_tag, wheels_tag
from rocm_release.core.retention import RunInUse
from tests.support.ecr import BlobServer, ecr_image, ecr_index, put_image, stub_download_url
from tests.support.moto import MOTO_ECR_HOST, admin_client, set_connection
from tests.support.retention_history import (
    K0,
    VARIANTS,
    EcrPusher,
    History,
    OciPusher,
    after_window,
    build_history,
    build_store,
    expected_tags,
    next_second,
    run_retention,
    scene_config,
)

pytestmark = pytest.mark.integration

CONN_ID = "retention_production_moto"
HOSTS = {"cache": "127.0.0.1:5101", "public": "127.0.0.1:5102"}


# -- ECR on moto: untagged images ---------------------------------------------------------------------------------


@pytest.fixture
def ecr_scene(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A small ECR history (6 commits, keep 2), its store, the client and an admin client for the scene."""
    from airflow.sdk import ObjectStoragePath

    set_connection(monkeypatch.setenv, CONN_ID, moto_url)
    run = uuid.uuid4().hex[:8]
    repos = {"cache": f"retention-{run}/tinyllm", "public": f"retention-{run}/tinyllm-rocm"}
    admin = admin_client("ecr", moto_url)
    for repo in repos.values():
        admin.create_repository(repositoryName=repo)
    with BlobServer() as blobs:
        # moto dates pushes in whole seconds: the newest 2 nights a second later, or all would tie
        h = build_history(EcrPusher(admin, repos, blobs), n=6, keep=2, public_recent=3, boundary=next_second)
        config = scene_config(
            Registry(kind="ecr", host=MOTO_ECR_HOST, repository=repos["cache"], connection_id=CONN_ID),
            Registry(kind="ecr", host=MOTO_ECR_HOST, repository=repos["public"], connection_id=CONN_ID),
            f"file://{tmp_path}/store")
        (tmp_path / "store").mkdir()
        store = ObjectStoragePath(config.wheel_store.url)
        build_store(store, config.wheel_store.url, h, tmp_path)
        registry = EcrRegistry(MOTO_ECR_HOST, aws_conn_id=CONN_ID)
        stub_download_url(registry, blobs)
        yield {"h": h, "config": config, "store": store, "registry": registry, "admin": admin, "repo": repos["cache"]}


def untagged(admin: Any, repo: str) -> set[str]:
    return {d["imageDigest"] for page in admin.get_paginator("describe_images").paginate(repositoryName=repo)
            for d in page["imageDetails"] if not d.get("imageTags")}


def test_ecr_deletes_the_images_rebuilds_left_untagged_but_never_an_index_s_platform_images(
    ecr_scene: dict[str, Any]
) -> None:
    s = ecr_scene
    admin, repo, h = s["admin"], s["repo"], s["h"]
    left_by_rebuild = [put_image(admin, *ecr_image(f"rebuilt away {i}")[::2], None, repo) for i in range(3)]
    # a kept commit's release image is a multi-platform index: its platform images are untagged in ECR
    children = {p: ecr_image(f"child {p}")[0] for p in ("linux/amd64", "linux/arm64")}
    child_digests = [put_image(admin, raw, OCI_MANIFEST, None, repo) for raw in children.values()]
    index_raw, _ = ecr_index(children)
    put_image(admin, index_raw, OCI_INDEX, "multiarch-release", repo)
    assert untagged(admin, repo) == set(left_by_rebuild) | set(child_digests)

    soon = run_retention(s["config"], s["registry"], s["registry"], s["store"], keep=2)  # all pushed just now
    assert untagged(admin, repo) == set(left_by_rebuild) | set(child_digests)
    assert all("within the last 48 hours" in d.reason for d in soon.plan.decisions if d.target == "image")

    later = run_retention(s["config"], s["registry"], s["registry"], s["store"], keep=2,
                          now=after_window(s["config"]))

    assert untagged(admin, repo) == set(child_digests)  # the index still needs them
    assert later.applied.images_deleted == {f"{MOTO_ECR_HOST}/{repo}": 3}
    reasons = {d.name: d.reason for d in later.plan.decisions if d.target == "image"}
    assert all("an index in this repository lists it" in reasons[c] for c in child_digests)
    tags = {t for page in admin.get_paginator("describe_images").paginate(repositoryName=repo)
            for d in page["imageDetails"] for t in d.get("imageTags") or []}
    assert tags == expected_tags(h, "cache", by_digest=False) | {"multiarch-release"}


def test_ecr_an_untagged_image_tagged_again_before_the_apply_stays(ecr_scene: dict[str, Any]) -> None:
    s = ecr_scene
    admin, repo = s["admin"], s["repo"]
    raw, _, media_type = ecr_image("rebuilt away, then promoted by hand")
    digest = put_image(admin, raw, media_type, None, repo)

    def tag_it(plan: Any) -> None:
        assert any(d.name == digest for d in plan.delete)
        put_image(admin, raw, media_type, "hand-promoted", repo)

    done = run_retention(s["config"], s["registry"], s["registry"], s["store"], keep=2,
                         now=after_window(s["config"]), between=tag_it)

    assert any(line.startswith(f"SKIP {MOTO_ECR_HOST}/{repo}@{digest}: tagged again since the plan (hand-promoted)")
               for line in done.applied.skipped)
    assert s["registry"].lookup(repo, "hand-promoted").digest == digest


# -- the local OCI registries: runs in progress, recent pushes, the re-check -------------------------------------


@pytest.fixture
def oci_scene(services: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """12 commits (keep 3) in new repositories of the local registries; a ``file://`` store."""
    from airflow.sdk import ObjectStoragePath

    run = uuid.uuid4().hex[:8]
    repos = {"cache": f"retention-{run}/tinyllm", "public": f"retention-{run}/tinyllm-rocm"}
    pusher = OciPusher({r: f"http://{host}" for r, host in HOSTS.items()}, repos)
    h = build_history(pusher, n=12, keep=3, public_recent=5, boundary=lambda: None)
    config = scene_config(Registry(kind="oci", scheme="http", host=HOSTS["cache"], repository=repos["cache"]),
                          Registry(kind="oci", scheme="http", host=HOSTS["public"], repository=repos["public"]),
                          f"file://{tmp_path}/store")
    (tmp_path / "store").mkdir()
    store = ObjectStoragePath(config.wheel_store.url)
    build_store(store, config.wheel_store.url, h, tmp_path)
    return {"h": h, "config": config, "store": store, "repos": repos, "pusher": pusher, "root": tmp_path / "store"}


def run(scene: dict[str, Any], **kwargs: Any) -> Any:
    cache, public = (OciRegistry(HOSTS[r], scheme="http") for r in ("cache", "public"))
    return run_retention(scene["config"], cache, public, scene["store"], keep=3, **kwargs)


def left(scene: dict[str, Any]) -> dict[str, set[str]]:
    return {role: set(OciRegistry(HOSTS[role], scheme="http").tag_names(scene["repos"][role])) for role in HOSTS}


def commit_tags(h: History, role: str, commit: str) -> set[str]:
    return {t for t in h.tags(role) if commit in t}


def test_a_run_in_progress_keeps_its_commit_and_its_base(oci_scene: dict[str, Any]) -> None:
    h = oci_scene["h"]
    old = h.commits[3]  # commits 1 and 2 are the nightly aliases', 9 to 11 the newest: 3 would go
    in_progress = RunInUse("backfill__2026-11-02T02:00:00+00:00", "running", commit=old, base_keys=((VARIANTS[0], K0),))

    done = run(oci_scene, runs=[in_progress])

    now = left(oci_scene)
    assert commit_tags(h, "cache", old) <= now["cache"] and (oci_scene["root"] / old).is_dir()
    assert base_tag(K0, VARIANTS[0]) in now["cache"] and base_tag(K0, VARIANTS[1]) not in now["cache"]
    assert f"in use by run {in_progress.run_id} (running)" in next(
        d.reason for d in done.plan.decisions if d.name == release_tag(old, VARIANTS[0]))
    assert not (oci_scene["root"] / h.commits[4]).exists()


def test_anything_pushed_within_the_window_is_kept(oci_scene: dict[str, Any]) -> None:
    h = oci_scene["h"]
    # OciPusher dates commit i's images 2026-11-01 00:(4+i); "now" is 48 hours after commit 6's
    done = run(oci_scene, now=datetime(2026, 11, 1, 0, 10, tzinfo=UTC) + timedelta(hours=48))

    assert {c.commit for c in done.plan.commits if c.keep} == set(h.commits[6:]) | h.kept_commits
    assert commit_tags(h, "cache", h.commits[6]) <= left(oci_scene)["cache"]
    assert wheels_tag(h.commits[5], VARIANTS[0]) not in left(oci_scene)["cache"]


def test_apply_skips_a_tag_moved_since_the_plan_and_keeps_its_commit_whole(oci_scene: dict[str, Any]) -> None:
    h, pusher = oci_scene["h"], oci_scene["pusher"]
    moved = release_tag(h.commits[3], VARIANTS[1])  # (rocm710 shares its digest with "latest": kept)

    def rebuild(plan: Any) -> None:
        assert any(d.name == moved for d in plan.delete)
        pusher.image("cache", moved, "rebuilt since the plan", {}, 99)

    done = run(oci_scene, between=rebuild)

    assert any(line.startswith(f"SKIP {HOSTS['cache']}/{oci_scene['repos']['cache']}:{moved}: moved to sha256:")
               for line in done.applied.skipped)
    now = left(oci_scene)
    assert commit_tags(h, "cache", h.commits[3]) <= now["cache"]  # the whole commit stays, not just the tag
    assert (oci_scene["root"] / h.commits[3]).is_dir()
    assert wheels_tag(h.commits[4], VARIANTS[0]) not in now["cache"]  # the rest of the plan went ahead


def test_apply_skips_what_a_run_started_since_the_plan_names(oci_scene: dict[str, Any]) -> None:
    h = oci_scene["h"]
    late = RunInUse("manual__2026-12-02T05:00:00+00:00", "running", commit=h.commits[4])

    done = run(oci_scene, between=lambda plan: [late])

    assert any(f"in use by run {late.run_id} (running) now (it was not when planned)" in line
               for line in done.applied.skipped)
    assert (oci_scene["root"] / h.commits[4]).is_dir()
    assert left(oci_scene)["cache"] == expected_tags(h, "cache", by_digest=True) | commit_tags(h, "cache",
                                                                                               h.commits[4])
