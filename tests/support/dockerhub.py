"""A stand-in for the Docker Hub API (hub.docker.com), which no test can reach from here.

``HubStandIn`` is a small HTTP server on 127.0.0.1 that implements exactly the two documented Hub
API endpoints the code under test uses (https://docs.docker.com/reference/api/hub/latest/):

* ``POST /v2/users/login`` ``{"username", "password"}`` → 200 ``{"token": "<opaque>"}``, or 401;
* ``DELETE /v2/repositories/{namespace}/{repository}/tags/{tag}/`` with ``Authorization: Bearer
  <token>`` → 204; 404 when the tag is not there; 401 without a valid token; 403 for a user
  without write access (``readers``).

Its tags are those of a real ``LocalRegistry`` (the Registry API side of this "Docker Hub"); a
DELETE removes just that tag from the registry's storage, as the Hub does (the image and its other
tags stay), so the Registry API sees it gone at once. Run that registry with
``delete_enabled=False``: its manifest DELETE then answers 405, like Docker Hub's.

``fail(method, *statuses)`` queues answers for the next requests of that method, to exercise outages,
throttling and refused tokens; ``requests`` records (method, path) of every request.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import HttpServer, QuietHandler
from tests.support.registries import LocalRegistry

_DELETE_RE = re.compile(r"^/v2/repositories/(?P<ns>[^/]+)/(?P<name>[^/]+)/tags/(?P<tag>[^/]+)/?$")


@dataclass
class HubStandIn:
    """The Hub API for the repositories of ``registry``; ``users``: name → password (or access token)."""

    registry: LocalRegistry
    users: dict[str, str]
    readers: frozenset[str] = frozenset()
    failures: list[tuple[str, int]] = field(default_factory=list)  # (method, status) to answer next
    requests: list[tuple[str, str]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # token → user

    def __post_init__(self) -> None:
        hub = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                hub.answer(self, "POST")

            def do_DELETE(self) -> None:  # noqa: N802
                hub.answer(self, "DELETE")

            def do_GET(self) -> None:  # noqa: N802 - not an endpoint of the stand-in
                hub.answer(self, "GET")

        self.server = HttpServer(Handler)

    @property
    def url(self) -> str:
        return self.server.url

    def close(self) -> None:
        self.server.close()

    def __enter__(self) -> HubStandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fail(self, method: str, *statuses: int) -> None:
        """Answer the next requests of ``method`` with ``statuses``, one each, before serving again."""
        self.failures += [(method, status) for status in statuses]

    def _injected(self, method: str) -> int | None:
        for i, (m, status) in enumerate(self.failures):
            if m == method:
                del self.failures[i]
                return status
        return None

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (the next DELETE gets 401)."""
        self.tokens.clear()

    # -- the endpoints -----------------------------------------------------------------------------

    def answer(self, handler: QuietHandler, method: str) -> None:
        path = handler.path.split("?", 1)[0]
        self.requests.append((method, path))
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if (injected := self._injected(method)) is not None:
            status, doc = injected, {"detail": "injected by the test"}
        elif method == "POST" and path.rstrip("/") == "/v2/users/login":
            status, doc = self.login(body)
        elif method == "DELETE" and (m := _DELETE_RE.match(path)):
            status, doc = self.delete(handler.headers.get("Authorization", ""), m["ns"], m["name"], m["tag"])
        else:
            status, doc = 404, {"detail": "not an endpoint of the Docker Hub stand-in"}
        raw = json.dumps(doc).encode() if doc is not None else b""
        handler.send_response(status)
        if raw:
            handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(raw)))
        handler.end_headers()
        handler.wfile.write(raw)

    def login(self, body: bytes) -> tuple[int, dict[str, str]]:
        try:
            doc = json.loads(body)
        except ValueError:
            return 400, {"detail": "body is not JSON"}
        user, password = doc.get("username"), doc.get("password")
        if not user or self.users.get(user) != password:
            return 401, {"detail": "Incorrect authentication credentials"}
        token = secrets.token_hex(16)
        self.tokens[token] = user
        return 200, {"token": token}

    def delete(self, authorization: str, namespace: str, name: str, tag: str) -> tuple[int, dict[str, str] | None]:
        user = self.tokens.get(authorization.removeprefix("Bearer ").strip())
        if user is None:
            return 401, {"detail": "authentication credentials were not provided or have expired"}
        if user in self.readers:
            return 403, {"detail": "You do not have permission to perform this action."}
        tag_dir = self.tag_dir(f"{namespace}/{name}", tag)
        if not tag_dir.is_dir():
            return 404, {"detail": "Object not found"}
        shutil.rmtree(tag_dir)  # distribution's own untag: the tag goes, the manifest and other tags stay
        return 204, None

    def tag_dir(self, repository: str, tag: str) -> Path:
        """Where the registry stores a tag (distribution's filesystem layout)."""
        return (self.registry.root / "data" / "docker" / "registry" / "v2" / "repositories" / repository
                / "_manifests" / "tags" / tag)
