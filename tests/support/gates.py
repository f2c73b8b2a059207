"""Network gates in front of real servers, for the fault matrix (tests/faults/): outages, cuts, stalls, 503s, lies.

* ``TcpGate`` — a TCP forwarder on a port of its own in front of a real server (a registry, moto, a
  git server). ``open()``/``close()`` make the service reachable or not (closed: connections are
  refused and the live ones reset, as when the server process dies), keeping the server's state: moto
  keeps its buckets in memory, so a real restart would lose them. A ``Trap`` reacts to the first (or
  n-th) request whose bytes contain a pattern: ``cut`` closes the gate right there (the server "dies"
  mid-request), ``hold`` keeps that request from the server until the test releases it (a stalled
  upload the test can kill the client during, or let through late).
* ``HttpFaultProxy`` — an HTTP proxy in front of a registry that answers 503 to the first N requests,
  or serves other bytes for some paths (a registry that lies); every other request is forwarded.

Neither is a mock of our code: the code under test talks to real servers through them, as it would
through a flaky network or load balancer.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Literal

import httpx

from tests.support.net import HttpServer, free_port

HOLD_DEADLINE = 120.0  # a held request is dropped after this long, whatever the test does


@dataclass
class Trap:
    """Springs on the ``nth`` client request whose bytes contain ``pattern``."""

    pattern: bytes
    action: Literal["cut", "hold"]
    nth: int = 1
    seen: int = 0
    sprung: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    let_through: bool = False  # on release: forward the held request (True) or drop its connection

    def release(self, *, let_through: bool) -> None:
        self.let_through = let_through
        self.released.set()


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0): the peer sees a reset connection, as when a server dies."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class TcpGate:
    """A TCP forwarder on 127.0.0.1:``port`` to 127.0.0.1:``target_port``; opened at construction."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._traps: list[Trap] = []
        self.open()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def is_open(self) -> bool:
        return self._listener is not None

    def open(self) -> None:
        """Listen again (same port): the service is reachable."""
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    # A service that stops and starts (tests/support/outages.py's ``Service``): the same as close/open.
    def start(self) -> None:
        self.open()

    def stop(self) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening and reset every live connection: connecting is refused from now on."""
        with self._lock:
            listener, self._listener = self._listener, None
            live, self._sockets = self._sockets, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in live:
            _reset(sock)

    def trap(self, pattern: bytes, action: Literal["cut", "hold"], nth: int = 1) -> Trap:
        """Arm a trap for the ``nth`` request containing ``pattern`` (checked on every client chunk)."""
        trap = Trap(pattern, action, nth)
        with self._lock:
            self._traps.append(trap)
        return trap

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Closed for the duration of the block, open again after."""
        self.close()
        try:
            yield
        finally:
            self.open()

    # -- forwarding

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._listener is not listener:
                    _reset(client)
                    _reset(server)
                    return
                self._sockets |= {client, server}
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _sprung(self, chunk: bytes) -> Trap | None:
        with self._lock:
            for trap in self._traps:
                if trap.pattern in chunk and not trap.sprung.is_set():
                    trap.seen += 1
                    if trap.seen == trap.nth:
                        trap.sprung.set()
                        return trap
        return None

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while True:
                chunk = source.recv(1 << 16)
                if not chunk:
                    break
                if from_client:
                    trap = self._sprung(chunk)
                    if trap is not None and trap.action == "cut":
                        self.close()
                        return
                    if trap is not None:  # hold
                        trap.released.wait(HOLD_DEADLINE)
                        if not trap.let_through:
                            _reset(source)
                            _reset(sink)
                            return
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def tcp_gate(target_port: int) -> Iterator[TcpGate]:
    """An open gate in front of 127.0.0.1:``target_port`` for the duration of the block."""
    gate = TcpGate(target_port)
    try:
        yield gate
    finally:
        for trap in list(gate._traps):
            trap.release(let_through=False)
        gate.close()


# --------------------------------------------------------------------------------------------
# An HTTP proxy that answers 503 for a while, or serves other bytes for some paths


Rewrite = Callable[[str, str, bytes], bytes | None]  # (method, path, upstream body) → other body, or None


class HttpFaultProxy(HttpServer):
    """Forwards every request to ``upstream`` (``http://host:port``), except: the first ``fail_first``
    requests get 503 (a registry behind an overloaded load balancer), and ``rewrite`` may replace the
    body of an answer (a registry serving other bytes). Bodies are read whole (the tests' images are
    small); the ``Host`` header is kept, so the registry's ``Location`` headers name the proxy."""

    def __init__(self, upstream: str, *, fail_first: int = 0, rewrite: Rewrite | None = None) -> None:
        self.upstream = upstream
        self.fail_first = fail_first
        self.rewrite = rewrite
        self.failed = 0
        self.forwarded = 0
        self._lock = threading.Lock()
        self._client = httpx.Client(base_url=upstream, timeout=30, trust_env=False)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:
                proxy.serve(self)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _serve

        super().__init__(Handler)

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            failing = self.failed < self.fail_first
            if failing:
                self.failed += 1
            else:
                self.forwarded += 1
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if failing:
            payload = b'{"errors":[{"code":"UNAVAILABLE","message":"service unavailable"}]}'
            handler.send_response(503)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(payload)
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("content-length", "connection")}
        answer = self._client.request(handler.command, handler.path, headers=headers, content=body)
        content = answer.content
        if self.rewrite is not None:
            other = self.rewrite(handler.command, handler.path, content)
            content = content if other is None else other
        handler.send_response(answer.status_code)
        for key, value in answer.headers.multi_items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                handler.send_header(key, value)
        length_header = answer.headers.get("content-length") if handler.command == "HEAD" else str(len(content))
        handler.send_header("Content-Length", length_header or "0")
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(content)

    def close(self) -> None:
        super().close()
        self._client.close()
