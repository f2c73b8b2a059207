"""A counting reverse proxy: requests by method, bytes read and written, between the code and one service.

One :class:`CountingProxy` listens on a free 127.0.0.1 port and forwards every
request to one upstream (the moto S3 server, a registry), streaming both ways
(1 MiB pieces, never a whole body in memory), one thread per client
connection, keep-alive on both sides. The ``Host`` header is passed on as the
client sent it, so a registry's upload ``Location`` points back at the proxy.

What it counts, per *phase* (a label the benchmark switches between steps:
``night1/sensors``, ``night1/builds``…): requests by method, request body bytes
(*written* to the service) and response body bytes (*read* from it). Headers are
not counted. ``Expect: 100-continue`` is answered by the proxy itself. A response the
client hangs up on is counted up to that point and listed in ``aborted``.
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PIECE = 1 << 20
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "trailers", "transfer-encoding", "upgrade", "expect", "proxy-connection"})


@dataclass
class Tally:
    """What one phase saw at one service."""

    requests: Counter[str] = field(default_factory=Counter)
    bytes_read: int = 0
    bytes_written: int = 0

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def add(self, other: Tally) -> None:
        self.requests.update(other.requests)
        self.bytes_read += other.bytes_read
        self.bytes_written += other.bytes_written

    def as_dict(self) -> dict[str, Any]:
        return {"requests": dict(sorted(self.requests.items())), "bytes_read": self.bytes_read,
                "bytes_written": self.bytes_written}


class CountingProxy:
    """``http://127.0.0.1:<port>`` → ``upstream_host:upstream_port``, counting per phase."""

    def __init__(self, name: str, upstream: str) -> None:
        self.name = name
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.phase = "setup"
        self.tallies: dict[str, Tally] = {}
        self.aborted: list[str] = []  # responses the client hung up on, counted up to that point
        self._lock = threading.Lock()
        proxy = self

        class Handler(_ForwardingHandler):
            owner = proxy

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=f"proxy-{name}", daemon=True)
        self._thread.start()

    def count(self, phase: str, method: str = "", *, read: int = 0, written: int = 0) -> None:
        with self._lock:
            tally = self.tallies.setdefault(phase, Tally())
            if method:
                tally.requests[method] += 1
            tally.bytes_read += read
            tally.bytes_written += written

    def tally(self, prefix: str = "") -> Tally:
        """The sum over the phases starting with ``prefix``."""
        total = Tally()
        with self._lock:
            for phase, tally in self.tallies.items():
                if phase.startswith(prefix):
                    total.add(tally)
        return total

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _ForwardingHandler(BaseHTTPRequestHandler):
    owner: CountingProxy
    protocol_version = "HTTP/1.1"
    upstream_conn: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        return

    def _connection(self) -> http.client.HTTPConnection:
        if self.upstream_conn is None:
            host, port = self.owner.upstream
            self.upstream_conn = http.client.HTTPConnection(host, port, timeout=600)
        return self.upstream_conn

    def _request_body(self) -> Iterator[bytes]:
        """The client's request body, as it arrives (fixed length or chunked)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield from self._exactly(size)
                self.rfile.readline()
        yield from self._exactly(int(self.headers.get("Content-Length") or 0))

    def _exactly(self, size: int) -> Iterator[bytes]:
        """``size`` bytes of the request, in pieces as they arrive."""
        left = size
        while left:
            piece = self.rfile.read(min(left, PIECE))
            if not piece:
                raise ConnectionError("client closed mid-body")
            left -= len(piece)
            yield piece

    def _forward(self) -> None:
        phase, method = self.owner.phase, self.command
        chunked_in = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        conn = self._connection()
        try:
            conn.putrequest(method, self.path, skip_host=True, skip_accept_encoding=True)
            for key, value in self.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    conn.putheader(key, value)
            if chunked_in:
                conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            written = 0
            for piece in self._request_body():
                written += len(piece)
                conn.send(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked_in else piece)
            if chunked_in:
                conn.send(b"0\r\n\r\n")
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException):
            conn.close()
            self.upstream_conn = None
            raise
        self.owner.count(phase, method, written=written)
        self._answer(resp, phase)

    def _answer(self, resp: http.client.HTTPResponse, phase: str) -> None:
        self.send_response_only(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        bodiless = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        chunked_out = not bodiless and length is None
        for key, value in resp.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        if chunked_out:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        read = 0
        try:
            if not bodiless:
                while piece := resp.read(PIECE):
                    self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked_out else piece)
                    read += len(piece)
                if chunked_out:
                    self.wfile.write(b"0\r\n\r\n")
            else:
                resp.read()
            self.wfile.flush()
        except OSError:
            # The client hung up mid-body (it had what it wanted): count what it was sent, say so.
            self.owner.aborted.append(f"{phase} {self.command} {self.path} after {read} bytes")
            self.close_connection = True
            if self.upstream_conn is not None:
                self.upstream_conn.close()
                self.upstream_conn = None
            return
        finally:
            self.owner.count(phase, read=read)
        if resp.will_close and self.upstream_conn is not None:
            self.upstream_conn.close()
            self.upstream_conn = None

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward  # noqa: N815 - http.server's names

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self.upstream_conn is not None:
                self.upstream_conn.close()
