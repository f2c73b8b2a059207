"""Fault matrix, registries: outages, 503s, lies, corrupted storage and refused credentials.

Every test runs the step function an Airflow task runs (``adapters/steps.py``) against throwaway
``docker-registry`` processes of its own, injects one fault, and checks the three things of issue #11:
(a) no page or alias names anything missing or unverified (``assert_truthful``), (b) the same step
run again after the fault is removed converges (timed by ``recovered``), (c) the error names what
failed. Registry outages during ``docker push``, the image copy and the wheels publish (with the
tasks' retries) are the ``retries`` branch's DAG-level tests, not repeated here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rocm_release.adapters.images import PushedImages
from rocm_release.adapters.steps import (
    observe_artifact,
    promote_variant,
    publish_variant_wheels,
    push_variant_images,
)
from rocm_release.adapters.store import observe_published, store_root
from rocm_release.adapters.wheels_alias import alias_commit
from rocm_release.core.plan import ReleasePlan
from rocm_release.core.registry import FatalRegistryError, TransientRegistryError
from tests.faults.conftest import Repo
from tests.faults.matrix import (
    VARIANT,
    ExpiringTokens,
    Night,
    assert_converged,
    assert_truthful,
    blob_file,
    plan_for,
    publish_night,
    push_night,
    quiet,
    recovered,
    registry_lies,
    set_registry_connection,
    store_lies,
    tag_digest,
    world_config,
)
from tests.support.gates import HttpFaultProxy, tcp_gate
from tests.support.registries import LocalRegistry, raw_push_blob, token_registry

pytestmark = pytest.mark.faults

IMAGES = ("base_image", "wheels_image", "release_image")


def file_store(tmp_path: Path) -> str:
    (tmp_path / "store").mkdir(exist_ok=True)
    return f"file://{tmp_path}/store/rocm"


def test_a_night_without_faults_converges(tmp_path: Path, repo: Repo, cache: LocalRegistry,
                                          public: LocalRegistry) -> None:
    """The harness itself: a night publishes, and the checker finds nothing to complain about."""
    config = world_config(cache=cache.host, public=public.host, store_url=file_store(tmp_path), git_url=repo.url)
    plan = plan_for(config, repo.commits[1])
    night = push_night(cache.url, plan, tmp_path)

    result = publish_night(plan, night)

    assert result["promoted"], result
    assert_converged(plan, night, cache_url=cache.url, public_url=public.url)


def test_cache_registry_down_during_the_sensors_is_transient_never_absent(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, public: LocalRegistry
) -> None:
    config = world_config(cache=cache.host, public=public.host, store_url=file_store(tmp_path), git_url=repo.url)
    plan = plan_for(config, repo.commits[1])
    v = plan.variant(VARIANT)
    night = push_night(cache.url, plan, tmp_path)

    cache.stop()
    for artifact in IMAGES:
        with pytest.raises(TransientRegistryError) as caught:
            observe_artifact(plan, v, artifact)
        assert f"{cache.host}/{plan.cache_repository}" in str(caught.value)
        assert "ConnectError" in str(caught.value)
    assert_truthful(plan, cache_url=None, public_url=public.url)

    cache.start()
    with recovered("cache registry down", "sensors (check_*_image)"):
        seen = {artifact: observe_artifact(plan, v, artifact) for artifact in IMAGES}
        assert {a: o.digest for a, o in seen.items()} == {
            "base_image": night.digests["base"], "wheels_image": night.digests["wheels"],
            "release_image": night.digests["release"]}
        assert seen["base_image"].paired_digest == night.digests["base_wheels"]
        assert_truthful(plan, cache_url=cache.url, public_url=public.url)


def test_a_cache_registry_answering_503_for_a_while_is_waited_out(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, public: LocalRegistry
) -> None:
    with HttpFaultProxy(cache.url, fail_first=4) as proxy:
        config = world_config(cache=f"127.0.0.1:{proxy.port}", public=public.host, store_url=file_store(tmp_path),
                              git_url=repo.url)
        plan = plan_for(config, repo.commits[1])
        v = plan.variant(VARIANT)
        night = push_night(cache.url, plan, tmp_path)

        failures = []
        for _poke in range(4):  # the sensor pokes again after each transient error
            with pytest.raises(TransientRegistryError) as caught:
                observe_artifact(plan, v, "wheels_image")
            failures.append(str(caught.value))
        assert all(f"127.0.0.1:{proxy.port}/{plan.cache_repository}" in f and "HTTP 503" in f for f in failures)
        assert_truthful(plan, cache_url=cache.url, public_url=public.url)

        with recovered("cache registry answers 503 (4 requests)", "sensors (check_wheels_image)"):
            seen = observe_artifact(plan, v, "wheels_image")
            assert seen.present and seen.digest == night.digests["wheels"], seen
            assert_truthful(plan, cache_url=cache.url, public_url=public.url)
        assert proxy.failed == 4


def previous_night(tmp_path: Path, repo: Repo, cache: LocalRegistry, public_host: str, public_url: str) -> tuple[
        ReleasePlan, Night, ReleasePlan, Night, PushedImages]:
    """Night A (the older commit) published and promoted; tonight's B pushed and published, not promoted."""
    config = world_config(cache=cache.host, public=public_host, store_url=file_store(tmp_path), git_url=repo.url)
    plan_a, plan_b = plan_for(config, repo.commits[0]), plan_for(config, repo.commits[1])
    night_a = push_night(cache.url, plan_a, tmp_path)
    assert publish_night(plan_a, night_a)["promoted"]
    night_b = push_night(cache.url, plan_b, tmp_path)
    v = plan_b.variant(VARIANT)
    pushed = push_variant_images(plan_b, v, night_b.refs, quiet)
    publish_variant_wheels(plan_b, v, night_b.refs, quiet)
    return plan_a, night_a, plan_b, night_b, pushed


def test_public_registry_down_during_promote_leaves_every_alias_where_it_was(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, public: LocalRegistry
) -> None:
    plan_a, night_a, plan_b, night_b, pushed = previous_night(tmp_path, repo, cache, public.host, public.url)
    v = plan_b.variant(VARIANT)

    public.stop()
    with pytest.raises(TransientRegistryError) as caught:
        promote_variant(plan_b, v, pushed.digests, quiet)
    assert f"{public.host}/{plan_b.public_repository}" in str(caught.value)
    public.start()

    assert tag_digest(public.url, plan_b.public_repository, v.public_tags.nightly) == night_a.digests["release"]
    assert tag_digest(public.url, plan_b.public_repository, v.public_tags.base_nightly) == night_a.digests["base"]
    assert alias_commit(store_root(v.nightly_wheels_url), v.nightly_wheels_url) == plan_a.commit
    assert_truthful(plan_b, cache_url=cache.url, public_url=public.url)
    with recovered("public registry down", "promote_nightly"):
        assert promote_variant(plan_b, v, pushed.digests, quiet)["promoted"]
        assert_converged(plan_b, night_b, cache_url=cache.url, public_url=public.url)


def test_public_registry_lost_between_the_two_alias_moves_is_finished_by_the_retry(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, public: LocalRegistry
) -> None:
    with tcp_gate(public.port) as gate:
        plan_a, night_a, plan_b, night_b, pushed = previous_night(tmp_path, repo, cache, gate.host, public.url)
        v = plan_b.variant(VARIANT)
        # The registry dies as the second alias (base-nightly) is written: the first has moved.
        trap = gate.trap(f"PUT /v2/{plan_b.public_repository}/manifests/{v.public_tags.base_nightly} ".encode(),
                         "cut")

        with pytest.raises(TransientRegistryError) as caught:
            promote_variant(plan_b, v, pushed.digests, quiet)
        assert trap.sprung.is_set()
        assert f"{gate.host}/{plan_b.public_repository}" in str(caught.value)
        assert f"PUT /v2/{plan_b.public_repository}/manifests/{v.public_tags.base_nightly}" in str(caught.value)

        # Half moved, nothing missing: nightly is tonight's, base-nightly and the index still last night's.
        assert tag_digest(public.url, plan_b.public_repository, v.public_tags.nightly) == night_b.digests["release"]
        assert tag_digest(public.url, plan_b.public_repository, v.public_tags.base_nightly) == night_a.digests["base"]
        assert alias_commit(store_root(v.nightly_wheels_url), v.nightly_wheels_url) == plan_a.commit
        assert_truthful(plan_b, cache_url=cache.url, public_url=public.url)

        gate.open()
        with recovered("public registry lost between the two alias moves", "promote_nightly"):
            assert promote_variant(plan_b, v, pushed.digests, quiet)["promoted"]
            assert_converged(plan_b, night_b, cache_url=cache.url, public_url=public.url)


def test_a_corrupted_layer_in_registry_storage_fails_fatally_naming_the_digest(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, public: LocalRegistry
) -> None:
    """A layer bigger than one read (1 MiB) with a flipped byte near its start: before the fix in
    wheels_image.py, tarfile's "invalid compressed data" escaped unclassified, naming no digest.
    The sensor trusts digests (issue #13: a HEAD finds the blob, its size unchanged), so the image is
    present to it; the publisher, which reads the bytes, fails fatally before anything is published."""
    config = world_config(cache=cache.host, public=public.host, store_url=file_store(tmp_path), git_url=repo.url)
    plan = plan_for(config, repo.commits[1])
    v = plan.variant(VARIANT)
    night = push_night(cache.url, plan, tmp_path, payload=3 << 20)
    stored = blob_file(cache.root / "data", night.wheel_layer)
    data = bytearray(stored.read_bytes())
    data[100] ^= 0xFF
    stored.write_bytes(bytes(data))

    assert observe_artifact(plan, v, "wheels_image").present
    with pytest.raises(FatalRegistryError) as caught:
        publish_variant_wheels(plan, v, night.refs, quiet)
    assert f"{cache.host}/{plan.cache_repository}" in str(caught.value)
    assert f"blob {night.wheel_layer} does not verify" in str(caught.value)
    assert not observe_published(store_root(v.wheels_url), v.wheels_url).present
    assert store_lies(plan.store_url) == []
    assert registry_lies(public.url, plan.public_repository) == []
    assert registry_lies(cache.url, plan.cache_repository) != []  # the checker sees the corruption too

    # A re-push of the same bytes would not heal it: the registry has the blob and keeps it. The
    # operator removes the blob's folder from storage (garbage collection does after the tag is deleted).
    shutil.rmtree(stored.parent)
    with recovered("corrupted layer in registry storage", "check_wheels_image / publish_wheels"):
        raw_push_blob(cache.url, plan.cache_repository, night.wheel_layer_bytes)  # the next build's push
        assert observe_artifact(plan, v, "wheels_image").present
        publish_variant_wheels(plan, v, night.refs, quiet)
        assert observe_published(store_root(v.wheels_url), v.wheels_url).present
        assert_truthful(plan, cache_url=cache.url, public_url=public.url)


def test_a_registry_serving_other_bytes_for_a_digest_fails_fatally(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, public: LocalRegistry
) -> None:
    config_night = world_config(cache=cache.host, public=public.host, store_url=file_store(tmp_path),
                                git_url=repo.url)
    night = push_night(cache.url, plan_for(config_night, repo.commits[1]), tmp_path)
    lie = night.images["base"].raw  # another image's manifest, for the wheels image's digest
    wanted = f"/manifests/{night.digests['wheels']}"

    def serve_another_manifest(method: str, path: str, body: bytes) -> bytes | None:
        return lie if method == "GET" and path.endswith(wanted) else None

    with HttpFaultProxy(cache.url, rewrite=serve_another_manifest) as proxy:
        host = f"127.0.0.1:{proxy.port}"
        config = world_config(cache=host, public=public.host, store_url=file_store(tmp_path), git_url=repo.url)
        plan = plan_for(config, repo.commits[1])
        v = plan.variant(VARIANT)
        refs = {kind: plan.cache_ref(digest) for kind, digest in night.digests.items()}

        for step in (lambda: observe_artifact(plan, v, "wheels_image"),
                     lambda: publish_variant_wheels(plan, v, refs, quiet)):
            with pytest.raises(FatalRegistryError) as caught:
                step()
            message = str(caught.value)
            assert f"{host}/{plan.cache_repository}" in message
            assert f"GET manifest {night.digests['wheels']}" in message and "the bytes hash to" in message
        assert_truthful(plan, cache_url=cache.url, public_url=public.url)

        proxy.rewrite = None
        with recovered("registry serves other bytes for a digest", "check_wheels_image / publish_wheels"):
            assert observe_artifact(plan, v, "wheels_image").present
            publish_variant_wheels(plan, v, refs, quiet)
            assert observe_published(store_root(v.wheels_url), v.wheels_url).present
            assert_truthful(plan, cache_url=cache.url, public_url=public.url)


def test_wrong_public_registry_credentials_fail_push_images_at_once(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "public-token").mkdir()
    with token_registry(tmp_path / "public-token", {"alice": "s3cret"}) as (public, tokens):
        set_registry_connection(monkeypatch.setenv, "public_oci", "alice", "rotated-yesterday")
        config = world_config(cache=cache.host, public=public.host, public_conn="public_oci",
                              store_url=file_store(tmp_path), git_url=repo.url)
        plan = plan_for(config, repo.commits[1])
        v = plan.variant(VARIANT)
        night = push_night(cache.url, plan, tmp_path)
        tokens.requests.clear()

        with pytest.raises(FatalRegistryError) as caught:
            push_variant_images(plan, v, night.refs, quiet)
        message = str(caught.value)
        assert f"{public.host}/{plan.public_repository} (connection 'public_oci')" in message
        assert "refused the credentials (HTTP 401)" in message and "rotated-yesterday" not in message
        assert len(tokens.requests) == 1  # asked once: no retry of a refusal
        login = ("alice", "s3cret")
        assert registry_lies(public.url, plan.public_repository, login) == []
        assert tag_digest(public.url, plan.public_repository, v.public_tags.nightly_commit, login) is None

        set_registry_connection(monkeypatch.setenv, "public_oci", "alice", "s3cret")
        with recovered("wrong registry credentials", "push_images"):
            pushed = push_variant_images(plan, v, night.refs, quiet)
            assert pushed.digests == night.digests
            for tag, kind in ((v.public_tags.nightly_commit, "release"), (v.public_tags.base_nightly_commit, "base")):
                assert tag_digest(public.url, plan.public_repository, tag, login) == night.digests[kind]
            assert_truthful(plan, cache_url=cache.url, public_url=public.url, public_login=login)


def test_expired_registry_tokens_fail_promote_at_once_and_the_next_run_converges(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    login = ("alice", "s3cret")
    (tmp_path / "public-token").mkdir()
    with token_registry(tmp_path / "public-token", dict([login]), ExpiringTokens) as (public, tokens):
        set_registry_connection(monkeypatch.setenv, "public_oci", *login)
        config = world_config(cache=cache.host, public=public.host, public_conn="public_oci",
                              store_url=file_store(tmp_path), git_url=repo.url)
        plan = plan_for(config, repo.commits[1])
        v = plan.variant(VARIANT)
        night = push_night(cache.url, plan, tmp_path)
        pushed = push_variant_images(plan, v, night.refs, quiet)
        publish_variant_wheels(plan, v, night.refs, quiet)

        tokens.expired = True
        with pytest.raises(FatalRegistryError) as caught:
            promote_variant(plan, v, pushed.digests, quiet)
        message = str(caught.value)
        assert f"{public.host}/{plan.public_repository} (connection 'public_oci')" in message
        assert "credentials missing or refused" in message and 'error="invalid_token"' in message
        tokens.expired = False
        assert tag_digest(public.url, plan.public_repository, v.public_tags.nightly, login) is None
        assert alias_commit(store_root(v.nightly_wheels_url), v.nightly_wheels_url) is None
        assert_truthful(plan, cache_url=cache.url, public_url=public.url, public_login=login)

        with recovered("expired registry tokens", "promote_nightly"):
            assert promote_variant(plan, v, pushed.digests, quiet)["promoted"]
            assert_converged(plan, night, cache_url=cache.url, public_url=public.url, public_login=login)
