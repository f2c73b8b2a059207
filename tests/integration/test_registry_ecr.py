"""EcrRegistry against a real moto server: its own ``python -m moto.server`` process on 127.0.0.1.

The registry under test gets its client the production way, from ``EcrHook`` and an Airflow
connection (``AIRFLOW_CONN_ECR_MOTO``) whose ``endpoint_url`` is the moto server. Images are pushed
with PutImage of hand-made manifests (moto stores manifests; it has no blob store).

Where moto differs from real ECR, and what these tests do about it:

* **Digests.** Moto computes an image digest as sha256 of the concatenated *layer digests*; ECR
  uses sha256 of the manifest bytes. ``push`` passes ``imageDigest=sha256(manifest)``, which moto
  stores as given, so the digests here are the ones ECR would compute. One test pushes without it
  and shows that EcrRegistry refuses such an answer (fatal), rather than trusting it.
* **GetDownloadUrlForLayer** (the config blob, hence ``labels``) is not implemented by moto: it
  answers HTTP 500. The ``labels`` tests stub that one operation, a stub of the AWS service, through
  botocore's ``before-call`` event, handing out the URL of a real HTTP server on 127.0.0.1 that
  serves the config blob; BatchGetImage and the blob GET are real. One test shows plain moto's 500
  is reported as transient, never as "no labels". Pre-signed S3 URLs are not exercised.
* **Pagination.** Moto's DescribeImages ignores ``maxResults``/``nextToken``: every answer is one
  page. These tests check that every tag comes back and ``maxResults`` is sent; following
  ``nextToken`` over several pages is checked in ``tests/unit/test_registry_ecr.py`` (Stubber).
* **acceptedMediaTypes** is ignored by moto, and BatchGetImage with both tag and digest matches
  either (ECR answers ``ImageTagDoesNotMatchDigest``). EcrRegistry never sends both.
* **Credentials.** Moto accepts any key. The fatal tests switch on moto's IAM enforcement
  (``/moto-api/reset-auth``) so that an unknown key and a denied IAM user get real 403s. Moto sends
  those as XML, so botocore sees the code ``"403"`` rather than ``AccessDeniedException``; the
  status decides. Throttling and 5xx cannot be produced by moto: see the unit tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from typing import Any

import pytest

from rocm_release.adapters.registry.ecr import EcrRegistry
from rocm_release.adapters.registry.ecr_errors import EcrImageNotFoundError
from rocm_release.core.names import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST
from rocm_release.core.registry import FatalRegistryError, ImageRegistry, TransientRegistryError
from tests.support.ecr import BlobServer, put_image, record_calls, stub_download_url
from tests.support.ecr import ecr_image as make_image
from tests.support.ecr import ecr_index as make_index
from tests.support.moto import (
    MOTO_ACCOUNT,
    MOTO_ECR_HOST,
    MOTO_REGION,
    admin_client,
    conn_env_name,
    conn_json,
    moto_api,
    set_connection,
)
from tests.support.net import closed_port
from tests.support.registries import digest_of as sha256

pytestmark = pytest.mark.integration

ACCOUNT, REGION, HOST = MOTO_ACCOUNT, MOTO_REGION, MOTO_ECR_HOST
CONN_ID = "ecr_moto"
REPO = "rocm-nightly/tinyllm"
push = partial(put_image, repo=REPO)


# -- the moto server (``moto_url``: a module's own, tests/conftest.py) ----------------------------


@pytest.fixture
def moto(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A clean moto, and the Airflow connection ``ecr_moto`` pointing at it."""
    moto_api(moto_url, "reset")
    set_connection(monkeypatch.setenv, CONN_ID, moto_url)
    return moto_url


@pytest.fixture
def admin(moto: str) -> Any:
    """A plain boto3 client for setting the scene (pushing images), not the code under test."""
    client = admin_client("ecr", moto)
    client.create_repository(repositoryName=REPO)
    return client


@pytest.fixture
def registry(moto: str) -> EcrRegistry:
    return EcrRegistry(HOST, aws_conn_id=CONN_ID)


# -- lookup ---------------------------------------------------------------------------------------


def test_registry_satisfies_the_protocol(registry: EcrRegistry) -> None:
    assert isinstance(registry, ImageRegistry)
    assert registry.name == HOST


def test_lookup_present_returns_the_pushed_digest_in_one_call(admin: Any, registry: EcrRegistry) -> None:
    raw, _, media_type = make_image("a")
    digest = push(admin, raw, media_type, "abc123-rocm710")
    calls = record_calls(registry)

    found = registry.lookup(REPO, "abc123-rocm710")

    assert found.present and found.digest == digest == sha256(raw)
    assert [name for name, _ in calls] == ["DescribeImages"]
    assert calls[0][1]["registryId"] == ACCOUNT


def test_lookup_by_digest(admin: Any, registry: EcrRegistry) -> None:
    raw, _, media_type = make_image("a")
    digest = push(admin, raw, media_type, "t")
    assert registry.lookup(REPO, digest).digest == digest


def test_lookup_absent_tag(admin: Any, registry: EcrRegistry) -> None:
    raw, _, media_type = make_image("a")
    push(admin, raw, media_type, "other")

    found = registry.lookup(REPO, "abc123-rocm710")

    assert not found.present and found.digest is None
    assert "ImageNotFoundException" in found.reason


def test_lookup_absent_repository(registry: EcrRegistry) -> None:
    found = registry.lookup("no/such-repo", "abc123-rocm710")
    assert not found.present
    assert "RepositoryNotFoundException" in found.reason


def test_injected_plain_boto3_client_needs_no_connection(admin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(conn_env_name(CONN_ID))
    raw, _, media_type = make_image("a")
    digest = push(admin, raw, media_type, "t")
    assert EcrRegistry(HOST, client=admin).lookup(REPO, "t").digest == digest


def test_injected_client_in_another_region_is_refused(admin: Any) -> None:
    with pytest.raises(ValueError, match="us-west-2"):
        EcrRegistry(f"{ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com", client=admin)


# -- manifest -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["oci", "docker", "oci-index", "docker-list"])
def test_manifest_returns_exact_bytes_media_type_and_digest(admin: Any, registry: EcrRegistry, kind: str) -> None:
    raw, _, media_type = make_image("a", docker=kind == "docker")
    if kind.endswith(("index", "list")):
        raw, media_type = make_index({"linux/amd64": raw}, docker=kind == "docker-list")
    digest = push(admin, raw, media_type, "t")
    calls = record_calls(registry)

    by_tag = registry.manifest(REPO, "t")
    by_digest = registry.manifest(REPO, digest)

    assert by_tag.raw == raw and by_tag.media_type == media_type and by_tag.digest == sha256(raw)
    assert by_digest == by_tag
    assert [name for name, _ in calls] == ["BatchGetImage", "BatchGetImage"]
    assert set(calls[0][1]["acceptedMediaTypes"]) == {OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_MANIFEST_LIST}


def test_manifest_absent_raises_lookup_error(admin: Any, registry: EcrRegistry) -> None:
    with pytest.raises(LookupError, match="absent"):
        registry.manifest(REPO, "nope")
    with pytest.raises(EcrImageNotFoundError):
        registry.manifest("no/such-repo", "nope")


def test_manifest_whose_bytes_do_not_hash_to_the_digest_is_fatal(admin: Any, registry: EcrRegistry) -> None:
    """Pushed without imageDigest, moto makes up its own digest: a real answer we must not trust."""
    raw, _, media_type = make_image("a")
    moto_digest = push(admin, raw, media_type, "t", real_digest=False)
    assert moto_digest != sha256(raw)

    with pytest.raises(FatalRegistryError, match="hash"):
        registry.manifest(REPO, "t")


# -- tag ------------------------------------------------------------------------------------------


def test_tag_points_the_new_tag_at_the_same_digest_and_is_idempotent(admin: Any, registry: EcrRegistry) -> None:
    raw, _, media_type = make_image("a")
    digest = push(admin, raw, media_type, "abc123-rocm710")
    put_answers: list[str] = []
    registry.client.meta.events.register(
        "after-call.ecr.PutImage",
        lambda parsed, **_: put_answers.append(parsed.get("Error", {}).get("Code", "ok")),
    )

    registry.tag(REPO, digest, "nightly-rocm710")
    registry.tag(REPO, digest, "nightly-rocm710")

    assert put_answers == ["ok", "ImageAlreadyExistsException"]  # the second one is the idempotent path
    assert registry.lookup(REPO, "nightly-rocm710").digest == digest
    assert registry.lookup(REPO, "abc123-rocm710").digest == digest
    assert registry.manifest(REPO, "nightly-rocm710").raw == raw  # the same bytes, not a re-serialization


def test_tag_moves_an_alias_forward(admin: Any, registry: EcrRegistry) -> None:
    old = push(admin, *make_image("old")[::2], "old-rocm710")
    new = push(admin, *make_image("new")[::2], "new-rocm710")
    registry.tag(REPO, old, "nightly-rocm710")

    registry.tag(REPO, new, "nightly-rocm710")

    assert registry.lookup(REPO, "nightly-rocm710").digest == new
    assert registry.lookup(REPO, "old-rocm710").digest == old


def test_tag_of_an_unknown_digest_is_a_lookup_error(admin: Any, registry: EcrRegistry) -> None:
    with pytest.raises(LookupError):
        registry.tag(REPO, sha256(b"never pushed"), "nightly-rocm710")
    assert not registry.lookup(REPO, "nightly-rocm710").present


# -- list_tags / delete_tags ----------------------------------------------------------------------


def test_list_tags_returns_every_tag_with_its_push_time(admin: Any, moto: str) -> None:
    registry = EcrRegistry(HOST, aws_conn_id=CONN_ID, page_size=7)
    expected: dict[str, str] = {}
    for i in range(30):
        raw, _, media_type = make_image(str(i))
        digest = push(admin, raw, media_type, f"c{i:02d}-rocm710")
        expected[f"c{i:02d}-rocm710"] = digest
        if i % 3 == 0:  # a second tag on the same image
            push(admin, raw, media_type, f"alias{i:02d}")
            expected[f"alias{i:02d}"] = digest
    push(admin, *make_image("untagged")[::2], None)  # an untagged image has no TagInfo
    calls = record_calls(registry)

    tags = list(registry.list_tags(REPO))

    assert {t.tag: t.digest for t in tags} == expected
    assert len(tags) == len(expected)
    assert all(isinstance(t.pushed_at, datetime) for t in tags)
    # moto answers everything in one page (it ignores maxResults); real ECR would take 6 calls here
    assert {name for name, _ in calls} == {"DescribeImages"}
    assert all(params["maxResults"] == 7 for _, params in calls)


def test_list_tags_of_a_missing_repository_is_empty(registry: EcrRegistry) -> None:
    assert list(registry.list_tags("no/such-repo")) == []


def test_delete_tags_sends_at_most_100_per_call(admin: Any, registry: EcrRegistry) -> None:
    tags = [f"c{i:03d}-rocm710" for i in range(250)]
    for tag in tags:
        push(admin, *make_image(tag)[::2], tag)
    keep = push(admin, *make_image("keep")[::2], "keep")
    batches: list[int] = []
    registry.client.meta.events.register(
        "before-call.ecr.BatchDeleteImage",
        lambda params, **_: batches.append(len(json.loads(params["body"])["imageIds"])),
    )

    registry.delete_tags(REPO, tags + tags[:5])  # duplicates are sent once

    assert batches == [100, 100, 50]
    assert [t.tag for t in registry.list_tags(REPO)] == ["keep"]
    assert registry.lookup(REPO, "keep").digest == keep

    registry.delete_tags(REPO, tags)  # all gone already: ImageNotFound counts as deleted
    assert batches == [100, 100, 50, 100, 100, 50]


def test_delete_one_of_two_tags_keeps_the_image(admin: Any, registry: EcrRegistry) -> None:
    raw, _, media_type = make_image("a")
    digest = push(admin, raw, media_type, "abc123-rocm710")
    registry.tag(REPO, digest, "nightly-rocm710")

    registry.delete_tags(REPO, ["abc123-rocm710"])

    assert not registry.lookup(REPO, "abc123-rocm710").present
    assert registry.lookup(REPO, "nightly-rocm710").digest == digest


def test_delete_tags_in_a_missing_repository_is_a_no_op(registry: EcrRegistry) -> None:
    registry.delete_tags("no/such-repo", ["a", "b"])
    registry.delete_tags(REPO, [])


def test_list_and_delete_2000_tags(admin: Any, registry: EcrRegistry, record_property: Any) -> None:
    tags = [f"{i:040x}-rocm710" for i in range(2000)]
    started = time.perf_counter()
    for tag in tags:
        push(admin, *make_image(tag)[::2], tag)
    pushed = time.perf_counter()

    listed = list(registry.list_tags(REPO))
    after_list = time.perf_counter()
    registry.delete_tags(REPO, tags)
    after_delete = time.perf_counter()

    assert sorted(t.tag for t in listed) == tags
    assert list(registry.list_tags(REPO)) == []
    timings = {
        "push_2000_s": round(pushed - started, 2),
        "list_2000_s": round(after_list - pushed, 2),
        "delete_2000_s": round(after_delete - after_list, 2),
    }
    for key, value in timings.items():
        record_property(key, value)
    print(f"\nmoto, 2,000 tags: {timings}")


# -- labels (GetDownloadUrlForLayer is stubbed: moto lacks it) ----------------------------------


@pytest.fixture
def blob_server() -> Iterator[BlobServer]:
    with BlobServer() as server:
        yield server


def test_labels_reads_the_config_blob(admin: Any, registry: EcrRegistry, blob_server: BlobServer) -> None:
    labels = {"org.rocm-nightly.base-key": "0123456789abcdef", "org.rocm-nightly.base-digest": sha256(b"base")}
    raw, blob, media_type = make_image("a", labels)
    push(admin, raw, media_type, "abc123-rocm710-wheels")
    blob_server.blobs[sha256(blob)] = blob
    stub_download_url(registry, blob_server)
    calls = record_calls(registry)

    assert registry.labels(REPO, "abc123-rocm710-wheels") == labels
    assert [name for name, _ in calls] == ["BatchGetImage", "GetDownloadUrlForLayer"]
    assert blob_server.requests == [f"/{sha256(blob)}?X-Amz-Signature=not-a-secret"]


def test_labels_of_an_index_are_those_of_its_platform_image(
    admin: Any, registry: EcrRegistry, blob_server: BlobServer
) -> None:
    amd64, amd64_blob, media_type = make_image("amd64", {"arch": "amd64"})
    arm64, arm64_blob, _ = make_image("arm64", {"arch": "arm64"})
    for raw, blob in ((amd64, amd64_blob), (arm64, arm64_blob)):
        push(admin, raw, media_type, None)
        blob_server.blobs[sha256(blob)] = blob
    index, index_type = make_index({"linux/arm64": arm64, "linux/amd64": amd64})
    push(admin, index, index_type, "t")
    stub_download_url(registry, blob_server)
    calls = record_calls(registry)

    assert registry.labels(REPO, "t") == {"arch": "amd64"}
    assert [name for name, _ in calls] == ["BatchGetImage", "BatchGetImage", "GetDownloadUrlForLayer"]


def test_labels_of_an_image_without_labels_are_empty(
    admin: Any, registry: EcrRegistry, blob_server: BlobServer
) -> None:
    raw, blob, media_type = make_image("a", None, docker=True)
    push(admin, raw, media_type, "t")
    blob_server.blobs[sha256(blob)] = blob
    stub_download_url(registry, blob_server)
    assert registry.labels(REPO, "t") == {}


def test_labels_from_a_blob_that_does_not_match_its_digest_are_fatal(
    admin: Any, registry: EcrRegistry, blob_server: BlobServer
) -> None:
    raw, blob, media_type = make_image("a", {"k": "v"})
    push(admin, raw, media_type, "t")
    blob_server.blobs[sha256(blob)] = blob.replace(b'"v"', b'"w"')
    stub_download_url(registry, blob_server)
    with pytest.raises(FatalRegistryError, match="config blob hashes to"):
        registry.labels(REPO, "t")


def test_labels_when_the_blob_store_is_down_are_transient(
    admin: Any, registry: EcrRegistry, blob_server: BlobServer
) -> None:
    raw, blob, media_type = make_image("a", {"k": "v"})
    push(admin, raw, media_type, "t")
    blob_server.blobs[sha256(blob)] = blob
    blob_server.status = 503
    stub_download_url(registry, blob_server)
    with pytest.raises(TransientRegistryError, match="HTTP 503") as caught:
        registry.labels(REPO, "t")
    assert "X-Amz-Signature" not in str(caught.value)


def test_labels_against_plain_moto_are_an_error_never_empty(admin: Any, registry: EcrRegistry) -> None:
    """Unstubbed, moto answers GetDownloadUrlForLayer with HTTP 500: transient, not "no labels"."""
    raw, _, media_type = make_image("a", {"k": "v"})
    push(admin, raw, media_type, "t")
    with pytest.raises(TransientRegistryError, match="GetDownloadUrlForLayer"):
        registry.labels(REPO, "t")


def test_labels_of_an_absent_image_are_a_lookup_error(admin: Any, registry: EcrRegistry) -> None:
    with pytest.raises(LookupError):
        registry.labels(REPO, "nope")


# -- errors: never "absent" ---------------------------------------------------------------------


def test_unreachable_endpoint_is_transient_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = closed_port()
    monkeypatch.setenv("AIRFLOW_CONN_ECR_CLOSED", conn_json(f"http://127.0.0.1:{closed}"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    registry = EcrRegistry(HOST, aws_conn_id="ecr_closed")
    attempts: list[str] = []
    registry.client.meta.events.register("before-send.ecr", lambda **kw: attempts.append(kw["event_name"]))

    with pytest.raises(TransientRegistryError) as caught:
        registry.lookup(REPO, "abc123-rocm710")

    message = str(caught.value)
    assert HOST in message and REPO in message and "'ecr_closed'" in message
    assert "EndpointConnectionError" in message
    assert len(attempts) == 2  # botocore standard mode, max_attempts=2: one retry, then the sensor's turn
    with pytest.raises(TransientRegistryError):
        list(registry.list_tags(REPO))
    with pytest.raises(TransientRegistryError):
        registry.login_credentials()


@pytest.fixture
def moto_enforcing_iam(moto: str) -> Iterator[dict[str, str]]:
    """Moto checking credentials and IAM policies; yields a key of a user allowed only to log in."""
    moto_api(moto, "reset-auth", b"4")  # the next four calls set the scene, then IAM is enforced
    try:
        iam = admin_client("iam", moto)
        iam.create_user(UserName="login-only")
        key = iam.create_access_key(UserName="login-only")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="login-only", PolicyName="login", PolicyDocument=json.dumps(policy))
        admin_client("ecr", moto).create_repository(repositoryName=REPO)
        yield {"login": key["AccessKeyId"], "password": key["SecretAccessKey"]}
    finally:
        moto_api(moto, "reset-auth", b"inf")


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.lookup(REPO, "abc123-rocm710"),
        lambda r: r.lookup("no/such-repo", "abc123-rocm710"),
        lambda r: r.manifest(REPO, "abc123-rocm710"),
        lambda r: list(r.list_tags(REPO)),
        lambda r: r.delete_tags(REPO, ["abc123-rocm710"]),
        lambda r: r.login_credentials(),
    ],
    ids=["lookup", "lookup-missing-repo", "manifest", "list_tags", "delete_tags", "login_credentials"],
)
def test_unknown_credentials_are_fatal(
    moto_enforcing_iam: dict[str, str], registry: EcrRegistry, call: Callable[[EcrRegistry], object]
) -> None:
    """The connection's key ``testing`` does not exist in moto's IAM: a real 403, never "absent"."""
    with pytest.raises(FatalRegistryError, match=rf"{HOST}.*'{CONN_ID}'.*403"):
        call(registry)


def test_denied_permission_is_fatal(
    moto: str, moto_enforcing_iam: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ECR_LOGIN_ONLY", conn_json(moto, **moto_enforcing_iam))
    registry = EcrRegistry(HOST, aws_conn_id="ecr_login_only")

    assert registry.login_credentials().username == "AWS"  # allowed
    with pytest.raises(FatalRegistryError, match="not authorized to perform: ecr:DescribeImages"):
        registry.lookup(REPO, "abc123-rocm710")


# -- login, repositories --------------------------------------------------------------------------


def test_login_credentials_never_show_the_password(
    registry: EcrRegistry, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level("DEBUG")

    creds = registry.login_credentials()

    assert creds.registry == HOST
    assert creds.username == "AWS"
    assert creds.password == f"{ACCOUNT}-auth-token"  # moto's token; ECR's is a 12-hour secret
    assert creds.password not in repr(creds)
    assert creds.password not in caplog.text
    captured = capsys.readouterr()
    assert creds.password not in captured.out + captured.err


def test_ensure_repository_creates_once(registry: EcrRegistry) -> None:
    assert registry.ensure_repository("rocm-nightly/new") is True
    assert registry.ensure_repository("rocm-nightly/new") is False
    assert not registry.lookup("rocm-nightly/new", "anything").present


def test_client_is_built_lazily_from_the_connection(moto: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(conn_env_name(CONN_ID))
    registry = EcrRegistry(HOST, aws_conn_id=CONN_ID)  # no connection yet: nothing is read
    monkeypatch.setenv(conn_env_name(CONN_ID), conn_json(moto))
    assert registry.client.meta.endpoint_url == moto
    assert registry.client.meta.region_name == REGION
    assert registry.client.meta.config.retries == {"mode": "standard", "total_max_attempts": 2}


def test_the_host_decides_the_region_not_the_connection(admin: Any, moto: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection for another region would ask another registry and hear "absent"."""
    digest = push(admin, *make_image("a")[::2], "t")
    elsewhere = json.loads(conn_json(moto))
    elsewhere["extra"]["region_name"] = "eu-west-1"
    monkeypatch.setenv("AIRFLOW_CONN_ECR_EU", json.dumps(elsewhere))

    registry = EcrRegistry(HOST, aws_conn_id="ecr_eu")

    assert registry.client.meta.region_name == REGION
    assert registry.lookup(REPO, "t").digest == digest
