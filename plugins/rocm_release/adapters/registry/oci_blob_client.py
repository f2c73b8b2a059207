"""The blob endpoints of the OCI Distribution API: check, stream (verified), read, mount, upload.

Uploads are monolithic (one streamed PUT) or chunked (PATCHes with ``Content-Range``, then a
closing PUT); either way the digest is checked on both sides and a failed upload is cancelled.
Answers map to present / absent / error as :mod:`.oci_session` describes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, NoReturn

import httpx

from rocm_release.adapters.registry.blob_stream import READ_CHUNK, BlobReader, iter_source, rechunk
from rocm_release.adapters.registry.oci_auth import Scopes
from rocm_release.adapters.registry.oci_session import OciSession, ReferenceNotFound
from rocm_release.core.names import check_digest, check_repository
from rocm_release.core.registry import RegistryError

log = logging.getLogger(__name__)

# read_blob() is for small blobs (image configs, SHA256SUMS); layers are streamed.
MAX_SMALL_BLOB_BYTES = 64 << 20
_OCTET_STREAM = {"Content-Type": "application/octet-stream"}


class _Upload:
    """An upload in progress: where to send the next request, and a tally of the bytes sent."""

    def __init__(self, url: httpx.URL) -> None:
        self.url = url
        self.sent = 0
        self._hasher = hashlib.sha256()

    def add(self, piece: bytes) -> None:
        self._hasher.update(piece)
        self.sent += len(piece)

    def counted(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """The non-empty chunks, each added to the tally as it is sent."""
        for chunk in chunks:
            if chunk:
                self.add(chunk)
                yield chunk

    @property
    def digest(self) -> str:
        return "sha256:" + self._hasher.hexdigest()


class OciBlobClient:
    """Blob operations on one registry, through ``session``. :class:`~.oci.OciRegistry` is one.

    Subclasses share ``self._http``: the session's requests and answer mapping.
    """

    def __init__(self, session: OciSession) -> None:
        self._http = session

    def has_blob(self, repository: str, digest: str) -> bool:
        """HEAD the blob: True present, False absent (errors raise)."""
        check_repository(repository)
        check_digest(digest)
        http = self._http
        resp = http.send("HEAD", http.url(f"/v2/{repository}/blobs/{digest}"), repository,
                         Scopes.of(repository, "pull"), follow_redirects=True)
        present, _ = http.outcome(resp, repository, f"HEAD blob {digest}")
        return present

    def blob_size(self, repository: str, digest: str) -> int | None:
        """HEAD the blob: its size (``Content-Length``) when present, None when absent (errors raise).

        A present blob whose answer names no size is a malformed answer (Fatal): the caller
        checks presence *and* size without reading a byte of the blob.
        """
        check_repository(repository)
        check_digest(digest)
        http = self._http
        what = f"HEAD blob {digest}"
        resp = http.send("HEAD", http.url(f"/v2/{repository}/blobs/{digest}"), repository,
                         Scopes.of(repository, "pull"), follow_redirects=True)
        present, _ = http.outcome(resp, repository, what)
        if not present:
            return None
        length = resp.headers.get("content-length", "")
        if not length.isdigit():
            http.fatal(repository, f"{what}: the answer names no size (Content-Length {length!r})")
        return int(length)

    @contextmanager
    def open_blob(self, repository: str, digest: str, *, size: int | None = None) -> Iterator[BlobReader]:
        """Stream a blob; the reader verifies size (when given) and sha256 at its end.

        Absent → ReferenceNotFound. The registry may redirect to storage (S3); the
        redirect is followed and our credentials are not sent to the other host.
        """
        check_repository(repository)
        check_digest(digest)
        http = self._http
        what = f"GET blob {digest}"
        resp = http.send("GET", http.url(f"/v2/{repository}/blobs/{digest}"), repository,
                         Scopes.of(repository, "pull"), stream=True, follow_redirects=True)
        present, reason = http.outcome(resp, repository, what)
        if not present:
            raise ReferenceNotFound(f"{http.host}/{repository}@{digest}: {reason}")

        def fail(detail: str) -> NoReturn:
            http.fatal(repository, detail)

        def transport_error(exc: Exception) -> NoReturn:
            http.transport_error(repository, what, exc)

        try:
            yield BlobReader(resp.iter_bytes(READ_CHUNK), digest, size, fail, transport_error)
        finally:
            resp.close()

    def read_blob(self, repository: str, digest: str, *, size: int | None = None,
                  max_size: int = MAX_SMALL_BLOB_BYTES) -> bytes:
        """A small blob's verified bytes (configs, checksum files). Larger than max_size → Fatal."""
        if size is not None and size > max_size:
            raise ValueError(f"blob {digest} has {size} bytes, more than read_blob's {max_size}; stream it")
        with self.open_blob(repository, digest, size=size) as reader:
            parts: list[bytes] = []
            total = 0
            for chunk in reader.iter_chunks():
                total += len(chunk)
                if total > max_size:
                    self._http.fatal(repository, f"blob {digest} is larger than {max_size} bytes")
                parts.append(chunk)
            return b"".join(parts)

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Cross-repository mount within this registry. True when mounted (201), no bytes moved.

        False when the registry started a normal upload instead (202: the blob is not in
        ``from_repository``, or mounting is not allowed); that upload is cancelled.
        """
        check_repository(repository)
        check_repository(from_repository)
        check_digest(digest)
        http = self._http
        url = http.url(f"/v2/{repository}/blobs/uploads/").copy_merge_params(
            {"mount": digest, "from": from_repository})
        what = f"POST mount {digest} from {from_repository}"
        resp = http.send("POST", url, repository, Scopes.of(repository, "pull,push", from_repository))
        http.require_ok(resp, repository, what)
        if resp.status_code == 201:
            return True
        location = resp.headers.get("location")
        if location:
            self._cancel_upload(repository, http.url(location))
        return False

    def push_blob(
        self,
        repository: str,
        digest: str,
        data: bytes | Iterable[bytes] | IO[bytes],
        *,
        size: int | None = None,
        chunk_size: int | None = None,
    ) -> int:
        """Upload a blob, streaming; returns the bytes sent. Verifies the digest on both sides.

        ``chunk_size=None``: one streamed PUT (``Content-Length`` set when ``size`` is known).
        ``chunk_size=N``: PATCH chunks of N bytes with ``Content-Range`` (at most N bytes in
        memory), then a closing PUT — for registries that limit request sizes.
        A failed upload is cancelled (best effort) before the error is raised.
        """
        check_repository(repository)
        check_digest(digest)
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        scopes = Scopes.of(repository, "pull,push")
        upload = self._start_upload(repository, digest, scopes)
        completed = False
        try:
            if chunk_size is None:
                resp = self._put_whole(upload, repository, digest, scopes, data, size)
            else:
                resp = self._put_chunked(upload, repository, digest, scopes, data, chunk_size)
            self._http.require_ok(resp, repository, f"PUT upload {digest}")
            completed = True
        finally:
            if not completed:
                self._cancel_upload(repository, upload.url)
        self._check_upload(resp, upload, repository, digest, size)
        return upload.sent

    def _start_upload(self, repository: str, digest: str, scopes: Scopes) -> _Upload:
        """POST for an upload session; its ``Location`` is where the bytes go."""
        http = self._http
        resp = http.send("POST", http.url(f"/v2/{repository}/blobs/uploads/"), repository, scopes)
        http.require_ok(resp, repository, f"POST upload {digest}")
        location = resp.headers.get("location")
        if resp.status_code != 202 or not location:
            http.fatal(repository, f"POST upload {digest}: expected 202 with a Location, got "
                                   f"HTTP {resp.status_code}")
        return _Upload(http.url(location))

    def _put_whole(self, upload: _Upload, repository: str, digest: str, scopes: Scopes,
                   data: bytes | Iterable[bytes] | IO[bytes], size: int | None) -> httpx.Response:
        """The whole blob in one streamed PUT (bytes are sent as they are)."""
        headers = dict(_OCTET_STREAM)
        if size is not None:
            headers["Content-Length"] = str(size)
        body: bytes | Iterator[bytes] = (
            data if isinstance(data, bytes) else upload.counted(iter_source(data, READ_CHUNK)))
        if isinstance(body, bytes):
            upload.add(body)
        final = upload.url.copy_merge_params({"digest": digest})
        return self._http.send("PUT", final, repository, scopes, headers=headers, content=body)

    def _put_chunked(self, upload: _Upload, repository: str, digest: str, scopes: Scopes,
                     data: bytes | Iterable[bytes] | IO[bytes], chunk_size: int) -> httpx.Response:
        """PATCH pieces of ``chunk_size`` bytes, following each new ``Location``; then the closing PUT."""
        http = self._http
        for piece in rechunk(iter_source(data, READ_CHUNK), chunk_size):
            headers = {**_OCTET_STREAM,
                       "Content-Range": f"{upload.sent}-{upload.sent + len(piece) - 1}",
                       "Content-Length": str(len(piece))}
            resp = http.send("PATCH", upload.url, repository, scopes, headers=headers, content=piece)
            http.require_ok(resp, repository, f"PATCH upload {digest} at {upload.sent}")
            upload.add(piece)
            if resp.headers.get("location"):
                upload.url = http.url(resp.headers["location"])
        final = upload.url.copy_merge_params({"digest": digest})
        return http.send("PUT", final, repository, scopes, content=b"", headers=dict(_OCTET_STREAM))

    def _check_upload(self, resp: httpx.Response, upload: _Upload, repository: str, digest: str,
                      size: int | None) -> None:
        """What was sent hashes to ``digest`` (and has ``size`` bytes); the registry stored that digest."""
        http = self._http
        if upload.digest != digest:
            http.fatal(repository, f"uploaded bytes hash to {upload.digest}, not {digest}")
        if size is not None and upload.sent != size:
            http.fatal(repository, f"uploaded {upload.sent} bytes for {digest}, expected {size}")
        header = http.checked_digest(resp.headers.get("docker-content-digest"), repository, "PUT upload")
        if header is not None and header != digest:
            http.fatal(repository, f"registry stored the upload as {header}, expected {digest}")

    def _cancel_upload(self, repository: str, upload: httpx.URL) -> None:
        try:
            resp = self._http.send("DELETE", upload, repository, Scopes.of(repository, "pull,push"))
            resp.close()
        except RegistryError as exc:  # best effort: registries expire abandoned uploads anyway
            log.warning("could not cancel upload %s: %s", upload.path, exc)
