"""Copy an image (or an index and its images) between OCI registries, moving only missing blobs.

Order is what makes a copy safe to interrupt and to repeat:

1. for each image manifest: every blob the target lacks (HEAD first; a cross-repository
   mount when both sides are the same registry; else streamed source → target, verified);
2. then that image manifest, by digest;
3. for an index: its child manifests first (steps 1–2), then the index;
4. the top manifest under each tag, last.

So a reader never sees a tag whose blobs or children are missing, and a copy cut short
is finished by running it again. Manifest bytes are pushed unchanged, so the target
digest equals the source digest (checked).

An image manifest the target already has (HEAD by digest) is not descended into: a
registry accepts a manifest only once all its blobs are there, and never garbage-collects
blobs a manifest references. Its blobs count as skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Protocol

from rocm_release.adapters.registry.blob_stream import BlobReader
from rocm_release.adapters.registry.oci_manifest import Descriptor, MalformedManifest, manifest_references
from rocm_release.core.names import INDEX_MEDIA_TYPES, check_tag
from rocm_release.core.registry import FatalRegistryError, Lookup, Manifest

log = logging.getLogger(__name__)


class BlobRegistry(Protocol):
    """What ``copy_image`` needs from each side (``OciRegistry`` provides it)."""

    @property
    def name(self) -> str: ...

    def lookup(self, repository: str, tag: str) -> Lookup: ...

    def manifest(self, repository: str, reference: str) -> Manifest: ...

    def has_blob(self, repository: str, digest: str) -> bool: ...

    def open_blob(
        self, repository: str, digest: str, *, size: int | None = None
    ) -> AbstractContextManager[BlobReader]: ...

    def push_blob(
        self,
        repository: str,
        digest: str,
        data: bytes | Iterable[bytes] | IO[bytes],
        *,
        size: int | None = None,
        chunk_size: int | None = None,
    ) -> int: ...

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool: ...

    def put_manifest(self, repository: str, reference: str, raw: bytes, media_type: str) -> str: ...


@dataclass(frozen=True)
class CopyResult:
    """What a copy did. ``bytes_copied`` counts blob bytes only (manifests are small)."""

    digest: str
    blobs_copied: int
    bytes_copied: int
    blobs_skipped: int
    blobs_mounted: int = 0
    manifests_pushed: int = 0


@dataclass
class _Copier:
    src: BlobRegistry
    src_repo: str
    dst: BlobRegistry
    dst_repo: str
    chunk_size: int | None
    blobs_copied: int = 0
    bytes_copied: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    manifests_pushed: int = 0

    def __post_init__(self) -> None:
        self.same_registry = self.src.name == self.dst.name
        self.done_blobs: set[str] = set()

    def parse(self, manifest: Manifest) -> tuple[Descriptor, ...]:
        """Child manifests of an index, or config + layers of an image."""
        try:
            refs = manifest_references(manifest)
        except MalformedManifest as exc:
            raise FatalRegistryError(self.src.name, self.src_repo, str(exc)) from None
        return refs.manifests if manifest.media_type in INDEX_MEDIA_TYPES else refs.blobs

    def copy_blob(self, blob: Descriptor) -> None:
        if blob.digest in self.done_blobs:
            return
        self.done_blobs.add(blob.digest)
        if blob.is_foreign:  # non-distributable layer: its bytes are not in the source registry
            self.blobs_skipped += 1
            return
        if self.dst.has_blob(self.dst_repo, blob.digest):
            self.blobs_skipped += 1
            return
        if self.same_registry and self.dst.mount_blob(self.dst_repo, blob.digest, self.src_repo):
            self.blobs_mounted += 1
            return
        with self.src.open_blob(self.src_repo, blob.digest, size=blob.size) as reader:
            sent = self.dst.push_blob(self.dst_repo, blob.digest, reader, size=blob.size,
                                      chunk_size=self.chunk_size)
        self.blobs_copied += 1
        self.bytes_copied += sent

    def copy_manifest_contents(self, manifest: Manifest) -> None:
        """Everything ``manifest`` points to, so that it can be PUT next."""
        for ref in self.parse(manifest):
            if manifest.media_type in INDEX_MEDIA_TYPES:
                self.copy_child(ref)
            else:
                self.copy_blob(ref)

    def copy_child(self, child: Descriptor) -> None:
        if self.dst.lookup(self.dst_repo, child.digest).present:
            if child.media_type not in INDEX_MEDIA_TYPES:
                # Present ⇒ its blobs are there; count them without a HEAD each.
                manifest = self.src.manifest(self.src_repo, child.digest)
                for blob in self.parse(manifest):
                    if blob.digest not in self.done_blobs:
                        self.done_blobs.add(blob.digest)
                        self.blobs_skipped += 1
                return
        manifest = self.src.manifest(self.src_repo, child.digest)
        self.copy_manifest_contents(manifest)
        self.put(manifest, child.digest)

    def put(self, manifest: Manifest, reference: str) -> None:
        digest = self.dst.put_manifest(self.dst_repo, reference, manifest.raw, manifest.media_type)
        self.manifests_pushed += 1
        if digest != manifest.digest:
            raise FatalRegistryError(self.dst.name, self.dst_repo,
                                     f"pushed {manifest.digest} but the target answered {digest}")


def copy_image(
    src: BlobRegistry,
    src_repo: str,
    reference: str,
    dst: BlobRegistry,
    dst_repo: str,
    tags: Sequence[str],
    *,
    chunk_size: int | None = None,
) -> CopyResult:
    """Copy ``src/src_repo:reference`` to ``dst/dst_repo`` under each of ``tags``.

    Moves only the blobs the target lacks, streaming and verifying them; PUTs the
    manifests last (children, then the index, then each tag). With no tags, the top
    manifest is pushed by digest. Returns the digest, which equals the source digest.
    """
    tags = [check_tag(t) for t in tags]
    copier = _Copier(src, src_repo, dst, dst_repo, chunk_size)
    top = src.manifest(src_repo, reference)
    top_present = dst.lookup(dst_repo, top.digest).present
    if top_present and top.media_type not in INDEX_MEDIA_TYPES:
        for blob in copier.parse(top):
            copier.done_blobs.add(blob.digest)
            copier.blobs_skipped += 1
    else:
        copier.copy_manifest_contents(top)
    for reference_out in tags or [top.digest]:
        copier.put(top, reference_out)
    result = CopyResult(
        digest=top.digest,
        blobs_copied=copier.blobs_copied,
        bytes_copied=copier.bytes_copied,
        blobs_skipped=copier.blobs_skipped,
        blobs_mounted=copier.blobs_mounted,
        manifests_pushed=copier.manifests_pushed,
    )
    log.info("copied %s/%s:%s → %s/%s %s: %s", src.name, src_repo, reference, dst.name, dst_repo,
             ",".join(tags) or top.digest, result)
    return result
