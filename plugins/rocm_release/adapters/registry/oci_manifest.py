"""What a manifest points to: child manifests (an index) or a config and layers (an image).

Pure parsing of manifest JSON into descriptors; no I/O. ``OciRegistry`` and ``copy_image`` read
manifests through :func:`manifest_references`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from rocm_release.core.names import DIGEST_RE, IMAGE_MEDIA_TYPES, INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES
from rocm_release.core.registry import Manifest

# Layers that registries do not store (their bytes live at ``urls``): never copied.
FOREIGN_LAYER_PREFIXES = (
    "application/vnd.docker.image.rootfs.foreign.",
    "application/vnd.oci.image.layer.nondistributable.",
)


class MalformedManifest(ValueError):
    """A manifest whose JSON lacks what its media type promises."""


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of the bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor inside a manifest: what it points at and how big it is."""

    media_type: str
    digest: str
    size: int
    platform: tuple[str, str] | None = None
    urls: tuple[str, ...] = ()

    @property
    def is_foreign(self) -> bool:
        """A non-distributable layer: its bytes are not in any registry."""
        return bool(self.urls) or self.media_type.startswith(FOREIGN_LAYER_PREFIXES)


@dataclass(frozen=True)
class ManifestReferences:
    """What a manifest points to: child manifests (an index) or config + layers (an image)."""

    manifests: tuple[Descriptor, ...] = ()
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Config first, then layers (the order a client needs them)."""
        return ((self.config,) if self.config else ()) + self.layers


def _descriptor(value: object, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise MalformedManifest(f"{where} is not a JSON object")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise MalformedManifest(f"{where}.digest {digest!r} is not a sha256 digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise MalformedManifest(f"{where}.size {size!r} is not a non-negative integer")
    if not isinstance(media_type, str):
        raise MalformedManifest(f"{where}.mediaType is missing")
    platform = None
    raw_platform = value.get("platform")
    if isinstance(raw_platform, dict):
        platform = (str(raw_platform.get("os", "")), str(raw_platform.get("architecture", "")))
    urls = value.get("urls") or ()
    if not isinstance(urls, list | tuple) or not all(isinstance(u, str) for u in urls):
        raise MalformedManifest(f"{where}.urls is not a list of strings")
    return Descriptor(media_type, digest, size, platform, tuple(urls))


def manifest_references(manifest: Manifest) -> ManifestReferences:
    """Parse what a manifest points to. Raises MalformedManifest (a ValueError)."""
    try:
        doc = json.loads(manifest.raw)
    except ValueError as exc:
        raise MalformedManifest(f"manifest {manifest.digest} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedManifest(f"manifest {manifest.digest} is not a JSON object")
    if manifest.media_type in INDEX_MEDIA_TYPES:
        children = doc.get("manifests")
        if not isinstance(children, list):
            raise MalformedManifest(f"index {manifest.digest} has no 'manifests' list")
        return ManifestReferences(
            manifests=tuple(_descriptor(c, f"manifests[{i}]") for i, c in enumerate(children))
        )
    if manifest.media_type in IMAGE_MEDIA_TYPES:
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise MalformedManifest(f"image manifest {manifest.digest} has no 'layers' list")
        return ManifestReferences(
            config=_descriptor(doc.get("config"), "config"),
            layers=tuple(_descriptor(x, f"layers[{i}]") for i, x in enumerate(layers)),
        )
    raise MalformedManifest(f"media type {manifest.media_type!r} is not one of {', '.join(MANIFEST_MEDIA_TYPES)}")
