"""Throwaway registries, their access logs, and hand-made images (shared support, no tests).

``LocalRegistry`` runs a fresh Debian ``docker-registry serve`` (distribution 2.8) on a free
127.0.0.1 port with its storage and access log under a given folder (``running_registry``: for the
duration of a block); ``RequestLog`` counts the requests a piece of code makes from that access log,
``ACCESS_RE``/``parse_access_line``/``offset_after`` read any such log (bench/registry_traffic.py reads
the shared registries' logs with them). ``make_image`` and friends push images with plain HTTP,
independent of the code under test. ``TokenServer`` is a tiny token issuer for a registry configured
with ``auth: token`` (``token_registry``: both together). ``remove_tags`` empties repositories.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from rocm_release.core.names import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from tests.support.net import HttpServer, QuietHandler, free_port

REGISTRY_BIN = Path("/usr/bin/docker-registry")


# --------------------------------------------------------------------------------------------
# Access logs (combined format, one line per request, written after the answer is sent)

ACCESS_RE = re.compile(r'"(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[\d.]+" (?P<status>\d{3}) (?P<size>\d+|-) ')
MARKER_DEADLINE = 30.0


@dataclass(frozen=True)
class Request:
    """One access-log line: method, URI (unquoted), status, response size; ``registry`` names the log."""

    method: str
    uri: str
    status: int
    size: int = 0
    registry: str = ""

    @property
    def path(self) -> str:
        return self.uri.split("?", 1)[0]

    @property
    def kind(self) -> str:
        """``blob``, ``upload``, ``manifest``, ``tags`` or ``other``."""
        if "/blobs/uploads/" in self.path:
            return "upload"
        if "/blobs/" in self.path:
            return "blob"
        if "/manifests/" in self.path:
            return "manifest"
        if self.path.endswith("/tags/list"):
            return "tags"
        return "other"


def parse_access_line(line: str, registry: str = "") -> Request | None:
    """The request of one access-log line, or None for other lines."""
    m = ACCESS_RE.search(line)
    if not m:
        return None
    size = 0 if m["size"] == "-" else int(m["size"])
    return Request(m["method"], urllib.parse.unquote(m["uri"]), int(m["status"]), size, registry)


def offset_after(log_path: Path, needle: bytes, deadline: float = MARKER_DEADLINE) -> int:
    """Offset just after the (last) log line containing ``needle``, waited for up to ``deadline`` s."""
    give_up = time.monotonic() + deadline
    while True:
        data = log_path.read_bytes()
        at = data.rfind(needle)
        if at >= 0:
            end = data.find(b"\n", at)
            return len(data) if end < 0 else end + 1
        if time.monotonic() > give_up:
            raise RuntimeError(f"{needle.decode()!r} never reached {log_path}")
        time.sleep(0.02)  # polling the log file, bounded by the deadline


# --------------------------------------------------------------------------------------------
# A throwaway registry process


@dataclass
class LocalRegistry:
    """One ``docker-registry serve`` on 127.0.0.1, its storage and its access log in ``root``."""

    root: Path
    auth: dict[str, object] | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    delete_enabled: bool = True  # False: manifest DELETE answers 405 UNSUPPORTED, as Docker Hub's does

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def start(self) -> None:
        config = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "data")},
                        "delete": {"enabled": self.delete_enabled}},
            "http": {"addr": self.host},
        }
        if self.auth:
            config["auth"] = self.auth
        (self.root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([str(REGISTRY_BIN), "serve", str(self.root / "config.yml")],
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401):
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry on {self.host} did not answer /v2/ in 20 s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def mark(self) -> int:
        """Log offset after a marker request, waited for — every earlier request is logged by then."""
        token = uuid.uuid4().hex
        httpx.get(f"{self.url}/v2/?mark={token}", timeout=5)
        return offset_after(self.log_path, f"mark={token} HTTP".encode(), deadline=10)

    def requests_between(self, start: int, end: int) -> list[Request]:
        lines = self.log_path.read_bytes()[start:end].decode().splitlines()
        return [r for r in map(parse_access_line, lines) if r is not None and "mark=" not in r.uri]

    def blob_files(self) -> int:
        """Blob data files in storage (layers, configs and manifests are all stored as blobs)."""
        return sum(1 for _ in (self.root / "data").rglob("blobs/sha256/*/*/data"))


@contextlib.contextmanager
def running_registry(root: Path, auth: dict[str, object] | None = None, *,
                     delete_enabled: bool = True) -> Iterator[LocalRegistry]:
    """A started ``LocalRegistry`` in ``root`` for the duration of the block."""
    root.mkdir(parents=True, exist_ok=True)
    registry = LocalRegistry(root, auth=auth, delete_enabled=delete_enabled)
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


class RequestLog:
    def __init__(self, registry: LocalRegistry) -> None:
        self.registry = registry
        self.start = registry.mark()
        self.requests: list[Request] = []

    def close(self) -> list[Request]:
        self.requests = self.registry.requests_between(self.start, self.registry.mark())
        return self.requests



def unique_repo(prefix: str = "rocm/test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def remove_tags(host: str, repositories: Iterable[str]) -> list[str]:
    """Delete every tag of ``repositories`` at ``host`` (plain HTTP); return what could not be removed.

    Blobs stay until the registry's garbage collection (not ours to run).
    """
    from rocm_release.adapters.registry.oci import OciRegistry

    problems = []
    with OciRegistry(host, scheme="http") as registry:
        for repository in repositories:
            try:
                tags = sorted(registry.tag_names(repository))
                if tags:
                    registry.delete_tags(repository, tags)
            except Exception as exc:  # noqa: BLE001 - cleanup goes on with the other repositories
                problems.append(f"{host}/{repository}: {exc}")
    return problems


# --------------------------------------------------------------------------------------------
# Building test images with plain HTTP (independent of the code under test)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class TestImage:
    __test__ = False  # not a pytest class

    digest: str
    raw: bytes
    media_type: str
    config_digest: str
    layers: tuple[tuple[str, int], ...]

    @property
    def blob_digests(self) -> set[str]:
        return {self.config_digest, *(d for d, _ in self.layers)}


def raw_push_blob(base: str, repo: str, data: bytes) -> str:
    digest = digest_of(data)
    with httpx.Client() as client:
        if client.head(f"{base}/v2/{repo}/blobs/{digest}").status_code == 200:
            return digest
        start = client.post(f"{base}/v2/{repo}/blobs/uploads/")
        assert start.status_code == 202, start.text
        url = httpx.URL(base).join(start.headers["location"]).copy_merge_params({"digest": digest})
        done = client.put(url, content=data, headers={"Content-Type": "application/octet-stream"})
        assert done.status_code == 201, done.text
    return digest


def raw_put_manifest(base: str, repo: str, reference: str, raw: bytes, media_type: str) -> None:
    resp = httpx.put(f"{base}/v2/{repo}/manifests/{reference}", content=raw, headers={"Content-Type": media_type})
    assert resp.status_code == 201, resp.text


def make_image(
    base: str,
    repo: str,
    tag: str | None = None,
    *,
    labels: dict[str, str] | None = None,
    layers: list[bytes] | None = None,
    created: str | None = "2026-11-01T02:03:04.123456789Z",
    arch: str = "amd64",
    docker: bool = False,
) -> TestImage:
    """Push random layers + a config with ``config.Labels`` + a manifest; tag it if asked."""
    layers = layers if layers is not None else [os.urandom(3000), os.urandom(5000)]
    layer_descs = [(raw_push_blob(base, repo, data), len(data)) for data in layers]
    config: dict[str, object] = {
        "architecture": arch,
        "os": "linux",
        "config": {"Labels": labels} if labels is not None else {},
        "rootfs": {"type": "layers", "diff_ids": [d for d, _ in layer_descs]},
    }
    if created:
        config["created"] = created
    config_raw = json.dumps(config).encode()
    config_digest = raw_push_blob(base, repo, config_raw)
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json" if docker
            else "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config_raw),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n}
            for d, n in layer_descs
        ],
    }
    raw = json.dumps(manifest, indent=3).encode()
    raw_put_manifest(base, repo, tag or digest_of(raw), raw, media_type)
    return TestImage(digest_of(raw), raw, media_type, config_digest, tuple(layer_descs))


def make_index(base: str, repo: str, tag: str | None, images: list[tuple[TestImage, str]]) -> tuple[str, bytes]:
    """An OCI index over already-pushed images, each with its (os/arch) platform."""
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": img.media_type, "digest": img.digest, "size": len(img.raw),
             "platform": {"os": plat.split("/")[0], "architecture": plat.split("/")[1]}}
            for img, plat in images
        ],
    }
    raw = json.dumps(index).encode()
    raw_put_manifest(base, repo, tag or digest_of(raw), raw, OCI_INDEX)
    return digest_of(raw), raw



# --------------------------------------------------------------------------------------------
# A token issuer for a registry with ``auth: token``


@dataclass
class TokenServer:
    """A tiny token issuer (RS256 JWTs with an x5c header) for a registry's ``auth: token``."""

    root: Path
    users: dict[str, str]
    requests: list[tuple[str | None, list[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rocm-nightly test token issuer")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        self.bundle = self.root / "token-ca.pem"
        self.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                scopes = query.get("scope", [])
                user = server.check(self.headers.get("Authorization"))
                server.requests.append((user, scopes))
                if user == "":
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": server.issue(user, scopes), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = HttpServer(Handler)

    @property
    def realm(self) -> str:
        return f"{self.server.url}/token"

    def check(self, header: str | None) -> str | None:
        """None: anonymous; "": wrong credentials; else the user name."""
        if not header:
            return None
        user, _, password = base64.b64decode(header.removeprefix("Basic ")).decode().partition(":")
        return user if self.users.get(user) == password else ""

    def issue(self, user: str | None, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            if user is None:
                granted = []  # anonymous: a token that grants nothing
            elif user == "reader":
                granted = [a for a in actions.split(",") if a == "pull"]
            else:
                granted = actions.split(",")
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": "rocm-test-issuer", "sub": user or "", "aud": "rocm-test-registry", "exp": now + 300,
                  "nbf": now - 30, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"x5c": [self.x5c]})

    def stop(self) -> None:
        self.server.close()


@contextlib.contextmanager
def token_registry(root: Path, users: dict[str, str],
                   issuer: type[TokenServer] = TokenServer) -> Iterator[tuple[LocalRegistry, TokenServer]]:
    """A registry with ``auth: token`` and its token issuer (``users``: name → password; ``issuer``: the
    TokenServer class, e.g. one that misbehaves)."""
    tokens = issuer(root, users)
    auth: dict[str, object] = {"token": {"realm": tokens.realm, "service": "rocm-test-registry",
                                         "issuer": "rocm-test-issuer", "rootcertbundle": str(tokens.bundle)}}
    try:
        with running_registry(root, auth) as registry:
            yield registry, tokens
    finally:
        tokens.stop()
