"""Wheels images: ``FROM scratch`` images holding ``/dist/*.whl`` and ``/dist/SHA256SUMS``.

They are read through the registry API, layer by layer, streaming: no docker
daemon, no full-image pull, and never a whole layer in memory. tarfile stops at
the archive's end marker, so each layer is then read to its end (and thrown
away) before its files count: only a layer whose bytes matched its digest and
size gives files to read_dist's result (issue #11, defect 1).

Checking that a wheels image is there reads none of that (issue #13): the build puts
SHA256SUMS on the image as a label (``LABEL_DIST_SUMS``); ``missing_layers`` HEADs the layer
blobs the manifest names (digest and size). The sensor trusts those digests; the publisher,
which reads the wheels anyway, verifies their bytes against SHA256SUMS and the label.
"""

from __future__ import annotations

import functools
import hashlib
import json
import posixpath
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from rocm_release.core.errors import FatalError
from rocm_release.core.names import DOCKER_MANIFEST_LIST, OCI_INDEX
from rocm_release.core.plan import LABEL_DIST_SUMS
from rocm_release.core.registry import Manifest

SUMS_NAME = "SHA256SUMS"
READ_CHUNK = 1 << 20
SUMS_LINE = re.compile(r"^(?P<sha>[0-9a-f]{64}) [ *](?P<name>[^/\s][^/]*)$")


class UnverifiedWheels(ValueError, FatalError):
    """The image's /dist does not match its SHA256SUMS (or has none): it must not be published."""


class StoredLayerMismatch(RuntimeError, FatalError):
    """A layer blob the registry holds has another size than the manifest says: corrupted storage."""


class VerifyingBlob(Protocol):
    """A blob's bytes that check themselves: ``verified`` once read to the end and matching its digest."""

    def read(self, size: int = -1, /) -> bytes: ...

    @property
    def verified(self) -> bool: ...


class ManifestSource(Protocol):
    """The registry operation listing an image's layers needs."""

    def manifest(self, repository: str, reference: str) -> Manifest: ...


class BlobSource(ManifestSource, Protocol):
    """The two registry operations reading a wheels image needs."""

    def open_blob(self, repository: str, digest: str, *,
                  size: int | None = None) -> AbstractContextManager[VerifyingBlob]: ...


@dataclass(frozen=True)
class DistFile:
    """One file of /dist with its sha256 and size."""

    name: str
    sha256: str
    size: int


def parse_sums(text: str) -> dict[str, str]:
    """``sha256sum`` output → {file name: hex}. Rejects anything else (paths, duplicates, junk)."""
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = SUMS_LINE.match(line)
        if not match:
            raise UnverifiedWheels(f"{SUMS_NAME} line {number} is not '<sha256>  <file name>': {line!r}")
        if match["name"] in sums:
            raise UnverifiedWheels(f"{SUMS_NAME} names {match['name']!r} twice")
        sums[match["name"]] = match["sha"]
    return sums


def sums_from_labels(labels: Mapping[str, str], where: str) -> dict[str, str] | None:
    """The SHA256SUMS a wheels image carries as its ``LABEL_DIST_SUMS`` label: None without the label
    (an image built before issue #13); UnverifiedWheels when it does not parse or lists no wheel."""
    text = labels.get(LABEL_DIST_SUMS)
    if text is None:
        return None
    try:
        sums = parse_sums(text)
    except UnverifiedWheels as exc:
        raise UnverifiedWheels(f"{where}: label {LABEL_DIST_SUMS}: {exc}") from exc
    if not any(name.endswith(".whl") for name in sums):
        raise UnverifiedWheels(f"{where}: label {LABEL_DIST_SUMS} lists no wheel ({sorted(sums)})")
    return sums


class LayerPresence(ManifestSource, Protocol):
    """What checking an image's layers without reading them needs: its manifest and a blob HEAD."""

    def blob_size(self, repository: str, digest: str) -> int | None: ...


def missing_layers(source: LayerPresence, repository: str, reference: str) -> list[str]:
    """The layer blobs of an image the registry does not hold (one HEAD each; no byte of a layer read).

    An image without layers counts all missing (``["no layer"]``). A held blob whose size is not
    the manifest's raises StoredLayerMismatch: storage a rebuild would not repair (a push skips
    blobs the registry says it has), so a person must look.
    """
    layers = _layers(source, repository, reference)
    if not layers:
        return ["no layer"]
    missing = []
    for digest, size in layers:
        held = source.blob_size(repository, digest)
        if held is None:
            missing.append(digest)
        elif size is not None and held != size:
            raise StoredLayerMismatch(
                f"{repository}@{reference} layer {digest}: the registry holds {held} bytes, the manifest says {size}")
    return missing


def layer_digests(source: ManifestSource, repository: str, reference: str) -> list[str]:
    """The layer digests of an image (for an index: its linux/amd64 image)."""
    return [digest for digest, _ in _layers(source, repository, reference)]


def _layers(source: ManifestSource, repository: str, reference: str) -> list[tuple[str, int | None]]:
    """(digest, declared size) of each layer of an image (for an index: its linux/amd64 image)."""
    manifest = source.manifest(repository, reference)
    doc = json.loads(manifest.raw)
    if manifest.media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST):
        chosen = [
            m for m in doc.get("manifests", [])
            if m.get("platform", {}).get("os") == "linux" and m.get("platform", {}).get("architecture") == "amd64"
        ]
        if not chosen:
            raise UnverifiedWheels(f"{repository}@{reference} is an index without a linux/amd64 image")
        doc = json.loads(source.manifest(repository, chosen[0]["digest"]).raw)
    return [(layer["digest"], _size(layer.get("size"))) for layer in doc.get("layers", [])]


def _size(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


# What reading a layer as a (compressed) tar stream raises when its bytes are not one.
_TAR_ERRORS = (tarfile.TarError, zlib.error, EOFError)


def _unreadable(blob: VerifyingBlob, where: str, exc: Exception) -> UnverifiedWheels:
    """The error for a layer that does not read as a tar archive. The rest of the layer is read first:
    bytes that do not match its digest (corrupted storage or transfer) raise the registry's
    FatalRegistryError from that read, naming registry, repository and digest."""
    _drain(blob, where)
    return UnverifiedWheels(f"{where} is not a readable tar archive ({exc})")


class _LayerFile:
    """A file's stream inside a layer: a decompression error names the layer (see ``_unreadable``)."""

    def __init__(self, stream: IO[bytes], blob: VerifyingBlob, where: str) -> None:
        self._stream, self._blob, self._where = stream, blob, where

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except _TAR_ERRORS as exc:
            raise _unreadable(self._blob, self._where, exc) from exc


def _dist_members(
    source: BlobSource, repository: str, reference: str
) -> Iterator[tuple[str, _LayerFile]]:
    """Yield (file name, stream) for every regular file under /dist, layer after layer.

    After tarfile reaches a layer's end marker, the rest of the layer is read (and dropped) so
    that its size and digest are checked: a mismatch raises FatalRegistryError, a stream that
    does not verify raises UnverifiedWheels. Only then does the next layer start, or the
    caller get to trust what it read. A layer tarfile cannot read (a corrupted blob bigger than
    one read: "invalid compressed data") is read to its end the same way before failing.
    """
    for digest, size in _layers(source, repository, reference):
        where = f"{repository}@{reference} layer {digest}"
        with source.open_blob(repository, digest, size=size) as blob:
            try:
                # typeshed's tarfile wants write/seek/tell too; stream mode ("r|") only ever reads.
                with tarfile.open(fileobj=blob, mode="r|*") as tar:  # type: ignore[call-overload]
                    for member in tar:
                        path = posixpath.normpath(member.name.lstrip("./").lstrip("/"))
                        if not member.isfile():
                            continue
                        if posixpath.dirname(path) != "dist":
                            raise UnverifiedWheels(f"{repository}@{reference} holds {member.name!r} outside /dist")
                        stream = tar.extractfile(member)
                        assert stream is not None  # a regular file always has a stream
                        yield posixpath.basename(path), _LayerFile(stream, blob, where)
            except _TAR_ERRORS as exc:
                raise _unreadable(blob, where, exc) from exc
            _drain(blob, where)


def _drain(blob: VerifyingBlob, where: str) -> None:
    """Read what tarfile left of a layer (padding, compression trailer, or a substitute's tail)."""
    while blob.read(READ_CHUNK):
        pass
    if not blob.verified:
        raise UnverifiedWheels(f"{where}: read to its end, but its digest was not verified")


def read_dist(
    source: BlobSource,
    repository: str,
    reference: str,
    sink: Callable[[str], AbstractContextManager[IO[bytes]]] | None = None,
    expected_sums: Mapping[str, str] | None = None,
) -> list[DistFile]:
    """Stream /dist of a wheels image, hashing every file, and verify it against SHA256SUMS.

    With ``sink`` each wheel is also written to the stream ``sink(name)`` gives
    (e.g. a file in a temporary folder); without it the wheels are only hashed.
    Raises UnverifiedWheels unless the image holds exactly the wheels
    SHA256SUMS lists, each with its listed sha256, and FatalRegistryError when a
    layer's bytes do not match its digest or size. With ``expected_sums`` (the image's
    ``LABEL_DIST_SUMS`` label, which the sensor trusted) SHA256SUMS must also be exactly those
    sums: a label that disagrees with /dist fails too. A sink may have been written
    to when it raises: the caller must then drop what it wrote (a temporary folder).
    """
    seen: dict[str, DistFile] = {}
    sums_text: str | None = None
    for name, stream in _dist_members(source, repository, reference):
        if name == SUMS_NAME:
            sums_text = stream.read(1 << 20).decode("utf-8", "replace")
            continue
        digest, size = hashlib.sha256(), 0
        if sink is None:
            for chunk in iter(functools.partial(stream.read, 1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
        else:
            with sink(name) as out:
                for chunk in iter(functools.partial(stream.read, 1 << 20), b""):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
        seen[name] = DistFile(name=name, sha256=digest.hexdigest(), size=size)
    where = f"{repository}@{reference}"
    if sums_text is None:
        raise UnverifiedWheels(f"{where} has no /dist/{SUMS_NAME}")
    _check_sums(where, parse_sums(sums_text), seen, expected_sums)
    wheels = [f for f in seen.values() if f.name.endswith(".whl")]
    if not wheels:
        raise UnverifiedWheels(f"{where}: /dist holds no wheel")
    return sorted(seen.values(), key=lambda f: f.name)


class LabelledBlobSource(BlobSource, Protocol):
    """A blob source that also reads an image's labels (``ImageRegistry.labels``)."""

    def labels(self, repository: str, reference: str) -> dict[str, str]: ...


def read_labelled_dist(
    source: LabelledBlobSource,
    repository: str,
    reference: str,
    sink: Callable[[str], AbstractContextManager[IO[bytes]]] | None = None,
) -> list[DistFile]:
    """``read_dist`` with ``expected_sums`` from the image's ``LABEL_DIST_SUMS`` label (the sums the
    sensor trusted); an image without the label (built before it) is checked against SHA256SUMS only."""
    where = f"{repository}@{reference}"
    expected = sums_from_labels(source.labels(repository, reference), where)
    return read_dist(source, repository, reference, sink, expected_sums=expected)


def _check_sums(where: str, sums: dict[str, str], seen: dict[str, DistFile],
                expected_sums: Mapping[str, str] | None) -> None:
    """/dist holds exactly the files SHA256SUMS lists, with those sha256; and SHA256SUMS is the label's."""
    if set(sums) != set(seen):
        raise UnverifiedWheels(
            f"{where}: {SUMS_NAME} lists {sorted(sums)}, /dist holds {sorted(seen)}"
        )
    bad = sorted(n for n, f in seen.items() if sums[n] != f.sha256)
    if bad:
        raise UnverifiedWheels(f"{where}: sha256 of {bad} does not match {SUMS_NAME}")
    if expected_sums is not None and dict(expected_sums) != sums:
        differ = sorted(set(expected_sums).symmetric_difference(sums)
                        | {n for n in set(expected_sums) & set(sums) if expected_sums[n] != sums[n]})
        raise UnverifiedWheels(f"{where}: label {LABEL_DIST_SUMS} disagrees with /dist/{SUMS_NAME} on {differ}")


def file_sink(folder: Path) -> Callable[[str], AbstractContextManager[IO[bytes]]]:
    """A ``sink`` for ``read_dist`` that writes each file into ``folder``."""

    def open_file(name: str) -> AbstractContextManager[IO[bytes]]:
        return (folder / name).open("wb")

    return open_file
