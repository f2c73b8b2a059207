"""A git remote over smart HTTP that wants a password: Debian's ``git http-backend`` behind Basic auth.

``git_http_server(root, username, token)`` serves the bare repositories under ``root`` on a free
127.0.0.1 port, like a hosted forge with a private repository: a request without the right
``Authorization: Basic`` header gets 401 (git then says "Authentication failed"); with it, the request
goes to ``git http-backend`` (CGI) unchanged. ``requests`` lists what was asked, with the user each
request authenticated as (never the token).
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from tests.support.net import HttpServer, QuietHandler


class _GitHandler(QuietHandler):
    root: ClassVar[Path]
    expected: ClassVar[str]
    seen: ClassVar[list[tuple[str, str, bool]]]

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        authorized = self.headers.get("Authorization") == self.expected
        self.seen.append((self.command, self.path, authorized))
        if not authorized:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path, _, query = self.path.partition("?")
        env = {
            "GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
            "QUERY_STRING": query, "REQUEST_METHOD": self.command, "REMOTE_USER": "git",
            "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""), "PATH": "/usr/bin:/bin",
        }
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False,
                             timeout=120).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        headers = [line.split(":", 1) for line in head.decode("latin-1").split("\r\n") if ":" in line]
        status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
        self.send_response(status)
        for key, value in headers:
            if key.lower() != "status":
                self.send_header(key, value.strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class GitHttpServer(HttpServer):
    """The server; ``url_of(name)`` is the clone URL of ``root/name``."""

    def __init__(self, root: Path, username: str, token: str) -> None:
        basic = base64.b64encode(f"{username}:{token}".encode()).decode()
        handler = type("Handler", (_GitHandler,), {"root": root, "expected": f"Basic {basic}", "seen": []})
        self.requests: list[tuple[str, str, bool]] = handler.seen  # type: ignore[attr-defined]
        super().__init__(handler)

    def url_of(self, name: str) -> str:
        return f"{self.url}/{name}"


@contextlib.contextmanager
def git_http_server(root: Path, username: str, token: str) -> Iterator[GitHttpServer]:
    server = GitHttpServer(root, username, token)
    try:
        yield server
    finally:
        server.close()
