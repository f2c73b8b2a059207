"""Requests and bytes a piece of work caused at the two shared registries, read from their access logs.

Both registries (Debian's ``docker-registry``, distribution 2.8) write one
combined-format line per request, after the answer is sent::

    127.0.0.1 - - [26/Nov/2026:05:53:53 +0000] "GET /v2/<repo>/blobs/sha256:… HTTP/1.1" 200 268435456 "" "<agent>"

The machine is shared, so only the lines of our own repositories (the run's
``bench-<id>/`` prefix) count. A window starts at the log's current size; it
ends with a marker request (a GET of a tag list under our prefix), waited for
in the log: every request made before it has been logged by then.

Bytes over the wire (blob and manifest bodies; headers are not counted):

* ``GET``: the logged response size (blobs, manifests, tag lists);
* a finished blob upload (``PUT …/blobs/uploads/…?digest=…``, 201): the size of
  that blob in the registry's storage (the log has no request sizes; docker's
  ``PATCH`` + empty ``PUT`` and our single ``PUT`` carry the same bytes);
* a manifest ``PUT``: the size of the manifest it stored (by digest, or by the
  tag's link in the storage);
* ``HEAD``, ``POST``, ``DELETE``: no body.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

from local_services import Services

from tests.support.registries import Request, offset_after, parse_access_line

MARKER_DEADLINE = 30.0
# 127.0.0.1 only: never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Traffic:
    """What the window saw at both registries."""

    requests: list[Request] = field(default_factory=list)
    bytes_by_registry: Counter[str] = field(default_factory=Counter)
    blob_bytes_down: int = 0
    blob_bytes_up: int = 0
    manifest_bytes: int = 0

    @property
    def total_requests(self) -> int:
        return len(self.requests)

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_by_registry.values())

    def count(self, registry: str | None = None, method: str | None = None, kind: str | None = None) -> int:
        return sum(1 for r in self.requests
                   if (registry is None or r.registry == registry)
                   and (method is None or r.method == method)
                   and (kind is None or r.kind == kind))

    def breakdown(self) -> dict[str, int]:
        """``<registry> <METHOD> <kind>`` → number of requests."""
        return dict(sorted(Counter(f"{r.registry} {r.method} {r.kind}" for r in self.requests).items()))

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.total_requests,
            "bytes": self.total_bytes,
            "bytes_by_registry": dict(self.bytes_by_registry),
            "blob_bytes_down": self.blob_bytes_down,
            "blob_bytes_up": self.blob_bytes_up,
            "manifest_bytes": self.manifest_bytes,
            "breakdown": self.breakdown(),
        }


class RegistryTraffic:
    """Counts our requests to the cache and public registries between ``start()`` and ``stop()``."""

    REGISTRIES = ("cache", "public")

    def __init__(self, services: Services, prefix: str) -> None:
        self.services = services
        self.prefix = prefix
        self.logs = {name: services.registry_log(name) for name in self.REGISTRIES}
        self.storage = {name: services.registry_storage(name) / "docker" / "registry" / "v2"
                        for name in self.REGISTRIES}
        self.hosts = {"cache": services.cache_host, "public": services.public_host}
        self._offsets: dict[str, int] = {}
        self._markers = 0

    def start(self) -> None:
        for name in self.REGISTRIES:
            self._offsets[name] = self._marker(name)

    def stop(self) -> Traffic:
        traffic = Traffic()
        for name in self.REGISTRIES:
            end = self._marker(name)
            text = self.logs[name].read_bytes()[self._offsets[name]:end].decode("utf-8", "replace")
            for line in text.splitlines():
                request = parse_access_line(line, registry=name)
                if request is None or not request.uri.startswith(f"/v2/{self.prefix}/") or "/marker-" in request.uri:
                    continue
                traffic.requests.append(request)
                self._account(traffic, request)
        return traffic

    # -- bytes --------------------------------------------------------------------------------

    def _account(self, traffic: Traffic, r: Request) -> None:
        nbytes = 0
        if r.method == "GET" and 200 <= r.status < 300:
            nbytes = r.size
            if r.kind == "blob":
                traffic.blob_bytes_down += nbytes
            elif r.kind == "manifest":
                traffic.manifest_bytes += nbytes
        elif r.method == "PUT" and r.kind == "upload" and r.status == 201:
            digest = urllib.parse.parse_qs(urllib.parse.urlsplit(r.uri).query).get("digest", [""])[0]
            nbytes = self._blob_size(r.registry, digest)
            traffic.blob_bytes_up += nbytes
        elif r.method == "PUT" and r.kind == "manifest" and r.status == 201:
            nbytes = self._manifest_size(r.registry, r.path)
            traffic.manifest_bytes += nbytes
        traffic.bytes_by_registry[r.registry] += nbytes

    def _blob_size(self, registry: str, digest: str) -> int:
        algorithm, _, hexa = digest.partition(":")
        if algorithm != "sha256" or len(hexa) != 64:
            return 0
        data = self.storage[registry] / "blobs" / "sha256" / hexa[:2] / hexa / "data"
        try:
            return data.stat().st_size
        except OSError:
            return 0

    def _manifest_size(self, registry: str, path: str) -> int:
        # /v2/<repo>/manifests/<reference>
        repo, _, reference = path[len("/v2/"):].rpartition("/manifests/")
        if reference.startswith("sha256:"):
            return self._blob_size(registry, reference)
        link = (self.storage[registry] / "repositories" / repo / "_manifests" / "tags" / reference
                / "current" / "link")
        try:
            return self._blob_size(registry, link.read_text().strip())
        except OSError:
            return 0

    # -- the window's ends --------------------------------------------------------------------

    def _marker(self, name: str) -> int:
        """Log offset just after a marker request of ours, waited for (deadline 30 s)."""
        self._markers += 1
        uri = f"/v2/{self.prefix}/marker-{self._markers}/tags/list"
        request = urllib.request.Request(f"http://{self.hosts[name]}{uri}")
        try:
            with _OPENER.open(request, timeout=10) as resp:
                resp.read()
        except urllib.error.HTTPError as err:  # 404: the marker repository does not exist, as intended
            err.read()
        return offset_after(self.logs[name], f" {uri} HTTP/".encode(), deadline=MARKER_DEADLINE)


def human_bytes(n: float) -> str:
    """1536 → '1.5 KiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"

