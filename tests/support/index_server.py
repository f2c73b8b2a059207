"""A static HTTP server for a published wheel store, with an access log: what pip and uv asked for.

``serve_folder(root)`` serves ``root`` read-only (``http.server``'s ``SimpleHTTPRequestHandler``: a
folder's ``index.html`` for ``…/project/``, files as they are, 404 for anything missing) on a free
127.0.0.1 port, from a ``ThreadingHTTPServer`` thread, until the ``with`` block ends. Every request
is recorded as one ``AccessLog`` line, ``"<METHOD> <path> <status>"``: the tests read it to show what
a resolver downloaded (a ``.metadata`` file, not the wheel of a version it did not choose).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.support.net import HttpServer


@dataclass(frozen=True)
class Request:
    """One request as served: method, URL path (decoded, without query) and the status sent."""

    method: str
    path: str
    status: int

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.status}"


@dataclass
class AccessLog:
    """Every request a server answered, in order; also appended to ``file`` when one is given."""

    file: Path | None = None
    requests: list[Request] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)
            if self.file is not None:
                with self.file.open("a", encoding="utf-8") as out:
                    out.write(f"{request}\n")

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def lines(self) -> list[str]:
        with self._lock:
            return [str(r) for r in self.requests]

    def paths(self, method: str | None = None) -> list[str]:
        """The paths requested (with ``method`` only, when given), in order."""
        with self._lock:
            return [r.path for r in self.requests if method is None or r.method == method]


class IndexServer:
    """A running server: its base ``url`` (``http://127.0.0.1:<port>``) and its ``log``."""

    def __init__(self, http: HttpServer, log: AccessLog) -> None:
        self.url = http.url
        self.log = log


@contextmanager
def serve_folder(root: Path, log_file: Path | None = None) -> Iterator[IndexServer]:
    """Serve ``root`` over HTTP on 127.0.0.1 (a free port) until the block ends; log every request."""
    log = AccessLog(file=log_file)

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            # Called by send_response (also for errors), before the body: when a client exits, every
            # request it made is in the log.
            log.record(Request(self.command, unquote(urlsplit(self.path).path), int(code)))

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
            pass  # the access log above is the record; nothing on stderr

    with HttpServer(Handler) as http:
        yield IndexServer(http, log)
