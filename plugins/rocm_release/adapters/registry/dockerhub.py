"""Docker Hub: the Registry API for everything but deleting tags, which goes through the Hub API.

Docker Hub answers the Registry API's manifest DELETE with 405. Its own API deletes a tag (what the
reference pipeline's ``cleanup-nightly-builds.sh`` does); only these documented endpoints of
https://docs.docker.com/reference/api/hub/latest/ are used:

* ``POST /v2/users/login`` with ``{"username": …, "password": …}`` → ``{"token": "<JWT>"}``. The
  password may be a personal access token (it must be one when the organization enforces SSO): put
  the bot account and its token in the registry's Airflow connection (``login``/``password``).
* ``DELETE /v2/repositories/{namespace}/{repository}/tags/{tag}/`` with ``Authorization: Bearer <JWT>``.

The Hub deletes the tag only, never the image's other tags: :attr:`DockerHubRegistry.deletes_by_digest`
is False. Answers map like every registry's (:mod:`rocm_release.core.registry`): 2xx done; 404 on a
DELETE: already gone; 401/403 fatal (a 401 on a DELETE first logs in once more: the JWT may have
expired); 408, 429, 5xx and network trouble transient; anything else, or an answer that is not what
the documentation says, fatal. Listing, lookups, labels and tagging are :class:`OciRegistry`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NoReturn

import httpx

from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.adapters.registry.oci_session import DEFAULT_TIMEOUT
from rocm_release.core.config import DOCKER_HUB_API, DOCKER_HUB_HOSTS
from rocm_release.core.names import check_repository, check_tag
from rocm_release.core.registry import FatalRegistryError, RegistryError, TransientRegistryError

log = logging.getLogger(__name__)

DOCKER_HUB_REGISTRY = "registry-1.docker.io"  # where Docker Hub's Registry API answers
MAX_DETAIL = 200  # characters of an error answer quoted in a message


def registry_api_host(host: str) -> str:
    """The Registry API host of a configured Docker Hub host (``docker.io`` → ``registry-1.docker.io``)."""
    return DOCKER_HUB_REGISTRY if host.lower() in DOCKER_HUB_HOSTS else host


class DockerHubRegistry(OciRegistry):
    """Docker Hub: an :class:`OciRegistry` whose ``delete_tags`` speaks the Hub API at ``hub_api``.

    ``host`` is the Registry API (``registry-1.docker.io``, or a local registry in tests);
    ``hub_transport`` is for tests that stand in for the Hub API.
    """

    deletes_by_digest = False  # the Hub API deletes one tag; the image keeps its other tags

    def __init__(
        self,
        host: str,
        *,
        hub_api: str = DOCKER_HUB_API,
        scheme: str = "https",
        username: str | None = None,
        password: str | None = None,
        connection_id: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        hub_transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(host, scheme=scheme, username=username, password=password, connection_id=connection_id,
                         timeout=timeout, transport=transport)
        self.hub_api = hub_api.rstrip("/")
        self._hub = httpx.Client(base_url=self.hub_api, timeout=timeout, transport=hub_transport, trust_env=False)
        self._jwt: str | None = None

    def __repr__(self) -> str:
        return f"DockerHubRegistry({self.endpoint!r}, hub_api={self.hub_api!r}, connection_id={self.connection_id!r})"

    def close(self) -> None:
        """Close both clients' pooled connections."""
        super().close()
        self._hub.close()

    # -- errors --------------------------------------------------------------------------------

    def _fail(self, kind: type[RegistryError], repository: str, detail: str) -> NoReturn:
        raise kind(self.hub_api, repository, detail, self.connection_id)

    def _check(self, resp: httpx.Response, repository: str, what: str) -> bool:
        """True for 2xx, False for a 404; raises for everything else (401/403 fatal, 408/429/5xx transient)."""
        status = resp.status_code
        if 200 <= status < 300:
            return True
        if status == 404:
            return False
        detail = f"{what}: HTTP {status}" + (f" ({text})" if (text := _answer_text(resp)) else "")
        if status in (401, 403):
            self._fail(FatalRegistryError, repository, f"{detail}: Docker Hub refused the credentials "
                                                       "(check the connection's login and access token)")
        if status in (408, 429) or status >= 500:
            self._fail(TransientRegistryError, repository, detail)
        self._fail(FatalRegistryError, repository, detail)

    def _send(self, method: str, path: str, repository: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._hub.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            self._fail(TransientRegistryError, repository, f"{method} {path}: {type(exc).__name__}: {exc}")
        except httpx.HTTPError as exc:
            self._fail(FatalRegistryError, repository, f"{method} {path}: {type(exc).__name__}: {exc}")

    # -- the Hub API ---------------------------------------------------------------------------

    def _login(self, repository: str) -> str:
        """A JWT for the connection's account: ``POST /v2/users/login`` (one request per client)."""
        if self._jwt is not None:
            return self._jwt
        if self.username is None or self._password is None:
            self._fail(FatalRegistryError, repository, "deleting tags on Docker Hub needs credentials: give the "
                                                       "registry's connection a login and an access token")
        what = "POST /v2/users/login"
        resp = self._send("POST", "/v2/users/login", repository,
                          json={"username": self.username, "password": self._password})
        if not self._check(resp, repository, what):
            self._fail(FatalRegistryError, repository, f"{what}: HTTP 404: is {self.hub_api} the Docker Hub API?")
        try:
            token = resp.json().get("token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            self._fail(FatalRegistryError, repository, f"{what}: the answer has no 'token'")
        self._jwt = token
        return token

    def _delete_tag(self, namespace: str, name: str, tag: str, repository: str) -> bool:
        """DELETE one tag; True when deleted, False when it was already gone."""
        path = f"/v2/repositories/{namespace}/{name}/tags/{tag}/"
        for attempt in (1, 2):
            resp = self._send("DELETE", path, repository,
                              headers={"Authorization": f"Bearer {self._login(repository)}"})
            if resp.status_code == 401 and attempt == 1:
                self._jwt = None  # the JWT may have expired during a long run: log in once more
                continue
            break
        return self._check(resp, repository, f"DELETE {path}")

    def delete_tags(self, repository: str, tags: Sequence[str]) -> None:
        """Delete each tag through the Hub API (one DELETE per tag, after one login).

        Only the named tags go: an image keeps its other tags. A tag already gone counts as deleted.
        """
        check_repository(repository)
        wanted = list(dict.fromkeys(check_tag(t) for t in tags))
        if not wanted:
            return
        namespace, _, name = repository.partition("/")
        if not name or "/" in name:
            self._fail(FatalRegistryError, repository, "a Docker Hub repository is '<namespace>/<name>'")
        gone = 0
        for tag in wanted:
            if not self._delete_tag(namespace, name, tag, repository):
                gone += 1
                log.info("%s/%s:%s is already gone", self.name, repository, tag)
        log.info("%s/%s: deleted %d tags through %s (%d already gone)", self.name, repository,
                 len(wanted) - gone, self.hub_api, gone)


def _answer_text(resp: httpx.Response) -> str:
    """A short text of an error answer: the Hub's ``detail``/``message``, or the start of the body."""
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        for key in ("detail", "message", "errinfo"):
            if isinstance(doc.get(key), str) and doc[key]:
                return str(doc[key])[:MAX_DETAIL]
    return resp.text[:MAX_DETAIL].strip()
