"""Writing to the wheel store so that no reader ever sees part of a file.

``file://``: a temporary name in the same folder, then a rename (atomic on POSIX). ``s3://``: one PUT,
or a multipart upload, is atomic — the object appears whole or not at all; a write that fails part-way
is discarded, never committed (``abandon``). Errors are classified like every store error
(``adapters.store.classify``): each write is one idempotent operation, safe to retry on a transient one.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, Protocol, runtime_checkable

from rocm_release.adapters.store import StoreError, StorePath, classify

CHUNK = 1 << 20
LOCAL_PROTOCOLS = frozenset({"file", "local"})


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


def write_atomic(store: WritableStorePath, parts: tuple[str, ...], pieces: Iterable[bytes], where: str) -> None:
    """Write ``store/<parts…>`` so that no reader ever sees part of it."""
    name = "/".join(parts)
    parent = store
    for part in parts[:-1]:
        parent = parent / part
    final = parent / parts[-1]
    try:
        if is_local(store):
            # A rename within one folder replaces the old file in one step (POSIX rename).
            parent.mkdir(parents=True, exist_ok=True)
            temporary = parent / f".{parts[-1]}.{uuid.uuid4().hex}.part"
            try:
                with temporary.open("wb") as out:
                    for chunk in pieces:
                        out.write(chunk)
                temporary.rename(final)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
        else:
            # Object stores make an object visible only when its upload completes.
            out = final.open("wb")
            try:
                for chunk in pieces:
                    out.write(chunk)
            except BaseException:
                abandon(out)
                raise
            out.close()
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - classified: an outage is transient, refused credentials fatal
        raise classify(exc, where + name) from exc


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
