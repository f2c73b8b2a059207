"""Docker Hub in the config: which client a registry gets, and which Hub settings are refused — no services.

The client's requests are tested against a local stand-in for the Hub API in
tests/integration/test_registry_dockerhub.py.
"""

from __future__ import annotations

import json

import pytest
import yaml

from rocm_release.adapters.config_file import load_config
from rocm_release.adapters.registry.clients import registry_for
from rocm_release.core.config import ConfigError, Registry, parse_config
from tests.support.services import REPO

VLLM = REPO / "include" / "config" / "vllm.yaml"


def test_the_shipped_vllm_public_registry_deletes_tags_through_the_hub_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """Docker Hub answers the Registry API's manifest DELETE with 405: the vLLM config's public registry
    (kind oci, host registry-1.docker.io) must get the Hub API deleter, which deletes single tags."""
    config = load_config(VLLM)
    monkeypatch.setenv("AIRFLOW_CONN_DOCKERHUB",
                       json.dumps({"conn_type": "generic", "login": "vllmbot", "password": "not-a-token"}))

    client = registry_for(config.public_registry)

    assert client.deletes_by_digest is False
    assert getattr(client, "hub_api", None) == "https://hub.docker.com"
    assert client.name == "registry-1.docker.io"


@pytest.mark.parametrize("host", ["docker.io", "index.docker.io", "registry-1.docker.io"])
def test_every_docker_hub_host_is_docker_hub(host: str) -> None:
    registry = Registry(kind="oci", host=host, repository="vllm/vllm-openai-rocm")
    assert registry.is_docker_hub
    assert registry_for(registry).name == "registry-1.docker.io"


def test_a_stand_in_is_docker_hub_by_kind_and_names_its_hub_api() -> None:
    registry = Registry(kind="dockerhub", host="127.0.0.1:5000", scheme="http", repository="ns/repo",
                        hub_api="http://127.0.0.1:5001")
    client = registry_for(registry)
    assert (client.name, client.deletes_by_digest, getattr(client, "hub_api", None)) == (
        "127.0.0.1:5000", False, "http://127.0.0.1:5001")
    assert registry_for(Registry(kind="oci", host="127.0.0.1:5000", repository="ns/repo")).deletes_by_digest


@pytest.mark.parametrize("entry, message", [
    ({"kind": "oci", "host": "registry.example", "repository": "a/b", "hub_api": "https://hub.docker.com"},
     "hub_api is for Docker Hub only"),
    ({"kind": "ecr", "host": "docker.io", "repository": "a/b"}, "is Docker Hub, not ECR"),
    ({"kind": "dockerhub", "host": "registry-1.docker.io", "repository": "a/b/c"}, "'<namespace>/<name>'"),
    ({"kind": "dockerhub", "host": "registry-1.docker.io", "repository": "a/b", "hub_api": "ftp://x"},
     "hub_api"),
])
def test_bad_docker_hub_settings_fail_when_the_config_is_read(entry: dict[str, str], message: str) -> None:
    document = yaml.safe_load(VLLM.read_text())
    document["public_registry"] = entry
    with pytest.raises(ConfigError, match=message):
        parse_config(json.dumps(document), "test.yaml")
