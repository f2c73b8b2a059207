"""127.0.0.1 ports, a small threaded HTTP server and a TCP gate (a service that can go down)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


def free_port() -> int:
    """A 127.0.0.1 TCP port that was free a moment ago (bound, then closed again)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on: connecting to it is refused."""
    return free_port()


def wait_for_port(port: int, timeout: float = 30, alive: Callable[[], bool] = lambda: True) -> None:
    """Poll until something accepts connections on 127.0.0.1:``port``; fail after ``timeout`` s or when
    ``alive()`` says the server died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if not alive():
                raise RuntimeError(f"the server for 127.0.0.1:{port} exited before it listened") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s") from None
            time.sleep(0.05)  # polling a port for readiness, bounded by the deadline


class HttpServer:
    """A ``ThreadingHTTPServer`` on a free 127.0.0.1 port, serving from a daemon thread until ``close()``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing (tests read their servers' state, not stderr)."""

    def log_message(self, *args: object) -> None:
        pass
