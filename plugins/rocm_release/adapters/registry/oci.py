"""The OCI Distribution (Docker Registry HTTP API v2) implementation of :class:`ImageRegistry`.

:class:`OciRegistry` speaks the API with httpx: manifests (Docker v2 and OCI, images and indexes),
labels, tags (paged listing, deletion by digest) and, from :class:`.oci_blobs.OciBlobClient`, blobs.
Requests, auth and the mapping of answers to present / absent / Transient / Fatal are
:mod:`.oci_session`'s; :func:`from_login` and :func:`from_connection` build a client from credentials
or an Airflow Connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from rocm_release.adapters.registry.oci_auth import Scopes
from rocm_release.adapters.registry.oci_blobs import OciBlobClient
from rocm_release.adapters.registry.oci_manifest import (
    Descriptor,
    MalformedManifest,
    ManifestReferences,
    manifest_references,
    sha256_digest,
)
from rocm_release.adapters.registry.oci_session import DEFAULT_TIMEOUT, OciSession, ReferenceNotFound
from rocm_release.core.names import (
    DIGEST_RE,
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    check_digest,
    check_reference,
    check_repository,
    check_tag,
)
from rocm_release.core.registry import FatalRegistryError, LoginCredentials, Lookup, Manifest, TagInfo

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
# distribution refuses manifests over 4 MiB; a bigger answer is not a manifest.
MAX_MANIFEST_BYTES = 4 << 20
ACCEPT_MANIFESTS = ", ".join(MANIFEST_MEDIA_TYPES)
LABEL_PLATFORM = ("linux", "amd64")


class TagDeletionRefused(FatalRegistryError):
    """``delete_tags`` would remove a manifest that a tag outside the deletion set still needs."""


class ConnectionLike(Protocol):
    """The fields of an Airflow Connection that :func:`from_connection` reads."""

    @property
    def conn_id(self) -> str | None: ...
    @property
    def host(self) -> str | None: ...
    @property
    def port(self) -> int | None: ...
    @property
    def schema(self) -> str | None: ...
    @property
    def login(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def extra(self) -> str | None: ...


# --------------------------------------------------------------------------------------------
# The registry


class OciRegistry(OciBlobClient):
    """A registry that speaks the Docker Registry HTTP API v2 / OCI Distribution spec.

    ``host`` is ``name[:port]`` (no scheme). ``transport`` is for tests that stand in for
    the remote server (``httpx.MockTransport``). Close it (or use ``with``) to free sockets.
    """

    def __init__(
        self,
        host: str,
        *,
        scheme: str = "https",
        username: str | None = None,
        password: str | None = None,
        connection_id: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        page_size: int = DEFAULT_PAGE_SIZE,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        super().__init__(OciSession(host, scheme=scheme, username=username, password=password,
                                    connection_id=connection_id, timeout=timeout, transport=transport))
        self.username = username
        self._password = password
        self.page_size = page_size

    # -- plumbing ----------------------------------------------------------------------------

    # The Registry API deletes manifests: every tag on the digest goes with it.
    deletes_by_digest = True

    @property
    def name(self) -> str:
        """Host (and port) of the registry, for messages and image references."""
        return self._http.host

    @property
    def host(self) -> str:
        """``name[:port]``, as given."""
        return self._http.host

    @property
    def scheme(self) -> str:
        """``https`` or ``http``."""
        return self._http.scheme

    @property
    def connection_id(self) -> str | None:
        """The Airflow connection the credentials came from, for messages."""
        return self._http.connection_id

    @property
    def endpoint(self) -> str:
        """``scheme://host[:port]``."""
        return self._http.endpoint

    def __repr__(self) -> str:
        return f"OciRegistry({self.endpoint!r}, connection_id={self.connection_id!r})"

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def __enter__(self) -> OciRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- manifests ---------------------------------------------------------------------------

    def lookup(self, repository: str, tag: str) -> Lookup:
        """HEAD the manifest: present with its digest, or absent. One request (plus auth)."""
        check_repository(repository)
        check_reference(tag)
        what = f"HEAD manifest {tag}"
        url = self._http.url(f"/v2/{repository}/manifests/{tag}")
        resp = self._http.send("HEAD", url, repository, Scopes.of(repository, "pull"),
                          headers={"Accept": ACCEPT_MANIFESTS})
        present, reason = self._http.outcome(resp, repository, what)
        if not present:
            sep = "@" if DIGEST_RE.match(tag) else ":"
            return Lookup(present=False, reason=f"{self.name}/{repository}{sep}{tag}: {reason}")
        media_type = self._http.media_type(resp)
        if media_type is None:
            self._http.fatal(repository, f"{what}: answer has no Content-Type")
        if media_type not in MANIFEST_MEDIA_TYPES:
            self._http.fatal(repository, f"{what}: media type {media_type!r} is not one we read "
                                    f"({', '.join(MANIFEST_MEDIA_TYPES)})")
        digest = self._http.checked_digest(resp.headers.get("docker-content-digest"), repository, what)
        if digest is None:
            # Some registries omit the header on HEAD; the bytes are the truth.
            try:
                digest = self.manifest(repository, tag).digest
            except ReferenceNotFound as exc:
                return Lookup(present=False, reason=str(exc))
        if DIGEST_RE.match(tag) and digest != tag:
            self._http.fatal(repository, f"{what}: asked for {tag}, registry answered {digest}")
        return Lookup(present=True, digest=digest)

    def manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest's exact bytes, media type and (verified) digest. Absent → ReferenceNotFound."""
        check_repository(repository)
        check_reference(reference)
        what = f"GET manifest {reference}"
        url = self._http.url(f"/v2/{repository}/manifests/{reference}")
        resp = self._http.send("GET", url, repository, Scopes.of(repository, "pull"),
                          headers={"Accept": ACCEPT_MANIFESTS}, stream=True)
        present, reason = self._http.outcome(resp, repository, what)
        if not present:
            raise ReferenceNotFound(f"{self.name}/{repository}:{reference}: {reason}")
        try:
            raw = self._http.read_capped(resp, MAX_MANIFEST_BYTES)
        except httpx.HTTPError as exc:
            self._http.transport_error(repository, what, exc)
        finally:
            resp.close()
        if raw is None:
            self._http.fatal(repository, f"{what}: answer is larger than {MAX_MANIFEST_BYTES} bytes")
        media_type = self._http.media_type(resp)
        if media_type is None:
            self._http.fatal(repository, f"{what}: answer has no Content-Type")
        if media_type not in MANIFEST_MEDIA_TYPES:
            self._http.fatal(repository, f"{what}: media type {media_type!r} is not one we read "
                                    f"({', '.join(MANIFEST_MEDIA_TYPES)})")
        digest = sha256_digest(raw)
        header = self._http.checked_digest(resp.headers.get("docker-content-digest"), repository, what)
        if header is not None and header != digest:
            self._http.fatal(repository, f"{what}: Docker-Content-Digest {header} but the bytes hash to {digest}")
        if DIGEST_RE.match(reference) and reference != digest:
            self._http.fatal(repository, f"{what}: the bytes hash to {digest}")
        try:
            doc = json.loads(raw)
        except ValueError:
            self._http.fatal(repository, f"{what}: manifest is not JSON")
        declared = doc.get("mediaType") if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or (declared is not None and declared != media_type):
            self._http.fatal(repository, f"{what}: manifest body does not match its Content-Type {media_type}")
        return Manifest(raw=raw, media_type=media_type, digest=digest)

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
        what = f"PUT manifest {reference}"
        url = self._http.url(f"/v2/{repository}/manifests/{reference}")
        resp = self._http.send("PUT", url, repository, Scopes.of(repository, "pull,push"),
                          headers={"Content-Type": media_type}, content=raw)
        self._http.require_ok(resp, repository, what)
        header = self._http.checked_digest(resp.headers.get("docker-content-digest"), repository, what)
        if header is not None and header != digest:
            self._http.fatal(repository, f"{what}: registry stored it as {header}, the bytes hash to {digest}")
        return digest

    def tag(self, repository: str, digest: str, new_tag: str) -> None:
        """Point ``new_tag`` at ``digest``: GET the manifest, PUT the same bytes. No layer moves."""
        check_digest(digest)
        check_tag(new_tag)
        manifest = self.manifest(repository, digest)
        self.put_manifest(repository, new_tag, manifest.raw, manifest.media_type)

    # -- tags --------------------------------------------------------------------------------

    def tag_names(self, repository: str) -> Iterator[str]:
        """Every tag name, all pages (``?n=page_size``, ``Link: <…>; rel="next"``). One request a page.

        An unknown repository has no tags. Registries that ignore ``n`` (distribution 2.8)
        answer everything in one page, which is fine.
        """
        check_repository(repository)
        url: httpx.URL | None = self._http.url(f"/v2/{repository}/tags/list").copy_merge_params(
            {"n": str(self.page_size)})
        seen_urls: set[str] = set()
        seen_tags: set[str] = set()
        while url is not None:
            if str(url) in seen_urls:
                self._http.fatal(repository, f"tag list pagination loops back to {url}")
            seen_urls.add(str(url))
            what = f"GET {url.path}?{url.query.decode()}"
            resp = self._http.send("GET", url, repository, Scopes.of(repository, "pull"))
            present, _ = self._http.outcome(resp, repository, what)
            if not present:
                return
            try:
                doc = resp.json()
            except ValueError:
                self._http.fatal(repository, f"{what}: answer is not JSON")
            tags = doc.get("tags") if isinstance(doc, dict) else ()
            if tags is None:  # distribution answers "tags": null for an emptied repository
                tags = []
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                self._http.fatal(repository, f"{what}: answer has no 'tags' list of strings")
            for tag_name in tags:
                if tag_name not in seen_tags:
                    seen_tags.add(tag_name)
                    yield tag_name
            link = resp.links.get("next", {}).get("url")
            url = None
            if link:
                url = self._http.url(link)
                if not self._http.same_origin(url):
                    self._http.fatal(repository, f"{what}: next page {link!r} is on another host")

    def list_tags(self, repository: str, *, with_push_times: bool = False) -> Iterator[TagInfo]:
        """Every tag with its digest; ``pushed_at`` only when ``with_push_times``.

        Cost: one request per page, plus one HEAD per tag. With push times, instead of the
        HEAD: the manifest, the platform manifest for an index, and each distinct config blob.
        The registry API has no push time; ``pushed_at`` is the image config's ``created``
        field — the build time, which the pipeline pushes right after — and None when the
        config has none (or the build set it to a fixed epoch for reproducibility: beware).
        A tag that disappears while listing is skipped.
        """
        created_by_config: dict[str, datetime | None] = {}
        for tag_name in self.tag_names(repository):
            if not with_push_times:
                found = self.lookup(repository, tag_name)
                if found.present and found.digest is not None:
                    yield TagInfo(tag=tag_name, digest=found.digest)
                continue
            try:
                top = self.manifest(repository, tag_name)
                image = top
                if top.media_type in INDEX_MEDIA_TYPES:
                    image = self.platform_manifest(repository, top.digest)
            except ReferenceNotFound:
                continue
            config = self.references(repository, image).config
            pushed_at = None
            if config is not None:
                if config.digest not in created_by_config:
                    created_by_config[config.digest] = self._created(repository, config)
                pushed_at = created_by_config[config.digest]
            yield TagInfo(tag=tag_name, digest=top.digest, pushed_at=pushed_at)

    def _created(self, repository: str, config: Descriptor) -> datetime | None:
        try:
            doc = json.loads(self.read_blob(repository, config.digest, size=config.size))
        except (ValueError, ReferenceNotFound):
            return None
        created = doc.get("created") if isinstance(doc, dict) else None
        if not isinstance(created, str):
            return None
        try:
            when = datetime.fromisoformat(created)
        except ValueError:
            return None
        return when if when.tzinfo else when.replace(tzinfo=UTC)

    def delete_tags(self, repository: str, tags: Sequence[str]) -> None:
        """Delete tags by deleting the manifests they point to (the API deletes by digest only).

        Deleting a digest removes *every* tag on it, and breaks any index that lists it.
        So this first reads every tag of the repository and refuses (TagDeletionRefused,
        nothing deleted) when a tag outside ``tags`` points to a doomed digest, directly or
        through an index. Tags already gone are skipped. The check and the deletes are not
        atomic: a tag pushed in between onto a doomed digest is lost with it.
        Cost: one request per tag page, one HEAD per tag, one GET per kept index, one
        DELETE per distinct digest. The registry must allow deletes
        (``storage.delete.enabled``); otherwise it answers 405 → Fatal.
        """
        check_repository(repository)
        wanted = [check_tag(t) for t in tags]
        if not wanted:
            return
        current: dict[str, tuple[str, str]] = {}  # tag → (digest, media type)
        for tag_name in self.tag_names(repository):
            what = f"HEAD manifest {tag_name}"
            resp = self._http.send("HEAD", self._http.url(f"/v2/{repository}/manifests/{tag_name}"), repository,
                              Scopes.of(repository, "pull"), headers={"Accept": ACCEPT_MANIFESTS})
            present, _ = self._http.outcome(resp, repository, what)
            if not present:
                continue
            digest = self._http.checked_digest(resp.headers.get("docker-content-digest"), repository, what)
            media_type = self._http.media_type(resp)
            if digest is None or media_type is None:
                manifest = self.manifest(repository, tag_name)
                digest, media_type = manifest.digest, manifest.media_type
            current[tag_name] = (digest, media_type)
        doomed: dict[str, list[str]] = {}
        for tag_name in wanted:
            if tag_name in current:
                doomed.setdefault(current[tag_name][0], []).append(tag_name)
            else:
                log.info("%s/%s:%s is already gone", self.name, repository, tag_name)
        wanted_set = set(wanted)
        kept = {t: v for t, v in current.items() if t not in wanted_set}
        conflicts: list[str] = []
        for tag_name, (digest, media_type) in sorted(kept.items()):
            if digest in doomed:
                conflicts.append(f"tag {tag_name!r} also points to {digest} "
                                 f"(to be deleted with {', '.join(doomed[digest])})")
            elif media_type in INDEX_MEDIA_TYPES:
                index = self.manifest(repository, digest)
                for child in self.references(repository, index).manifests:
                    if child.digest in doomed:
                        conflicts.append(f"tag {tag_name!r} is an index that lists {child.digest} "
                                         f"(to be deleted with {', '.join(doomed[child.digest])})")
        if conflicts:
            raise TagDeletionRefused(
                self.name, repository,
                "refusing to delete: the registry deletes by digest, which removes every tag on it; "
                + "; ".join(conflicts) + ". Delete those tags too, or point them elsewhere first.",
                self.connection_id,
            )
        for digest, names in doomed.items():
            what = f"DELETE manifest {digest} (tags {', '.join(names)})"
            resp = self._http.send("DELETE", self._http.url(f"/v2/{repository}/manifests/{digest}"), repository,
                              Scopes.of(repository, "delete"))
            present, _ = self._http.outcome(resp, repository, what)
            if not present:
                log.info("%s/%s@%s was already deleted", self.name, repository, digest)

    # -- credentials -------------------------------------------------------------------------

    @property
    def requires_login(self) -> bool:
        """Whether credentials are configured (an anonymous registry needs no ``docker login``)."""
        return self.username is not None

    def login_credentials(self) -> LoginCredentials:
        """Credentials for ``docker login``. Fatal when none are configured (see requires_login)."""
        if self.username is None or self._password is None:
            self._http.fatal("", "no credentials configured for docker login (anonymous registry)")
        return LoginCredentials(registry=self.name, username=self.username, password=self._password)


def from_login(credentials: LoginCredentials, *, scheme: str = "https", **kwargs: Any) -> OciRegistry:
    """An OciRegistry that speaks to ``credentials.registry`` with those (basic) credentials.

    For registries whose credentials come from elsewhere — e.g. ECR: its v2 API accepts
    the ``AWS`` user and the GetAuthorizationToken password, so ``copy_image`` can read
    from ECR through this client.
    """
    host = credentials.registry
    if "://" in host:
        scheme, _, host = host.partition("://")
    return OciRegistry(host.rstrip("/"), scheme=scheme, username=credentials.username,
                       password=credentials.password, **kwargs)


def from_connection(conn: ConnectionLike, **overrides: Any) -> OciRegistry:
    """Build an OciRegistry from an Airflow Connection (or anything with the same fields).

    ``host`` (may carry ``http://``/``https://``), ``port``, ``schema`` = URL scheme
    (default https), ``login``/``password``, ``extra`` JSON: ``scheme``, ``timeout``,
    ``page_size``. Keyword overrides win. Imports nothing from Airflow.
    """
    extra_raw: object = conn.extra
    extra: dict[str, Any] = {}
    if isinstance(extra_raw, str) and extra_raw.strip():
        try:
            loaded = json.loads(extra_raw)
        except ValueError as exc:
            raise ValueError(f"connection {conn.conn_id!r}: extra is not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"connection {conn.conn_id!r}: extra must be a JSON object")
        extra = loaded
    elif isinstance(extra_raw, Mapping):
        extra = dict(extra_raw)
    host = (conn.host or "").strip()
    scheme = (conn.schema or extra.get("scheme") or "").strip().lower()
    if "://" in host:
        url_scheme, _, host = host.partition("://")
        scheme = scheme or url_scheme.lower()
    host = host.rstrip("/")
    if not host:
        raise ValueError(f"connection {conn.conn_id!r} has no host")
    if conn.port:
        host = f"{host}:{conn.port}"
    kwargs: dict[str, Any] = {
        "scheme": scheme or "https",
        "username": conn.login or None,
        "password": conn.password if conn.login else None,
        "connection_id": conn.conn_id,
    }
    if "timeout" in extra:
        kwargs["timeout"] = float(extra["timeout"])
    if "page_size" in extra:
        kwargs["page_size"] = int(extra["page_size"])
    kwargs.update(overrides)
    return OciRegistry(host, **kwargs)
