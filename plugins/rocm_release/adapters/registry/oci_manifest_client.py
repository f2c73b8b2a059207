"""The manifest endpoints of the OCI Distribution API: look up, read (verified), write, tag; labels.

Manifests are read byte for byte and checked against their digest and media type; an image's
labels come from its config blob (the ``linux/amd64`` entry of an index). Answers map to present /
absent / error as :mod:`.oci_session` describes.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from rocm_release.adapters.registry.oci_auth import Scopes
from rocm_release.adapters.registry.oci_blob_client import OciBlobClient
from rocm_release.adapters.registry.oci_manifest import (
    MalformedManifest,
    ManifestReferences,
    manifest_references,
    sha256_digest,
)
from rocm_release.adapters.registry.oci_session import ReferenceNotFound
from rocm_release.core.names import (
    DIGEST_RE,
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    check_digest,
    check_reference,
    check_repository,
    check_tag,
)
from rocm_release.core.registry import Lookup, Manifest

# distribution refuses manifests over 4 MiB; a bigger answer is not a manifest.
MAX_MANIFEST_BYTES = 4 << 20
ACCEPT_MANIFESTS = ", ".join(MANIFEST_MEDIA_TYPES)
LABEL_PLATFORM = ("linux", "amd64")


class OciManifestClient(OciBlobClient):
    """Manifest operations (and blobs, inherited) on one registry. :class:`~.oci.OciRegistry` is one."""

    def lookup(self, repository: str, tag: str) -> Lookup:
        """HEAD the manifest: present with its digest, or absent. One request (plus auth)."""
        check_repository(repository)
        check_reference(tag)
        http = self._http
        what = f"HEAD manifest {tag}"
        url = http.url(f"/v2/{repository}/manifests/{tag}")
        resp = http.send("HEAD", url, repository, Scopes.of(repository, "pull"),
                         headers={"Accept": ACCEPT_MANIFESTS})
        present, reason = http.outcome(resp, repository, what)
        if not present:
            sep = "@" if DIGEST_RE.match(tag) else ":"
            return Lookup(present=False, reason=f"{http.host}/{repository}{sep}{tag}: {reason}")
        self._manifest_media_type(resp, repository, what)
        digest = http.checked_digest(resp.headers.get("docker-content-digest"), repository, what)
        if digest is None:
            # Some registries omit the header on HEAD; the bytes are the truth.
            try:
                digest = self.manifest(repository, tag).digest
            except ReferenceNotFound as exc:
                return Lookup(present=False, reason=str(exc))
        if DIGEST_RE.match(tag) and digest != tag:
            http.fatal(repository, f"{what}: asked for {tag}, registry answered {digest}")
        return Lookup(present=True, digest=digest)

    def manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest's exact bytes, media type and (verified) digest. Absent → ReferenceNotFound."""
        check_repository(repository)
        check_reference(reference)
        http = self._http
        what = f"GET manifest {reference}"
        url = http.url(f"/v2/{repository}/manifests/{reference}")
        resp = http.send("GET", url, repository, Scopes.of(repository, "pull"),
                         headers={"Accept": ACCEPT_MANIFESTS}, stream=True)
        present, reason = http.outcome(resp, repository, what)
        if not present:
            raise ReferenceNotFound(f"{http.host}/{repository}:{reference}: {reason}")
        raw = self._read_manifest_body(resp, repository, what)
        media_type = self._manifest_media_type(resp, repository, what)
        digest = sha256_digest(raw)
        header = http.checked_digest(resp.headers.get("docker-content-digest"), repository, what)
        if header is not None and header != digest:
            http.fatal(repository, f"{what}: Docker-Content-Digest {header} but the bytes hash to {digest}")
        if DIGEST_RE.match(reference) and reference != digest:
            http.fatal(repository, f"{what}: the bytes hash to {digest}")
        self._check_declared_media_type(raw, media_type, repository, what)
        return Manifest(raw=raw, media_type=media_type, digest=digest)

    def _read_manifest_body(self, resp: httpx.Response, repository: str, what: str) -> bytes:
        """The body of a streamed manifest answer (closed after), at most MAX_MANIFEST_BYTES."""
        try:
            raw = self._http.read_capped(resp, MAX_MANIFEST_BYTES)
        except httpx.HTTPError as exc:
            self._http.transport_error(repository, what, exc)
        finally:
            resp.close()
        if raw is None:
            self._http.fatal(repository, f"{what}: answer is larger than {MAX_MANIFEST_BYTES} bytes")
        return raw

    def _manifest_media_type(self, resp: httpx.Response, repository: str, what: str) -> str:
        """The answer's Content-Type, which must be a manifest media type we read."""
        media_type = self._http.media_type(resp)
        if media_type is None:
            self._http.fatal(repository, f"{what}: answer has no Content-Type")
        if media_type not in MANIFEST_MEDIA_TYPES:
            self._http.fatal(repository, f"{what}: media type {media_type!r} is not one we read "
                                         f"({', '.join(MANIFEST_MEDIA_TYPES)})")
        return media_type

    def _check_declared_media_type(self, raw: bytes, media_type: str, repository: str, what: str) -> None:
        """The body is a JSON object whose ``mediaType`` (when it has one) is the Content-Type."""
        try:
            doc = json.loads(raw)
        except ValueError:
            self._http.fatal(repository, f"{what}: manifest is not JSON")
        declared = doc.get("mediaType") if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or (declared is not None and declared != media_type):
            self._http.fatal(repository, f"{what}: manifest body does not match its Content-Type {media_type}")

    def references(self, repository: str, manifest: Manifest) -> ManifestReferences:
        """What ``manifest`` points to; a malformed manifest is Fatal."""
        try:
            return manifest_references(manifest)
        except MalformedManifest as exc:
            self._http.fatal(repository, str(exc))

    def platform_manifest(self, repository: str, reference: str,
                          platform: tuple[str, str] = LABEL_PLATFORM) -> Manifest:
        """The image manifest for ``reference``: itself, or the index's entry for ``platform``."""
        top = self.manifest(repository, reference)
        if top.media_type not in INDEX_MEDIA_TYPES:
            return top
        for child in self.references(repository, top).manifests:
            if child.platform == platform:
                return self.manifest(repository, child.digest)
        self._http.fatal(repository, f"index {reference} ({top.digest}) has no {'/'.join(platform)} entry")

    def image_config(self, repository: str, reference: str) -> dict[str, Any]:
        """The image config JSON (linux/amd64 entry for an index), verified against its digest."""
        image = self.platform_manifest(repository, reference)
        config = self.references(repository, image).config
        if config is None:  # pragma: no cover - manifest_references always sets it for images
            self._http.fatal(repository, f"manifest {image.digest} has no config")
        raw = self.read_blob(repository, config.digest, size=config.size)
        try:
            doc = json.loads(raw)
        except ValueError:
            self._http.fatal(repository, f"config blob {config.digest} is not JSON")
        if not isinstance(doc, dict):
            self._http.fatal(repository, f"config blob {config.digest} is not a JSON object")
        return doc

    def labels(self, repository: str, reference: str) -> dict[str, str]:
        """``config.Labels`` of the image (linux/amd64 for an index); empty when it has none.

        Costs two requests for an image manifest (manifest + config blob), three for an
        index (index + platform manifest + config blob).
        """
        doc = self.image_config(repository, reference)
        config = doc.get("config") or {}
        labels = config.get("Labels") if isinstance(config, dict) else None
        if labels is None:
            return {}
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            self._http.fatal(repository, f"{reference}: config.Labels is not a map of strings")
        return dict(labels)

    def put_manifest(self, repository: str, reference: str, raw: bytes, media_type: str) -> str:
        """PUT the exact bytes under a tag or their digest; returns the digest (verified)."""
        check_repository(repository)
        check_reference(reference)
        if media_type not in MANIFEST_MEDIA_TYPES:
            raise ValueError(f"media type {media_type!r} is not one of {', '.join(MANIFEST_MEDIA_TYPES)}")
        digest = sha256_digest(raw)
        if DIGEST_RE.match(reference) and reference != digest:
            raise ValueError(f"manifest bytes hash to {digest}, not to the reference {reference}")
        http = self._http
        what = f"PUT manifest {reference}"
        url = http.url(f"/v2/{repository}/manifests/{reference}")
        resp = http.send("PUT", url, repository, Scopes.of(repository, "pull,push"),
                         headers={"Content-Type": media_type}, content=raw)
        http.require_ok(resp, repository, what)
        header = http.checked_digest(resp.headers.get("docker-content-digest"), repository, what)
        if header is not None and header != digest:
            http.fatal(repository, f"{what}: registry stored it as {header}, the bytes hash to {digest}")
        return digest

    def tag(self, repository: str, digest: str, new_tag: str) -> None:
        """Point ``new_tag`` at ``digest``: GET the manifest, PUT the same bytes. No layer moves."""
        check_digest(digest)
        check_tag(new_tag)
        manifest = self.manifest(repository, digest)
        self.put_manifest(repository, new_tag, manifest.raw, manifest.media_type)
