"""Docker Hub's tag deletion through the Hub API, against a local stand-in for Docker Hub.

The real Docker Hub (hub.docker.com, registry-1.docker.io) is unreachable from here, so "Docker Hub"
is two local servers: a throwaway ``docker-registry`` with deletes disabled (its manifest DELETE
answers 405, as Docker Hub's Registry API does) and ``tests.support.dockerhub.HubStandIn``, a small
HTTP server that implements exactly the documented Hub API endpoints the deleter uses (login, delete a
tag) on that registry's storage. Everything else — listing, lookups, labels — is the real registry.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rocm_release.adapters.registry.clients import registry_for
from rocm_release.adapters.registry.dockerhub import DockerHubRegistry
from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.core.config import Registry
from rocm_release.core.registry import FatalRegistryError, TransientRegistryError
from tests.support.dockerhub import HubStandIn
from tests.support.registries import LocalRegistry, make_image, raw_put_manifest, running_registry
from tests.support.retention_history import OciPusher, build_history, build_store, expected_tags, scene_config

pytestmark = pytest.mark.integration

BOT, TOKEN = "vllmbot", "dckr_pat_not_a_real_token"
CONN_ID = "hub_stand_in"


@pytest.fixture(scope="module")
def hub_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """Docker Hub's Registry API side: it refuses manifest DELETEs (405)."""
    with running_registry(tmp_path_factory.mktemp("hub-registry"), delete_enabled=False) as registry:
        yield registry


@pytest.fixture
def hub(hub_registry: LocalRegistry) -> Iterator[HubStandIn]:
    with HubStandIn(hub_registry, users={BOT: TOKEN, "reader": "r"}, readers=frozenset({"reader"})) as standin:
        yield standin


def client(registry: LocalRegistry, hub: HubStandIn, user: str = BOT, password: str = TOKEN) -> DockerHubRegistry:
    return DockerHubRegistry(registry.host, scheme="http", hub_api=hub.url, username=user, password=password,
                             connection_id=CONN_ID)


def two_tags(registry: LocalRegistry) -> tuple[str, str, str]:
    """A new ``ns/<name>`` repository with one image under tags ``a`` and ``b``."""
    repo = f"ns{uuid.uuid4().hex[:6]}/tinyllm-rocm"
    image = make_image(registry.url, repo, "a")
    raw_put_manifest(registry.url, repo, "b", image.raw, image.media_type)
    return repo, "a", "b"


def test_the_registry_api_delete_is_refused_and_the_hub_api_deletes_only_the_named_tag(
    hub_registry: LocalRegistry, hub: HubStandIn
) -> None:
    repo, a, b = two_tags(hub_registry)
    with pytest.raises(FatalRegistryError, match="HTTP 405"):
        OciRegistry(hub_registry.host, scheme="http").delete_tags(repo, [a, b])  # what main did with Docker Hub

    hub_client = client(hub_registry, hub)
    hub_client.delete_tags(repo, [a, "never-pushed"])

    reader = OciRegistry(hub_registry.host, scheme="http")
    assert not reader.lookup(repo, a).present
    assert reader.lookup(repo, b).present  # the same image, another tag: it stays
    assert hub.requests == [("POST", "/v2/users/login"),
                            ("DELETE", f"/v2/repositories/{repo}/tags/{a}/"),
                            ("DELETE", f"/v2/repositories/{repo}/tags/never-pushed/")]  # 404: already gone


@pytest.mark.parametrize("user, password, status", [(BOT, "wrong", None), ("reader", "r", None),
                                                     (BOT, TOKEN, 400), (BOT, TOKEN, 405)])
def test_refused_credentials_and_unexpected_answers_are_fatal(
    hub_registry: LocalRegistry, hub: HubStandIn, user: str, password: str, status: int | None
) -> None:
    repo, a, _ = two_tags(hub_registry)
    if status is not None:
        hub.fail("DELETE", status)
    with pytest.raises(FatalRegistryError) as raised:
        client(hub_registry, hub, user, password).delete_tags(repo, [a])
    assert hub.url in str(raised.value) and CONN_ID in str(raised.value)
    assert TOKEN not in str(raised.value) and "wrong" not in str(raised.value)
    assert OciRegistry(hub_registry.host, scheme="http").lookup(repo, a).present


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_throttling_and_outages_are_transient_and_a_retry_converges(
    hub_registry: LocalRegistry, hub: HubStandIn, status: int
) -> None:
    repo, a, b = two_tags(hub_registry)
    hub_client = client(hub_registry, hub)
    hub.fail("DELETE", status)  # the login goes through, the first DELETE does not
    with pytest.raises(TransientRegistryError, match=f"HTTP {status}"):
        hub_client.delete_tags(repo, [a])
    hub_client.delete_tags(repo, [a, b])  # the task's retry
    assert not OciRegistry(hub_registry.host, scheme="http").lookup(repo, b).present


def test_an_expired_token_logs_in_once_more_but_never_twice(hub_registry: LocalRegistry, hub: HubStandIn) -> None:
    repo, a, b = two_tags(hub_registry)
    hub_client = client(hub_registry, hub)
    hub_client.delete_tags(repo, [a])
    hub.expire_tokens()

    hub_client.delete_tags(repo, [b])
    assert [r for r in hub.requests if r[0] == "POST"] == [("POST", "/v2/users/login")] * 2

    repo2, c, _ = two_tags(hub_registry)
    hub.fail("DELETE", 401, 401)  # the DELETE and the DELETE after a fresh login are both refused
    with pytest.raises(FatalRegistryError, match="HTTP 401"):
        hub_client.delete_tags(repo2, [c])


def test_an_unreachable_hub_api_is_transient(hub_registry: LocalRegistry, hub: HubStandIn) -> None:
    from tests.support.net import closed_port

    repo, a, _ = two_tags(hub_registry)
    down = DockerHubRegistry(hub_registry.host, scheme="http", hub_api=f"http://127.0.0.1:{closed_port()}",
                             username=BOT, password=TOKEN)
    with pytest.raises(TransientRegistryError, match="ConnectError"):
        down.delete_tags(repo, [a])


def test_retention_with_a_docker_hub_public_registry_deletes_through_the_hub_api(
    services: dict[str, Any], hub_registry: LocalRegistry, hub: HubStandIn, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole retention (plan, re-check, apply) with the public registry configured as Docker Hub:
    the clients come from the config (``kind: dockerhub``, ``hub_api``, credentials from the connection)."""
    from airflow.sdk import ObjectStoragePath

    from tests.support.retention_history import run_retention

    run = uuid.uuid4().hex[:8]
    hosts = {"cache": "127.0.0.1:5101", "public": hub_registry.host}
    repos = {"cache": f"retention-{run}/tinyllm", "public": f"retention{run}/tinyllm-rocm"}
    h = build_history(OciPusher({r: f"http://{host}" for r, host in hosts.items()}, repos), n=12, keep=3,
                      public_recent=6, boundary=lambda: None)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}",
                       json.dumps({"conn_type": "generic", "login": BOT, "password": TOKEN}))
    config = scene_config(
        Registry(kind="oci", scheme="http", host=hosts["cache"], repository=repos["cache"]),
        Registry(kind="dockerhub", scheme="http", host=hosts["public"], repository=repos["public"],
                 hub_api=hub.url, connection_id=CONN_ID),
        f"file://{tmp_path}/store")
    (tmp_path / "store").mkdir()
    store = ObjectStoragePath(config.wheel_store.url)
    build_store(store, config.wheel_store.url, h, tmp_path)

    done = run_retention(config, registry_for(config.cache_registry), registry_for(config.public_registry), store,
                         keep=3)

    assert done.applied.skipped == ()
    left = {role: set(OciRegistry(hosts[role], scheme="http").tag_names(repos[role])) for role in hosts}
    assert left["cache"] == expected_tags(h, "cache", by_digest=True)
    # the Hub deletes single tags: an old base-nightly-<commit> tag goes although base-nightly-<variant>
    # (a kept alias) shares its image
    assert left["public"] == expected_tags(h, "public", by_digest=False)
    deletes = [path for method, path in hub.requests if method == "DELETE"]
    assert len(deletes) == len(h.tags("public") - left["public"]) > 0
