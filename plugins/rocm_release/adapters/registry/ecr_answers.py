"""Reading ECR's API answers: required fields, digests, JSON documents, manifests, image configs.

Pure: no calls to AWS. Anything that is not what the API documents raises :class:`MalformedAnswer`,
which :class:`~.ecr.EcrRegistry` reports as fatal.
"""

from __future__ import annotations

import json
from typing import Any

from rocm_release.adapters.registry.ecr_errors import MalformedAnswer
from rocm_release.adapters.registry.oci_manifest import sha256_digest
from rocm_release.core.names import DIGEST_RE, MANIFEST_MEDIA_TYPES
from rocm_release.core.registry import Manifest


def image_id(reference: str) -> dict[str, str]:
    """The ``imageId`` that names a tag or a digest in ECR requests."""
    return {"imageDigest": reference} if DIGEST_RE.match(reference) else {"imageTag": reference}


def required_str(data: Any, key: str, where: str) -> str:
    """``data[key]``, a non-empty string."""
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise MalformedAnswer(f"{where} has no {key!r}")
    return value


def digest_field(data: Any, key: str, where: str) -> str:
    """``data[key]``, a sha256 digest."""
    value = required_str(data, key, where)
    if not DIGEST_RE.match(value):
        raise MalformedAnswer(f"{where} has {key}={value!r}, not a sha256 digest")
    return value


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    """``raw`` parsed as a JSON object."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedAnswer(f"{what} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise MalformedAnswer(f"{what} is not a JSON object")
    return document


def stored_manifest(reference: str, images: list[Any]) -> Manifest:
    """The manifest BatchGetImage returned for ``reference``: one digest, bytes that hash to it."""
    if not images:
        raise MalformedAnswer("BatchGetImage returned neither images nor failures")
    image = images[0]
    text = required_str(image, "imageManifest", "BatchGetImage image")
    raw = text.encode("utf-8")
    digest = digest_field(image.get("imageId"), "imageDigest", "BatchGetImage imageId")
    if any(digest_field(i.get("imageId"), "imageDigest", "BatchGetImage imageId") != digest for i in images):
        raise MalformedAnswer(f"BatchGetImage returned several digests for {reference!r}")
    if DIGEST_RE.match(reference) and digest != reference:
        raise MalformedAnswer(f"asked for {reference}, got {digest}")
    if sha256_digest(raw) != digest:
        raise MalformedAnswer(f"manifest bytes hash to {sha256_digest(raw)}, ECR says {digest}")
    media_type = image.get("imageManifestMediaType") or json_object(raw, "manifest").get("mediaType")
    if media_type not in MANIFEST_MEDIA_TYPES:
        raise MalformedAnswer(f"manifest media type {media_type!r} is not one of {MANIFEST_MEDIA_TYPES}")
    return Manifest(raw=raw, media_type=str(media_type), digest=digest)


def platform_child(index_raw: bytes, platform: str) -> str:
    """The digest of the index entry for ``platform`` (``os/arch``; attestation entries never match)."""
    entries = json_object(index_raw, "index").get("manifests")
    if not isinstance(entries, list):
        raise MalformedAnswer("index has no 'manifests' list")
    os_name, _, arch = platform.partition("/")
    seen = []
    for entry in entries:
        entry_platform = entry.get("platform") if isinstance(entry, dict) else None
        if not isinstance(entry_platform, dict):
            continue
        seen.append(f"{entry_platform.get('os')}/{entry_platform.get('architecture')}")
        if entry_platform.get("os") == os_name and entry_platform.get("architecture") == arch:
            return digest_field(entry, "digest", "index entry")
    raise MalformedAnswer(f"index has no {platform} image (it has {seen})")


def config_descriptor(manifest_raw: bytes, max_bytes: int) -> tuple[str, int]:
    """The config digest an image manifest names, and how many bytes to accept for it (its declared
    size when that is sane, else ``max_bytes``)."""
    config = json_object(manifest_raw, "manifest").get("config")
    config_digest = digest_field(config, "digest", "manifest config")
    declared = config.get("size") if isinstance(config, dict) else None
    limit = declared if isinstance(declared, int) and 0 <= declared <= max_bytes else max_bytes
    return config_digest, limit


def config_labels(blob: bytes, config_digest: str) -> dict[str, str]:
    """``config.Labels`` of an image config blob that must hash to ``config_digest`` ({} when none)."""
    if sha256_digest(blob) != config_digest:
        raise MalformedAnswer(f"config blob hashes to {sha256_digest(blob)}, the manifest names {config_digest}")
    image_config = json_object(blob, "image config").get("config") or {}
    if not isinstance(image_config, dict):
        raise MalformedAnswer("image config 'config' is not an object")
    labels = image_config.get("Labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise MalformedAnswer(f"image config Labels is not a string map: {labels!r}")
    return dict(labels)
