"""OciRegistry and copy_image against a real Debian ``docker-registry`` (distribution 2.8).

Each registry here is this module's own: a fresh ``docker-registry serve`` on a free
127.0.0.1 port, storage and access log in tmp_path, stopped on teardown. It does not
touch the project's shared services (5101/5102). Test images are built by pushing
random layer bytes and a config JSON straight over HTTP, so no docker daemon is needed.

What the real registry cannot show is tested in tests/unit/test_registry_oci.py
against httpx.MockTransport: distribution 2.8 ignores ``?n=`` on tag lists (no
pagination to follow), and malformed answers (bad digests, bad JSON) it never gives.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import tarfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from rocm_release.adapters.registry.image_copy import copy_image
from rocm_release.adapters.registry.oci import OciRegistry, TagDeletionRefused
from rocm_release.adapters.registry.oci_session import ReferenceNotFound
from rocm_release.core.names import OCI_INDEX, OCI_MANIFEST
from rocm_release.core.registry import FatalRegistryError, ImageRegistry, TransientRegistryError
from tests.support.registries import (
    REGISTRY_BIN,
    LocalRegistry,
    RequestLog,
    TokenServer,
    digest_of,
    make_image,
    make_index,
    raw_push_blob,
    raw_put_manifest,
    running_registry,
    unique_repo,
)
from tests.support.registries import token_registry as running_token_registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not REGISTRY_BIN.exists(), reason="needs Debian docker-registry (/usr/bin/docker-registry)"),
]


# --------------------------------------------------------------------------------------------
# Registries of this module (LocalRegistry and the image helpers live in tests/support/registries.py)


@pytest.fixture(scope="module")
def cache_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with running_registry(tmp_path_factory.mktemp("cache")) as reg:
        yield reg


@pytest.fixture(scope="module")
def public_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with running_registry(tmp_path_factory.mktemp("public")) as reg:
        yield reg


@pytest.fixture
def cache(cache_registry: LocalRegistry) -> Iterator[OciRegistry]:
    with OciRegistry(cache_registry.host, scheme="http", connection_id="test_cache") as reg:
        yield reg


@pytest.fixture
def public(public_registry: LocalRegistry) -> Iterator[OciRegistry]:
    with OciRegistry(public_registry.host, scheme="http", connection_id="test_public") as reg:
        yield reg


# --------------------------------------------------------------------------------------------
# present / absent / digest, labels


def test_oci_registry_implements_the_image_registry_protocol(cache: OciRegistry) -> None:
    assert isinstance(cache, ImageRegistry)


def test_lookup_of_a_pushed_tag_is_present_with_the_manifest_digest(
    cache_registry: LocalRegistry, cache: OciRegistry
) -> None:
    repo = unique_repo()
    img = make_image(cache_registry.url, repo, "abc123-rocm710")
    found = cache.lookup(repo, "abc123-rocm710")
    assert found.present and found.digest == img.digest
    assert cache.lookup(repo, img.digest).digest == img.digest


def test_lookup_of_a_missing_tag_or_repository_is_absent_with_a_reason(
    cache_registry: LocalRegistry, cache: OciRegistry
) -> None:
    repo = unique_repo()
    make_image(cache_registry.url, repo, "one")
    missing_tag = cache.lookup(repo, "two")
    assert not missing_tag.present and "HTTP 404" in missing_tag.reason  # HEAD answers carry no error body
    missing_repo = cache.lookup(unique_repo("never/pushed"), "one")
    assert not missing_repo.present and missing_repo.digest is None


def test_lookup_costs_one_request_and_labels_two(cache_registry: LocalRegistry, cache: OciRegistry) -> None:
    repo = unique_repo()
    make_image(cache_registry.url, repo, "t", labels={"a": "b"})
    log = RequestLog(cache_registry)
    cache.lookup(repo, "t")
    cache.labels(repo, "t")
    assert [(r.method, r.path.split("/")[-2]) for r in log.close()] == [
        ("HEAD", "manifests"), ("GET", "manifests"), ("GET", "blobs")]


def test_labels_come_from_the_image_config(cache_registry: LocalRegistry, cache: OciRegistry) -> None:
    repo = unique_repo()
    labels = {"org.rocm.base-key": "0123456789abcdef", "org.rocm.base-digest": "sha256:" + "1" * 64}
    make_image(cache_registry.url, repo, "labelled", labels=labels, docker=True)
    make_image(cache_registry.url, repo, "bare", labels=None)
    assert cache.labels(repo, "labelled") == labels
    assert cache.labels(repo, "bare") == {}
    with pytest.raises(ReferenceNotFound):
        cache.labels(repo, "missing")


def test_labels_of_an_index_come_from_its_linux_amd64_entry(
    cache_registry: LocalRegistry, cache: OciRegistry
) -> None:
    repo = unique_repo()
    arm = make_image(cache_registry.url, repo, labels={"arch": "arm64"}, arch="arm64")
    amd = make_image(cache_registry.url, repo, labels={"arch": "amd64"})
    digest, _ = make_index(cache_registry.url, repo, "multi", [(arm, "linux/arm64"), (amd, "linux/amd64")])
    assert cache.lookup(repo, "multi").digest == digest
    assert cache.manifest(repo, "multi").media_type == OCI_INDEX
    assert cache.labels(repo, "multi") == {"arch": "amd64"}


# --------------------------------------------------------------------------------------------
# retag


def test_retag_is_one_manifest_put_and_moves_no_layer_bytes(
    cache_registry: LocalRegistry, cache: OciRegistry
) -> None:
    repo = unique_repo()
    img = make_image(cache_registry.url, repo, "abc123-rocm710", layers=[os.urandom(200_000)])
    files_before = cache_registry.blob_files()
    log = RequestLog(cache_registry)
    cache.tag(repo, img.digest, "nightly-rocm710")
    requests = log.close()
    assert [(r.method, r.path) for r in requests] == [
        ("GET", f"/v2/{repo}/manifests/{img.digest}"),
        ("PUT", f"/v2/{repo}/manifests/nightly-rocm710"),
    ]
    assert not any("/blobs/" in r.path for r in requests)
    assert cache_registry.blob_files() == files_before
    assert cache.lookup(repo, "nightly-rocm710").digest == img.digest


def test_retag_of_an_unknown_digest_raises_lookup_error(cache_registry: LocalRegistry, cache: OciRegistry) -> None:
    repo = unique_repo()
    make_image(cache_registry.url, repo, "t")
    with pytest.raises(LookupError):
        cache.tag(repo, "sha256:" + "0" * 64, "nope")


# --------------------------------------------------------------------------------------------
# copy


def test_copy_to_another_registry_moves_each_blob_once_then_nothing(
    cache_registry: LocalRegistry, public_registry: LocalRegistry, cache: OciRegistry, public: OciRegistry
) -> None:
    src_repo, dst_repo = unique_repo("cache/vllm"), unique_repo("public/vllm")
    img = make_image(cache_registry.url, src_repo, "abc123-rocm710",
                     layers=[os.urandom(3 << 20), os.urandom(100_000), os.urandom(10)])
    config_size = json.loads(img.raw)["config"]["size"]
    src_log, dst_log = RequestLog(cache_registry), RequestLog(public_registry)

    first = copy_image(cache, src_repo, "abc123-rocm710", public, dst_repo, ["nightly-rocm710", "nightly-abc123"])

    assert first.digest == img.digest
    assert (first.blobs_copied, first.blobs_skipped, first.blobs_mounted) == (4, 0, 0)
    assert first.bytes_copied == sum(n for _, n in img.layers) + config_size
    src_requests, dst_requests = src_log.close(), dst_log.close()
    blob_gets = sorted(r.path.rsplit("/", 1)[1] for r in src_requests if r.method == "GET" and "/blobs/" in r.path)
    assert blob_gets == sorted(img.blob_digests)  # each blob read once from the source
    uploads = [r for r in dst_requests if r.method == "PUT" and "/blobs/uploads/" in r.path]
    assert sorted(r.uri.split("digest=")[1] for r in uploads) == sorted(img.blob_digests)
    # Manifests last: every blob upload finished before the first manifest PUT.
    methods_paths = [(r.method, r.path) for r in dst_requests]
    first_manifest_put = next(i for i, (m, p) in enumerate(methods_paths) if m == "PUT" and "/manifests/" in p)
    assert all(i < first_manifest_put for i, (m, p) in enumerate(methods_paths) if "/blobs/uploads/" in p)
    assert [p for m, p in methods_paths if m == "PUT" and "/manifests/" in p] == [
        f"/v2/{dst_repo}/manifests/nightly-rocm710", f"/v2/{dst_repo}/manifests/nightly-abc123"]
    assert public.lookup(dst_repo, "nightly-abc123").digest == img.digest

    dst_log = RequestLog(public_registry)
    second = copy_image(cache, src_repo, "abc123-rocm710", public, dst_repo, ["nightly-rocm710"])
    assert second.digest == img.digest
    assert (second.blobs_copied, second.bytes_copied, second.blobs_skipped) == (0, 0, 4)
    assert not any("/blobs/" in r.path for r in dst_log.close())


def test_copy_moves_only_the_layers_the_target_lacks(
    cache_registry: LocalRegistry, public_registry: LocalRegistry, cache: OciRegistry, public: OciRegistry
) -> None:
    src_repo, dst_repo = unique_repo(), unique_repo()
    shared, fresh = os.urandom(400_000), os.urandom(50_000)
    raw_push_blob(public_registry.url, dst_repo, shared)  # e.g. from yesterday's image
    img = make_image(cache_registry.url, src_repo, "t", layers=[shared, fresh])
    result = copy_image(cache, src_repo, "t", public, dst_repo, ["t"])
    assert result.blobs_skipped == 1
    assert result.blobs_copied == 2  # the fresh layer and the config
    assert result.bytes_copied == len(fresh) + len(cache.read_blob(src_repo, img.config_digest))
    assert public.labels(dst_repo, "t") == {}


def test_copy_of_an_index_pushes_children_before_the_index(
    cache_registry: LocalRegistry, public_registry: LocalRegistry, cache: OciRegistry, public: OciRegistry
) -> None:
    src_repo, dst_repo = unique_repo(), unique_repo()
    common = os.urandom(20_000)
    amd = make_image(cache_registry.url, src_repo, labels={"arch": "amd64"}, layers=[common, os.urandom(100)])
    arm = make_image(cache_registry.url, src_repo, labels={"arch": "arm64"}, layers=[common, os.urandom(100)],
                     arch="arm64")
    digest, _ = make_index(cache_registry.url, src_repo, "multi", [(amd, "linux/amd64"), (arm, "linux/arm64")])
    dst_log = RequestLog(public_registry)
    result = copy_image(cache, src_repo, "multi", public, dst_repo, ["multi"])
    assert result.digest == digest
    assert result.blobs_copied == 5  # the shared layer once, two own layers, two configs
    puts = [r.path for r in dst_log.close() if r.method == "PUT" and "/manifests/" in r.path]
    assert sorted(puts[:2]) == sorted([f"/v2/{dst_repo}/manifests/{amd.digest}",
                                       f"/v2/{dst_repo}/manifests/{arm.digest}"])
    assert puts[2:] == [f"/v2/{dst_repo}/manifests/multi"]
    assert public.labels(dst_repo, "multi") == {"arch": "amd64"}
    again = copy_image(cache, src_repo, "multi", public, dst_repo, ["multi2"])
    assert (again.bytes_copied, again.manifests_pushed) == (0, 1)


def test_copy_within_one_registry_mounts_blobs_instead_of_moving_bytes(
    cache_registry: LocalRegistry, cache: OciRegistry
) -> None:
    src_repo, dst_repo = unique_repo(), unique_repo()
    img = make_image(cache_registry.url, src_repo, "t", layers=[os.urandom(1 << 20)])
    log = RequestLog(cache_registry)
    result = copy_image(cache, src_repo, "t", cache, dst_repo, ["t"])
    assert result.digest == img.digest
    assert (result.blobs_mounted, result.blobs_copied, result.bytes_copied) == (2, 0, 0)
    requests = log.close()
    assert not any(r.method in ("GET", "PUT", "PATCH") and "/blobs/" in r.path for r in requests)
    assert sum(1 for r in requests if r.method == "POST" and "mount=" in r.uri and r.status == 201) == 2


def test_copy_streams_layers_without_holding_them_in_memory(
    cache_registry: LocalRegistry, public_registry: LocalRegistry, cache: OciRegistry, public: OciRegistry
) -> None:
    src_repo, dst_repo = unique_repo(), unique_repo()
    layer_size = 48 << 20
    make_image(cache_registry.url, src_repo, "big", layers=[os.urandom(layer_size)])
    tracemalloc.start()
    try:
        result = copy_image(cache, src_repo, "big", public, dst_repo, ["big"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.bytes_copied > layer_size
    assert peak < 8 << 20, f"copy peaked at {peak} bytes of Python allocations for a {layer_size}-byte layer"


def test_copy_of_a_corrupted_source_blob_is_fatal_and_leaves_no_tag(
    cache_registry: LocalRegistry, public_registry: LocalRegistry, cache: OciRegistry, public: OciRegistry
) -> None:
    src_repo, dst_repo = unique_repo(), unique_repo()
    img = make_image(cache_registry.url, src_repo, "t", layers=[os.urandom(100_000)])
    layer_digest = img.layers[0][0]
    hex_digest = layer_digest.split(":")[1]
    stored = cache_registry.root / "data/docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
    stored.write_bytes(os.urandom(100_000))  # bit rot in the cache's storage, same length
    with pytest.raises(FatalRegistryError, match="does not verify|DIGEST_INVALID"):
        copy_image(cache, src_repo, "t", public, dst_repo, ["t"])
    assert not public.lookup(dst_repo, "t").present
    assert not public.has_blob(dst_repo, layer_digest)


def test_copy_of_a_missing_reference_raises_lookup_error(
    cache: OciRegistry, public: OciRegistry
) -> None:
    with pytest.raises(LookupError):
        copy_image(cache, unique_repo(), "nope", public, unique_repo(), ["nope"])


# --------------------------------------------------------------------------------------------
# blobs


def test_blob_streaming_verifies_and_chunked_upload_round_trips(
    cache_registry: LocalRegistry, cache: OciRegistry
) -> None:
    repo = unique_repo()
    data = os.urandom((5 << 20) + 123)
    digest = digest_of(data)
    assert not cache.has_blob(repo, digest)
    sent = cache.push_blob(repo, digest, iter([data[:1000], data[1000:]]), size=len(data), chunk_size=1 << 20)
    assert sent == len(data)
    assert cache.has_blob(repo, digest)
    with cache.open_blob(repo, digest, size=len(data)) as reader:
        got = b"".join(reader.iter_chunks())
        assert reader.verified
    assert got == data
    with pytest.raises(ReferenceNotFound):
        cache.read_blob(repo, "sha256:" + "0" * 64)


def test_open_blob_is_a_stream_tarfile_can_read_layer_by_layer(
    cache_registry: LocalRegistry, cache: OciRegistry
) -> None:
    repo = unique_repo()
    wheel = os.urandom(300_000)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("dist/demo-0.1-py3-none-any.whl")
        info.size = len(wheel)
        tar.addfile(info, io.BytesIO(wheel))
    layer = buffer.getvalue()
    digest = raw_push_blob(cache_registry.url, repo, layer)
    with cache.open_blob(repo, digest, size=len(layer)) as blob, tarfile.open(fileobj=blob, mode="r|*") as tar:
        member = next(iter(tar))
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read() == wheel
        blob.read()  # drain what tarfile left (padding) so the digest is checked
        assert blob.verified


def test_push_blob_with_a_wrong_digest_is_fatal_and_stores_nothing(
    cache_registry: LocalRegistry, cache: OciRegistry
) -> None:
    repo = unique_repo()
    wrong = "sha256:" + "a" * 64
    with pytest.raises(FatalRegistryError, match="DIGEST_INVALID"):
        cache.push_blob(repo, wrong, b"some bytes")
    assert not cache.has_blob(repo, wrong)


# --------------------------------------------------------------------------------------------
# tags: list (pages), delete


def test_list_tags_returns_every_tag_with_digest_and_created_time(
    cache_registry: LocalRegistry
) -> None:
    repo = unique_repo()
    a = make_image(cache_registry.url, repo, "t1", created="2026-11-01T02:03:04.123456789Z")
    b = make_image(cache_registry.url, repo, "t2", created="2026-11-02T00:00:00Z")
    for tag in ("t3", "t4", "t5"):
        raw_put_manifest(cache_registry.url, repo, tag, b.raw, b.media_type)
    with OciRegistry(cache_registry.host, scheme="http", page_size=2) as reg:
        log = RequestLog(cache_registry)
        tags = {t.tag: t for t in reg.list_tags(repo)}
        lists = [r for r in log.close() if r.path.endswith("/tags/list")]
        timed = {t.tag: t for t in reg.list_tags(repo, with_push_times=True)}
        assert list(reg.list_tags(unique_repo("no/such"))) == []
    assert set(tags) == {"t1", "t2", "t3", "t4", "t5"}
    assert tags["t1"].digest == a.digest and tags["t5"].digest == b.digest
    assert all(t.pushed_at is None for t in tags.values())
    # distribution 2.8 ignores n= and answers one page; pagination is covered by the unit tests.
    assert [r.uri.split("?")[1] for r in lists] == ["n=2"]
    assert timed["t1"].pushed_at == dt.datetime(2026, 11, 1, 2, 3, 4, 123456, tzinfo=dt.UTC)
    assert timed["t4"].pushed_at == dt.datetime(2026, 11, 2, tzinfo=dt.UTC)


def test_delete_tags_removes_them_and_leaves_the_rest(cache_registry: LocalRegistry, cache: OciRegistry) -> None:
    repo = unique_repo()
    old = make_image(cache_registry.url, repo, "old-rocm710")
    raw_put_manifest(cache_registry.url, repo, "old-alias", old.raw, old.media_type)
    keep = make_image(cache_registry.url, repo, "new-rocm710")
    cache.delete_tags(repo, ["old-rocm710", "old-alias", "already-gone"])
    assert not cache.lookup(repo, "old-rocm710").present
    assert not cache.lookup(repo, "old-alias").present
    assert not cache.lookup(repo, old.digest).present
    assert cache.lookup(repo, "new-rocm710").digest == keep.digest
    assert [t.tag for t in cache.list_tags(repo)] == ["new-rocm710"]


def test_delete_refuses_a_digest_that_a_kept_tag_points_to(
    cache_registry: LocalRegistry, cache: OciRegistry
) -> None:
    repo = unique_repo()
    img = make_image(cache_registry.url, repo, "abc123-rocm710")
    raw_put_manifest(cache_registry.url, repo, "nightly-rocm710", img.raw, img.media_type)
    with pytest.raises(TagDeletionRefused, match="'nightly-rocm710' also points to") as err:
        cache.delete_tags(repo, ["abc123-rocm710"])
    assert err.value.connection_id == "test_cache"
    assert cache.lookup(repo, "abc123-rocm710").present  # nothing deleted


def test_delete_refuses_an_image_that_a_kept_index_lists(
    cache_registry: LocalRegistry, cache: OciRegistry
) -> None:
    repo = unique_repo()
    img = make_image(cache_registry.url, repo, "single")
    make_index(cache_registry.url, repo, "multi", [(img, "linux/amd64")])
    with pytest.raises(TagDeletionRefused, match="'multi' is an index that lists"):
        cache.delete_tags(repo, ["single"])
    cache.delete_tags(repo, ["single", "multi"])
    assert list(cache.list_tags(repo)) == []


# --------------------------------------------------------------------------------------------
# outages


def test_stopped_registry_is_transient_and_a_restarted_one_answers_again(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path)
    registry.start()
    try:
        repo = unique_repo()
        img = make_image(registry.url, repo, "t")
        with OciRegistry(registry.host, scheme="http", connection_id="flaky", timeout=5) as reg:
            assert reg.lookup(repo, "t").digest == img.digest
            registry.stop()
            with pytest.raises(TransientRegistryError) as err:
                reg.lookup(repo, "t")
            assert err.value.connection_id == "flaky" and err.value.repository == repo
            assert registry.host in str(err.value)
            with pytest.raises(TransientRegistryError):
                reg.labels(repo, "t")
            registry.start()
            assert reg.lookup(repo, "t").digest == img.digest
    finally:
        registry.stop()


# --------------------------------------------------------------------------------------------
# bearer tokens, with a real registry configured for token auth (TokenServer: tests/support/registries.py)


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRegistry, TokenServer]]:
    with running_token_registry(tmp_path_factory.mktemp("token"), {"alice": "s3cret", "reader": "r3ad"}) as both:
        yield both


def test_bearer_token_flow_fetches_a_token_per_scope_and_caches_it(
    token_registry: tuple[LocalRegistry, TokenServer]
) -> None:
    registry, tokens = token_registry
    repo = unique_repo()
    with OciRegistry(registry.host, scheme="http", username="alice", password="s3cret",
                     connection_id="hub") as reg:
        layer, config = os.urandom(1000), json.dumps({"config": {"Labels": {"k": "v"}}}).encode()
        reg.push_blob(repo, digest_of(layer), layer)
        reg.push_blob(repo, digest_of(config), config)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": digest_of(config), "size": len(config)},
                               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                           "digest": digest_of(layer), "size": len(layer)}]}).encode()
        digest = reg.put_manifest(repo, "t", manifest, OCI_MANIFEST)
        tokens.requests.clear()
        log = RequestLog(registry)
        assert reg.lookup(repo, "t").digest == digest
        assert reg.lookup(repo, "t").digest == digest
        assert reg.labels(repo, "t") == {"k": "v"}
        requests = log.close()
        assert tokens.requests == [("alice", [f"repository:{repo}:pull"])]  # one token for the pull scope
        assert all(r.status == 200 for r in requests)  # the token was attached up front: no 401 round trip
        assert not reg.lookup(repo, "absent").present


def test_wrong_password_at_the_token_server_is_fatal(token_registry: tuple[LocalRegistry, TokenServer]) -> None:
    registry, _ = token_registry
    with OciRegistry(registry.host, scheme="http", username="alice", password="wrong", connection_id="hub") as reg:
        with pytest.raises(FatalRegistryError, match="refused the credentials") as err:
            reg.lookup(unique_repo(), "t")
    assert err.value.connection_id == "hub"


def test_a_401_after_the_token_flow_is_fatal_after_one_retry(
    token_registry: tuple[LocalRegistry, TokenServer]
) -> None:
    registry, tokens = token_registry
    repo = unique_repo()
    with OciRegistry(registry.host, scheme="http") as anonymous:  # token with no access
        tokens.requests.clear()
        log = RequestLog(registry)
        with pytest.raises(FatalRegistryError, match="HTTP 401") as err:
            anonymous.lookup(repo, "t")
        requests = [r for r in log.close() if repo in r.path]
    assert "absent" not in str(err.value)
    assert [(r.method, r.status) for r in requests] == [("HEAD", 401), ("HEAD", 401)]
    assert len(tokens.requests) == 1


def test_a_pull_only_token_cannot_push_and_that_is_fatal(token_registry: tuple[LocalRegistry, TokenServer]) -> None:
    registry, _ = token_registry
    with OciRegistry(registry.host, scheme="http", username="reader", password="r3ad") as reg:
        assert not reg.lookup(unique_repo(), "t").present
        with pytest.raises(FatalRegistryError, match="401"):
            reg.push_blob(unique_repo(), digest_of(b"x"), b"x")
