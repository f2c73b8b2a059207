"""Wheels images: ``FROM scratch`` images holding ``/dist/*.whl`` and ``/dist/SHA256SUMS``.

They are read through the registry API, layer by layer, streaming: no docker
daemon, no full-image pull, and never a whole layer in memory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import posixpath
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from rocm_release.core.errors import FatalError
from rocm_release.core.names import DOCKER_MANIFEST_LIST, OCI_INDEX
from rocm_release.core.registry import Manifest

SUMS_NAME = "SHA256SUMS"
SUMS_LINE = re.compile(r"^(?P<sha>[0-9a-f]{64}) [ *](?P<name>[^/\s][^/]*)$")


class UnverifiedWheels(ValueError, FatalError):
    """The image's /dist does not match its SHA256SUMS (or has none): it must not be published."""


class BlobSource(Protocol):
    """The two registry operations reading a wheels image needs."""

    def manifest(self, repository: str, reference: str) -> Manifest: ...

    def open_blob(self, repository: str, digest: str) -> AbstractContextManager[IO[bytes]]: ...


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


def layer_digests(source: BlobSource, repository: str, reference: str) -> list[str]:
    """The layer digests of an image (for an index: its linux/amd64 image)."""
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
    return [layer["digest"] for layer in doc.get("layers", [])]


# What reading a layer as a (compressed) tar stream raises when its bytes are not one.
_TAR_ERRORS = (tarfile.TarError, zlib.error, EOFError)


def _unreadable(blob: IO[bytes], where: str, digest: str, exc: Exception) -> UnverifiedWheels:
    """The error for a layer that does not read as a tar archive. The rest of the blob is read first:
    a blob whose bytes do not hash to its digest (corrupted storage or transfer) raises its registry's
    FatalRegistryError, naming registry, repository and digest, from that read."""
    for _ in iter(functools.partial(blob.read, 1 << 20), b""):
        pass
    return UnverifiedWheels(f"{where}: layer {digest} is not a readable tar archive ({exc})")


class _LayerFile:
    """A file's stream inside a layer: a decompression error names the layer (see ``_unreadable``)."""

    def __init__(self, stream: IO[bytes], blob: IO[bytes], where: str, digest: str) -> None:
        self._stream, self._blob, self._where, self._digest = stream, blob, where, digest

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except _TAR_ERRORS as exc:
            raise _unreadable(self._blob, self._where, self._digest, exc) from exc


def _dist_members(
    source: BlobSource, repository: str, reference: str
) -> Iterator[tuple[str, _LayerFile]]:
    """Yield (file name, stream) for every regular file under /dist, layer after layer."""
    where = f"{repository}@{reference}"
    for digest in layer_digests(source, repository, reference):
        with source.open_blob(repository, digest) as blob:
            try:
                tar = tarfile.open(fileobj=blob, mode="r|*")
                members = iter(tar)
                while True:
                    try:
                        member = next(members)
                    except StopIteration:
                        break
                    path = posixpath.normpath(member.name.lstrip("./").lstrip("/"))
                    if not member.isfile():
                        continue
                    if posixpath.dirname(path) != "dist":
                        raise UnverifiedWheels(f"{where} holds {member.name!r} outside /dist")
                    stream = tar.extractfile(member)
                    assert stream is not None  # a regular file always has a stream
                    yield posixpath.basename(path), _LayerFile(stream, blob, where, digest)
            except _TAR_ERRORS as exc:
                raise _unreadable(blob, where, digest, exc) from exc


def read_dist(
    source: BlobSource,
    repository: str,
    reference: str,
    sink: Callable[[str], AbstractContextManager[IO[bytes]]] | None = None,
) -> list[DistFile]:
    """Stream /dist of a wheels image, hashing every file, and verify it against SHA256SUMS.

    With ``sink`` each wheel is also written to the stream ``sink(name)`` gives
    (e.g. a file in a temporary folder); without it the wheels are only hashed.
    Raises UnverifiedWheels unless the image holds exactly the wheels
    SHA256SUMS lists, each with its listed sha256.
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
    sums = parse_sums(sums_text)
    if set(sums) != set(seen):
        raise UnverifiedWheels(
            f"{where}: {SUMS_NAME} lists {sorted(sums)}, /dist holds {sorted(seen)}"
        )
    bad = sorted(n for n, f in seen.items() if sums[n] != f.sha256)
    if bad:
        raise UnverifiedWheels(f"{where}: sha256 of {bad} does not match {SUMS_NAME}")
    wheels = [f for f in seen.values() if f.name.endswith(".whl")]
    if not wheels:
        raise UnverifiedWheels(f"{where}: /dist holds no wheel")
    return sorted(seen.values(), key=lambda f: f.name)


def file_sink(folder: Path) -> Callable[[str], AbstractContextManager[IO[bytes]]]:
    """A ``sink`` for ``read_dist`` that writes each file into ``folder``."""

    def open_file(name: str) -> AbstractContextManager[IO[bytes]]:
        return (folder / name).open("wb")

    return open_file
