"""Registry clients from config entries and image references (credentials from Airflow connections)."""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING

from rocm_release.core.config import DOCKER_HUB_API, Registry
from rocm_release.core.registry import ImageRegistry

if TYPE_CHECKING:
    from rocm_release.adapters.registry.oci import OciRegistry

DOCKER_HUB = "registry-1.docker.io"
_REF_RE = re.compile(
    r"^(?:(?P<host>[A-Za-z0-9.-]+(?::[0-9]+)?|localhost(?::[0-9]+)?)/)?(?P<repo>[a-z0-9._/-]+)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


def registry_for(reg: Registry) -> ImageRegistry:
    """The client for a configured registry; an OCI registry's credentials come from its connection.

    Docker Hub (``kind: dockerhub``, or a Docker Hub host) gets :class:`DockerHubRegistry`: the Registry
    API for everything, the Hub API (``hub_api``) for deleting tags, which the Registry API refuses there.
    """
    if reg.kind == "ecr":
        from rocm_release.adapters.registry.ecr import EcrRegistry

        return EcrRegistry.from_config(reg)
    username, password = _credentials(reg)
    if reg.is_docker_hub:
        from rocm_release.adapters.registry.dockerhub import DockerHubRegistry, registry_api_host

        return DockerHubRegistry(registry_api_host(reg.host), hub_api=reg.hub_api or DOCKER_HUB_API,
                                 scheme=reg.scheme, username=username, password=password,
                                 connection_id=reg.connection_id)
    from rocm_release.adapters.registry.oci import OciRegistry

    return OciRegistry(reg.host, scheme=reg.scheme, username=username, password=password,
                       connection_id=reg.connection_id)


def _credentials(reg: Registry) -> tuple[str | None, str | None]:
    """(login, password) of the registry's connection; (None, None) without one (anonymous)."""
    if not reg.connection_id:
        return None, None
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(reg.connection_id)
    if not conn.login:
        return None, None
    return conn.login, conn.password or ""


def split_reference(ref: str) -> tuple[str, str, str | None, str | None]:
    """``[host/]repo[:tag][@digest]`` → (registry host, repository, tag, digest); Docker Hub rules."""
    match = _REF_RE.match(ref)
    if not match:
        raise ValueError(f"{ref!r} is not an image reference ([host/]repository[:tag][@sha256:…])")
    host, repo = match["host"], match["repo"]
    if host is None or ("." not in host and ":" not in host and host != "localhost"):
        # "rocm/dev-ubuntu" or "ubuntu": Docker Hub, whose single names live under library/.
        repo = f"{host}/{repo}" if host else repo
        host = DOCKER_HUB
    if host == "docker.io":
        host = DOCKER_HUB
    if host == DOCKER_HUB and "/" not in repo:
        repo = f"library/{repo}"
    return host, repo, match["tag"], match["digest"]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost (reached over plain HTTP, as docker does)."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def registry_for_reference(ref: str, known: list[Registry]) -> tuple[ImageRegistry, str, str | None, str | None]:
    """A client for the registry an arbitrary reference names (a configured one's credentials if it matches)."""
    host, repo, tag, digest = split_reference(ref)
    for reg in known:
        if reg.host == host:
            return registry_for(reg), repo, tag, digest
    from rocm_release.adapters.registry.oci import OciRegistry

    return OciRegistry(host, scheme="http" if is_loopback(host) else "https"), repo, tag, digest


def blob_registry_for(reg: Registry) -> OciRegistry:
    """A client that can also stream blobs: ECR through its Registry v2 API with an ECR login token."""
    from rocm_release.adapters.registry.oci import OciRegistry, from_login

    if reg.kind == "ecr":
        from rocm_release.adapters.registry.ecr import EcrRegistry

        return from_login(EcrRegistry.from_config(reg).login_credentials(), scheme="https")
    client = registry_for(reg)
    assert isinstance(client, OciRegistry)
    return client
