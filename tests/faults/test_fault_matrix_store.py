"""Fault matrix, the wheel store: S3 (moto) unreachable or refusing, a full disk, bytes and pages that change.

The S3 store is a bucket on a moto server of this module's own, reached the production way (an Airflow
AWS connection whose ``endpoint_url`` is the server) through a ``TcpGate``: moto keeps its buckets in
memory, so "S3 is down" is the gate refusing connections, and "back up" the gate listening again on the
same port, with the bucket as it was. Each test checks (a) no page or alias names anything missing or
unverified (``store_lies``), (b) the step run again after the fault converges (``recovered``), (c) the
error names the file or folder that failed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rocm_release.adapters.steps import observe_artifact, promote_variant, publish_variant_wheels
from rocm_release.adapters.store import FatalStoreError, TransientStoreError, observe_published, store_root
from rocm_release.adapters.wheels_alias import alias_commit
from rocm_release.core.plan import ReleasePlan
from tests.faults.conftest import Repo
from tests.faults.matrix import (
    VARIANT,
    Night,
    plan_for,
    publish_night,
    push_night,
    quiet,
    recovered,
    store_lies,
    world_config,
)
from tests.support.gates import TcpGate, tcp_gate
from tests.support.moto import admin_client, moto_api, moto_server, set_connection
from tests.support.registries import LocalRegistry

pytestmark = pytest.mark.faults


@dataclass(frozen=True)
class S3:
    """A bucket behind a gate: the store URL and the connection that reaches it through the gate."""

    gate: TcpGate
    url: str
    conn_id: str


@pytest.fixture
def s3(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:
    with tcp_gate(int(moto_url.rsplit(":", 1)[1])) as gate:
        conn_id = f"faults_s3_{gate.port}"  # Airflow caches a store's filesystem per connection id
        set_connection(monkeypatch.setenv, conn_id, gate.url)
        bucket = f"wheels-{uuid.uuid4().hex[:12]}"
        admin_client("s3", moto_url).create_bucket(Bucket=bucket)
        yield S3(gate, f"s3://{bucket}/rocm", conn_id)


def s3_plan(s3: S3, cache: LocalRegistry, repo: Repo, commit: int = 1) -> ReleasePlan:
    config = world_config(cache=cache.host, public=cache.host, store_url=s3.url, store_conn=s3.conn_id,
                          git_url=repo.url)
    return plan_for(config, repo.commits[commit])


def file_plan(store: Path, cache: LocalRegistry, public: LocalRegistry, repo: Repo, commit: int = 1) -> ReleasePlan:
    store.mkdir(exist_ok=True)
    config = world_config(cache=cache.host, public=public.host, store_url=f"file://{store}/rocm", git_url=repo.url)
    return plan_for(config, repo.commits[commit])


def folder_of(plan: ReleasePlan) -> tuple[object, str]:
    v = plan.variant(VARIANT)
    return store_root(v.wheels_url, plan.config.wheel_store.connection_id), v.wheels_url


def published(plan: ReleasePlan) -> bool:
    folder, url = folder_of(plan)
    return observe_published(folder, url).present  # type: ignore[arg-type]


# --------------------------------------------------------------------------- S3 outages


def test_s3_down_during_check_wheels_published_is_transient_never_absent(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, s3: S3
) -> None:
    plan = s3_plan(s3, cache, repo)
    v = plan.variant(VARIANT)
    night = push_night(cache.url, plan, tmp_path)
    publish_variant_wheels(plan, v, night.refs, quiet)

    with s3.gate.down(), pytest.raises(TransientStoreError) as caught:
        observe_artifact(plan, v, "wheels_published")
    assert f"{v.wheels_url}index.html: EndpointConnectionError" in str(caught.value)

    with recovered("S3 down", "check_wheels_published"):
        seen = observe_artifact(plan, v, "wheels_published")
        assert seen.present, seen.reason
        assert store_lies(plan.store_url, s3.conn_id) == []


def test_s3_lost_in_the_middle_of_the_uploads_leaves_the_folder_unpublished(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, s3: S3
) -> None:
    plan = s3_plan(s3, cache, repo)
    v = plan.variant(VARIANT)
    night = push_night(cache.url, plan, tmp_path)
    bucket = plan.store_url.removeprefix("s3://").split("/")[0]
    # S3 goes away as the second wheel's PUT arrives: the first wheel is there, no page is.
    trap = s3.gate.trap(f"PUT /{bucket}/rocm/{plan.commit}/{VARIANT}/".encode(), "cut", nth=2)

    with pytest.raises(TransientStoreError) as caught:
        publish_variant_wheels(plan, v, night.refs, quiet)
    assert trap.sprung.is_set()
    assert str(caught.value).startswith(v.wheels_url) and ".whl: " in str(caught.value)

    s3.gate.open()
    assert not published(plan)
    assert store_lies(plan.store_url, s3.conn_id) == []
    messages: list[str] = []
    with recovered("S3 lost mid-upload", "publish_wheels"):
        publish_variant_wheels(plan, v, night.refs, messages.append)
        assert published(plan)
        assert store_lies(plan.store_url, s3.conn_id) == []
    assert sum("already there with sha256" in m for m in messages) == 1  # the first wheel is not sent again


def test_wrong_s3_credentials_fail_publish_wheels_at_once(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto checks signatures once IAM is enforced (``/moto-api/reset-auth``): the connection's secret
    key was rotated, so every request is refused with 403 SignatureDoesNotMatch."""
    with moto_server(tmp_path) as url:
        iam = admin_client("iam", url)
        iam.create_user(UserName="publisher")
        key = iam.create_access_key(UserName="publisher")["AccessKey"]
        iam.put_user_policy(UserName="publisher", PolicyName="wheels", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        bucket = f"wheels-{uuid.uuid4().hex[:12]}"
        admin_client("s3", url).create_bucket(Bucket=bucket)
        moto_api(url, "reset-auth", b"0")  # from now on every request must be signed by a known key
        conn_id = f"faults_s3_iam_{url.rsplit(':', 1)[1]}"
        set_connection(monkeypatch.setenv, conn_id, url, login=key["AccessKeyId"], password="rotated-yesterday")
        config = world_config(cache=cache.host, public=cache.host, store_url=f"s3://{bucket}/rocm",
                              store_conn=conn_id, git_url=repo.url)
        plan = plan_for(config, repo.commits[1])
        v = plan.variant(VARIANT)
        night = push_night(cache.url, plan, tmp_path)

        with pytest.raises(FatalStoreError) as caught:
            publish_variant_wheels(plan, v, night.refs, quiet)
        assert str(caught.value).startswith(v.wheels_url) and "access denied" in str(caught.value)
        assert "rotated-yesterday" not in str(caught.value)

        set_connection(monkeypatch.setenv, conn_id, url, login=key["AccessKeyId"], password=key["SecretAccessKey"])
        _new_task_process()
        with recovered("wrong S3 credentials", "publish_wheels"):
            publish_variant_wheels(plan, v, night.refs, quiet)
            assert published(plan)
            assert store_lies(plan.store_url, conn_id) == []


def _new_task_process() -> None:
    """Each task try runs in a process of its own, whose store cache (Airflow keeps one filesystem per
    connection id) starts empty: the next try reads the connection again."""
    from airflow.sdk.io import store

    store._STORE_CACHE.clear()


# --------------------------------------------------------------------------- a full store


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Write a file into ``folder`` until the disk is full; return it (delete it to free the space)."""
    filler = folder / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_full_store_fails_naming_the_file_and_changes_no_page(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, public: LocalRegistry
) -> None:
    with small_tmpfs(tmp_path / "store") as disk:
        plan_a = file_plan(disk, cache, public, repo, commit=0)
        night_a = push_night(cache.url, plan_a, tmp_path)
        assert publish_night(plan_a, night_a)["promoted"]  # last night: published and promoted
        plan_b = file_plan(disk, cache, public, repo, commit=1)
        v = plan_b.variant(VARIANT)
        night_b = push_night(cache.url, plan_b, tmp_path)
        filler = fill(disk)
        before = {k: b for k, b in tree(disk).items() if k != "filler"}

        with pytest.raises(TransientStoreError) as caught:
            publish_variant_wheels(plan_b, v, night_b.refs, quiet)
        message = str(caught.value)
        # The first wheel to upload: tonight's base wheels (their own folder, <store>/base/…) or the project's.
        assert message.startswith(plan_b.store_url) and ".whl: OSError: [Errno 28] No space left on device" in message

        after = {k: b for k, b in tree(disk).items() if k != "filler"}
        assert after == before  # no page changed, no partial file left behind
        assert not published(plan_b)
        assert store_lies(plan_b.store_url) == []

        filler.unlink()
        with recovered("full store (ENOSPC)", "publish_wheels"):
            publish_variant_wheels(plan_b, v, night_b.refs, quiet)
            assert published(plan_b)
            assert store_lies(plan_b.store_url) == []
        assert alias_commit(store_root(v.nightly_wheels_url), v.nightly_wheels_url) == plan_a.commit


# --------------------------------------------------------------------------- bytes and pages changed under us


def publish_and_promote(tmp_path: Path, repo: Repo, cache: LocalRegistry, public: LocalRegistry) -> tuple[
        ReleasePlan, Night, dict[str, str]]:
    plan = file_plan(tmp_path / "store", cache, public, repo)
    night = push_night(cache.url, plan, tmp_path)
    assert publish_night(plan, night)["promoted"]
    return plan, night, {"release": night.digests["release"], "base": night.digests["base"]}


def test_a_wheel_corrupted_after_publishing_is_observed_and_republished(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, public: LocalRegistry
) -> None:
    plan, night, _ = publish_and_promote(tmp_path, repo, cache, public)
    v = plan.variant(VARIANT)
    folder = Path(v.wheels_url.removeprefix("file://"))
    wheel = next(folder.glob("tinyllm-*.whl"))
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wheel.write_bytes(bytes(data))

    seen = observe_artifact(plan, v, "wheels_published")
    assert not seen.present and f"{v.wheels_url}{wheel.name}: sha256 " in seen.reason and "!= link's" in seen.reason
    lies = store_lies(plan.store_url)
    assert lies and all(wheel.name in lie for lie in lies)  # the commit's page and the nightly page

    messages: list[str] = []
    with recovered("wheel corrupted in the store", "check_wheels_published → publish_wheels"):
        publish_variant_wheels(plan, v, night.refs, messages.append)
        assert observe_artifact(plan, v, "wheels_published").present
        assert store_lies(plan.store_url) == []
        assert alias_commit(store_root(v.nightly_wheels_url), v.nightly_wheels_url) == plan.commit
    assert any(f"{wheel.name}: there with sha256" in m and "replacing it" in m for m in messages)
    assert any("withdrawn while files of" in m for m in messages)  # nightly came down before the bytes changed


@pytest.mark.parametrize("page", ["commit", "nightly"])
def test_a_deleted_index_page_is_observed_absent_and_rewritten(
    page: str, tmp_path: Path, repo: Repo, cache: LocalRegistry, public: LocalRegistry
) -> None:
    plan, night, digests = publish_and_promote(tmp_path, repo, cache, public)
    v = plan.variant(VARIANT)
    url = v.wheels_url if page == "commit" else v.nightly_wheels_url
    (Path(url.removeprefix("file://")) / "tinyllm" / "index.html").unlink()

    if page == "commit":
        seen = observe_published(store_root(url), url)
        assert not seen.present and seen.reason == f"{url}tinyllm/index.html is missing"
    assert store_lies(plan.store_url) == [f"{url.removeprefix('file://')}index.html lists tinyllm, whose page is "
                                          "missing"]

    with recovered(f"{page} index page deleted", "publish_wheels / promote_nightly"):
        publish_variant_wheels(plan, v, night.refs, quiet)
        promote_variant(plan, v, digests, quiet)
        assert observe_published(store_root(v.wheels_url), v.wheels_url).present
        assert alias_commit(store_root(v.nightly_wheels_url), v.nightly_wheels_url) == plan.commit
        assert store_lies(plan.store_url) == []
