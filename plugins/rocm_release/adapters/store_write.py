"""Writing to the wheel store so that no reader ever sees part of a file.

``file://``: a temporary name in the same folder, then a rename (atomic on POSIX). ``s3://``: one PUT,
or a multipart upload, is atomic — the object appears whole or not at all; a write that fails part-way
is discarded, never committed (``abandon``). Errors are classified like every store error
(``adapters.store.classify``): each write is one idempotent operation, safe to retry on a transient one.

A file written with ``record=True`` gets its sha256 and upload time recorded where ``stat_or_none`` finds
them without reading it (``adapters.store``: S3 object metadata; ``file://`` a record file beside it).
Index pages are written with ``page=True``: ``text/html`` and ``Cache-Control: no-cache`` on S3, so a
CDN in front of the bucket revalidates ``nightly/`` on every request instead of serving yesterday's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO, Protocol, runtime_checkable

from rocm_release.adapters.store import StoreError, StorePath, classify, is_s3, record_name
from rocm_release.core.errors import FatalError

CHUNK = 1 << 20
LOCAL_PROTOCOLS = frozenset({"file", "local"})
PAGE_HEADERS = {"ContentType": "text/html; charset=utf-8", "CacheControl": "no-cache"}


class ChangedWhileWriting(ValueError, FatalError):
    """The bytes sent are not the bytes the caller hashed (the local file changed): nothing is committed."""


@runtime_checkable
class WritableStorePath(StorePath, Protocol):
    """A StorePath that can also be written: ObjectStoragePath and pathlib.Path both are."""

    def __truediv__(self, other: str) -> WritableStorePath: ...

    def unlink(self, missing_ok: bool = False) -> None: ...

    def rename(self, target: Any) -> Any: ...

    def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None: ...


def writable(folder: StorePath, where: str) -> WritableStorePath:
    """``folder`` as a WritableStorePath; TypeError naming ``where`` when it cannot be written."""
    if not isinstance(folder, WritableStorePath):
        raise TypeError(f"{where}: {type(folder).__name__} cannot be written (needs unlink, rename and mkdir)")
    return folder


def is_local(folder: WritableStorePath) -> bool:
    """True for a local folder (``file://`` or a pathlib.Path), where a rename is atomic."""
    # pathlib.Path has no ``protocol``; ObjectStoragePath says "file" for file:// URLs.
    return str(getattr(folder, "protocol", "file")) in LOCAL_PROTOCOLS


def chunks(stream: BinaryIO) -> Iterator[bytes]:
    """The stream's bytes in pieces of CHUNK."""
    while chunk := stream.read(CHUNK):
        yield chunk


def unlink(path: WritableStorePath, where: str) -> None:
    """Delete ``path`` (nothing when it is not there); store errors classified."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except Exception as exc:  # noqa: BLE001 - classified, like every store error
        raise classify(exc, where) from exc


def write_atomic(store: WritableStorePath, parts: tuple[str, ...], pieces: Iterable[bytes], where: str, *,
                 sha256: str | None = None, page: bool = False) -> None:
    """Write ``store/<parts…>`` so that no reader ever sees part of it.

    With ``sha256`` the bytes are hashed on the way, the write is abandoned (ChangedWhileWriting) unless
    they hash to it, and the sha256 and upload time are recorded with the file (``stat_or_none``).
    """
    name = "/".join(parts)
    parent = store
    for part in parts[:-1]:
        parent = parent / part
    final = parent / parts[-1]
    checked = _Checked(pieces, sha256, where + name)
    uploaded = _now()
    try:
        if is_local(store):
            _write_local(parent, parts[-1], checked, sha256 is not None, uploaded)
        else:
            extra: dict[str, Any] = dict(PAGE_HEADERS) if page and is_s3(store) else {}
            if sha256 is not None and is_s3(store):
                extra["Metadata"] = {"sha256": sha256, "uploaded": uploaded}
            # Object stores make an object visible only when its upload completes.
            out = final.open("wb", **extra)
            try:
                for chunk in checked:
                    out.write(chunk)
                checked.check()
            except BaseException:
                abandon(out)
                raise
            out.close()
    except (StoreError, ChangedWhileWriting):
        raise
    except Exception as exc:  # noqa: BLE001 - classified: an outage is transient, refused credentials fatal
        raise classify(exc, where + name) from exc


def _write_local(parent: WritableStorePath, name: str, checked: _Checked, record: bool, uploaded: str) -> None:
    """A temporary name, then one rename (POSIX: the old file is replaced in one step); the record beside it
    is removed before the rename and written after it, so it never describes other bytes."""
    parent.mkdir(parents=True, exist_ok=True)
    temporary = parent / f".{name}.{uuid.uuid4().hex}.part"
    try:
        with temporary.open("wb") as out:
            for chunk in checked:
                out.write(chunk)
        checked.check()
        if record:
            (parent / record_name(name)).unlink(missing_ok=True)
        temporary.rename(parent / name)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if record and checked.expected is not None:
        record_local(parent, name, checked.expected, checked.size, "", uploaded)


def record_local(folder: WritableStorePath, name: str, sha256: str, size: int, where: str,
                 uploaded: str | None = None) -> None:
    """Record the sha256 of a ``file://`` file (just written, or found without a record and just hashed): later
    checks are HEAD-class. Object stores keep what they have (their record is set by the upload itself)."""
    if is_local(folder):
        uploaded = uploaded or _now()
        found: Any = folder / name
        text = json.dumps({"sha256": sha256, "size": size, "uploaded": uploaded, "mtime": found.stat().st_mtime})
        write_atomic(folder, (record_name(name),), [text.encode()], where)


def _now() -> str:
    """The upload time a record holds: UTC, to the second, ISO 8601 with ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Checked:
    """The pieces of a write, counted and (when a sha256 is expected) hashed on the way."""

    def __init__(self, pieces: Iterable[bytes], expected: str | None, where: str) -> None:
        self._pieces, self.expected, self._where = pieces, expected, where
        self._digest = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        for piece in self._pieces:
            if self.expected is not None:
                self._digest.update(piece)
            self.size += len(piece)
            yield piece

    def check(self) -> None:
        if self.expected is not None and self._digest.hexdigest() != self.expected:
            raise ChangedWhileWriting(f"{self._where}: the bytes sent hash to {self._digest.hexdigest()}, "
                                      f"expected {self.expected}: the local file changed; nothing was committed")


def abandon(stream: Any) -> None:
    """Drop a half-written object-store upload instead of committing it.

    fsspec files commit whatever was buffered when they are closed, even on an
    error (their ``__exit__`` and ``__del__`` call ``close``): discard the
    upload (s3fs also aborts a started multipart upload) and mark the file
    closed so that nothing is ever PUT.
    """
    discard = getattr(stream, "discard", None)
    if not callable(discard):
        return  # nothing to abort with; the read-back after uploading catches a partial file
    discard()
    inner = stream
    # Airflow wraps fsspec files in a lineage tracker (``_obj``): the flag belongs on the file itself.
    while "_obj" in getattr(inner, "__dict__", {}):
        inner = inner.__dict__["_obj"]
    with contextlib.suppress(AttributeError):
        inner.closed = True
