"""Blob bytes as streams: reading a registry's answer with verification, and regrouping an upload.

:class:`BlobReader` turns the chunks of a blob GET into a binary file object that checks the size
and sha256 at its end; :func:`iter_source` and :func:`rechunk` feed an upload from bytes, a file or
any iterable of chunks. No requests are made here: the registry client supplies the chunks and the
two error callbacks (a verification failure is Fatal, a dropped connection Transient).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, NoReturn

import httpx

READ_CHUNK = 1 << 20


class _VerifyingStream(io.RawIOBase):
    """The raw side of BlobReader: pulls chunks, hashes them, checks size and digest at EOF."""

    def __init__(
        self,
        chunks: Iterator[bytes],
        digest: str,
        expected_size: int | None,
        fail: Callable[[str], NoReturn],
        transport_error: Callable[[Exception], NoReturn],
    ) -> None:
        super().__init__()
        self._chunks = chunks
        self.digest = digest
        self.expected_size = expected_size
        self._fail = fail
        self._transport_error = transport_error
        self._hash = hashlib.sha256()
        self._pending = b""
        self._eof = False
        self.bytes_read = 0
        self.verified = False

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bytes:
        while True:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._finish()
                return b""
            except httpx.HTTPError as exc:
                self._transport_error(exc)
            if chunk:
                break
        self._hash.update(chunk)
        self.bytes_read += len(chunk)
        if self.expected_size is not None and self.bytes_read > self.expected_size:
            self._fail(f"blob {self.digest} is longer than its declared {self.expected_size} bytes")
        return chunk

    def _finish(self) -> None:
        if self._eof:
            return
        self._eof = True
        if self.expected_size is not None and self.bytes_read != self.expected_size:
            self._fail(f"blob {self.digest} has {self.bytes_read} bytes, its descriptor says {self.expected_size}")
        got = "sha256:" + self._hash.hexdigest()
        if got != self.digest:
            self._fail(f"blob {self.digest} does not verify: its bytes hash to {got}")
        self.verified = True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not self._pending and not self._eof:
            self._pending = self._next_chunk()
        if not self._pending:
            return 0
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class BlobReader(io.BufferedReader):
    """A blob's bytes as a binary file object that verifies size and sha256 at its end.

    Works wherever a binary stream does (``tarfile.open(fileobj=…, mode="r|*")``).
    Nothing read is trusted until the stream has been read to its end without error:
    a size or digest mismatch raises FatalRegistryError from the read that hits EOF;
    ``verified`` turns True only then. A reader that stops early has verified nothing.
    """

    def __init__(
        self,
        chunks: Iterator[bytes],
        digest: str,
        expected_size: int | None,
        fail: Callable[[str], NoReturn],
        transport_error: Callable[[Exception], NoReturn],
    ) -> None:
        self._verifier = _VerifyingStream(chunks, digest, expected_size, fail, transport_error)
        super().__init__(self._verifier, buffer_size=READ_CHUNK)

    @property
    def digest(self) -> str:
        """The digest the bytes must hash to."""
        return self._verifier.digest

    @property
    def bytes_read(self) -> int:
        """Bytes received from the registry so far."""
        return self._verifier.bytes_read

    @property
    def verified(self) -> bool:
        """True once the whole blob was read and matched its digest (and size, when given)."""
        return self._verifier.verified

    def iter_chunks(self, size: int = READ_CHUNK) -> Iterator[bytes]:
        """The remaining bytes in pieces of at most ``size``; verifies at the end."""
        while chunk := self.read(size):
            yield chunk


def iter_source(data: bytes | Iterable[bytes] | IO[bytes], chunk: int) -> Iterator[bytes]:
    """The bytes of an upload source (bytes, a BlobReader, a binary file, or an iterable of chunks)."""
    if isinstance(data, bytes):
        yield data
    elif isinstance(data, BlobReader):
        yield from data.iter_chunks()
    elif hasattr(data, "read"):
        reader: IO[bytes] = data  # type: ignore[assignment]
        while block := reader.read(chunk):
            yield block
    else:
        yield from data


def rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Regroup a byte stream into pieces of exactly ``size`` bytes (the last may be shorter)."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)
