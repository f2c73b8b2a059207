"""The OCI Distribution (Docker Registry HTTP API v2) implementation of :class:`ImageRegistry`.

Speaks the API with httpx: manifests (Docker v2 and OCI, images and indexes), tags,
blobs (streamed, verified), uploads (monolithic or chunked, cross-repository mount),
basic auth and the bearer-token challenge flow that Docker Hub uses.

Every answer is mapped strictly to one of the three outcomes of ``base.py``:

* 2xx → present; 404 or the registry error codes ``MANIFEST_UNKNOWN``, ``NAME_UNKNOWN``,
  ``BLOB_UNKNOWN`` → absent (a ``Lookup`` with ``present=False``, ``False`` from
  ``has_blob``, :class:`ReferenceNotFound` where a value is needed);
* refused connections, timeouts, 408, 429 and 5xx → :class:`TransientRegistryError`;
* 401/403 after the auth flow, any other status, and malformed answers (bad JSON, a
  digest that does not verify, a missing or unknown content type) → :class:`FatalRegistryError`.

Note that Docker Hub answers 401, not 404, for a repository that does not exist when
the caller may not see it: that is reported as Fatal, never as absent.

No call retries except the one retry that the auth challenge needs; retrying an outage
is the caller's business (a sensor pokes again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any, NoReturn, Protocol

import httpx

from rocm_release.adapters.registry.blob_stream import READ_CHUNK, BlobReader, iter_source, rechunk
from rocm_release.adapters.registry.oci_auth import OciAuth, Scopes, parse_challenge
from rocm_release.adapters.registry.oci_manifest import (
    Descriptor,
    MalformedManifest,
    ManifestReferences,
    manifest_references,
    sha256_digest,
)
from rocm_release.core.names import (
    DIGEST_RE,
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    check_digest,
    check_reference,
    check_repository,
    check_tag,
)
from rocm_release.core.registry import (
    FatalRegistryError,
    LoginCredentials,
    Lookup,
    Manifest,
    RegistryError,
    TagInfo,
    TransientRegistryError,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
DEFAULT_PAGE_SIZE = 100
# distribution refuses manifests over 4 MiB; a bigger answer is not a manifest.
MAX_MANIFEST_BYTES = 4 << 20
# read_blob() is for small blobs (image configs, SHA256SUMS); layers are streamed.
MAX_SMALL_BLOB_BYTES = 64 << 20
MAX_ERROR_BODY = 64 << 10

ACCEPT_MANIFESTS = ", ".join(MANIFEST_MEDIA_TYPES)
# Registry error codes that mean "definitively not there".
ABSENT_CODES = frozenset({"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"})
LABEL_PLATFORM = ("linux", "amd64")

# A host name or bracketed IP address, with an optional port: what goes between "//" and the path.
_HOST_RE = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$")


class ReferenceNotFound(LookupError):
    """The registry said definitively that a manifest or blob is not there (HTTP 404)."""


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


class OciRegistry:
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
        if scheme not in ("https", "http"):
            raise ValueError(f"scheme {scheme!r} is not 'https' or 'http'")
        if not _HOST_RE.match(host):
            raise ValueError(f"host {host!r} is not 'name[:port]' (no scheme, no path)")
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        self.host = host
        self.scheme = scheme
        self.username = username
        self._password = password
        self.connection_id = connection_id
        self.page_size = page_size
        self._base = httpx.URL(f"{scheme}://{host}")
        self._client = httpx.Client(timeout=timeout, transport=transport, trust_env=False)
        self._auth = OciAuth(host, scheme=scheme, username=username, password=password,
                             connection_id=connection_id, transmit=self._transmit)

    # -- plumbing ----------------------------------------------------------------------------

    # The Registry API deletes manifests: every tag on the digest goes with it.
    deletes_by_digest = True

    @property
    def name(self) -> str:
        """Host (and port) of the registry, for messages and image references."""
        return self.host

    @property
    def endpoint(self) -> str:
        """``scheme://host[:port]``."""
        return str(self._base).rstrip("/")

    def __repr__(self) -> str:
        return f"OciRegistry({self.endpoint!r}, connection_id={self.connection_id!r})"

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    def __enter__(self) -> OciRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fatal(self, repository: str, detail: str) -> NoReturn:
        raise FatalRegistryError(self.name, repository, detail, self.connection_id)

    def _transient(self, repository: str, detail: str) -> NoReturn:
        raise TransientRegistryError(self.name, repository, detail, self.connection_id)

    def _url(self, path: str) -> httpx.URL:
        return self._base.join(path)

    def _same_origin(self, url: httpx.URL) -> bool:
        return (url.scheme, url.host, url.port) == (self._base.scheme, self._base.host, self._base.port)

    def _transport_error(self, repository: str, what: str, exc: Exception) -> NoReturn:
        """Map an httpx exception: configuration mistakes are Fatal, the network is Transient."""
        text = f"{what}: {type(exc).__name__}: {exc}"
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.InvalidURL):
            self._fatal(repository, text)
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "WRONG_VERSION_NUMBER" in str(exc):
            self._fatal(repository, f"{text} (TLS set-up; check the scheme and the CA bundle)")
        if isinstance(exc, httpx.TransportError):
            self._transient(repository, text)
        self._fatal(repository, text)

    def _transmit(
        self,
        method: str,
        url: httpx.URL,
        repository: str,
        headers: dict[str, str],
        content: bytes | Iterable[bytes] | None,
        *,
        stream: bool,
        follow_redirects: bool,
    ) -> httpx.Response:
        request = self._client.build_request(method, url, headers=headers, content=content)
        try:
            return self._client.send(request, stream=stream, follow_redirects=follow_redirects)
        except httpx.HTTPError as exc:
            self._transport_error(repository, f"{method} {url.path}", exc)

    def _send(
        self,
        method: str,
        url: httpx.URL,
        repository: str,
        scopes: Scopes,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | Iterable[bytes] | None = None,
        stream: bool = False,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        """One request with auth. A 401 with a Bearer challenge fetches a token and retries once."""
        hdrs = dict(headers or {})
        if self._same_origin(url):
            auth = self._auth.authorization(scopes, repository)
            if auth:
                hdrs["Authorization"] = auth
        resp = self._transmit(method, url, repository, hdrs, content, stream=stream,
                              follow_redirects=follow_redirects)
        if resp.status_code != 401 or not self._same_origin(url):
            return resp
        challenge = parse_challenge(resp.headers.get("www-authenticate", ""))
        replayable = content is None or isinstance(content, bytes)
        if challenge is None or challenge.scheme != "bearer" or not replayable:
            # Basic: the credentials (if any) were already sent; a 401 is the answer.
            return resp
        resp.close()
        hdrs["Authorization"] = self._auth.answer_challenge(challenge, scopes, repository)
        return self._transmit(method, url, repository, hdrs, content, stream=stream,
                              follow_redirects=follow_redirects)

    @staticmethod
    def _read_capped(resp: httpx.Response, cap: int) -> bytes | None:
        """The body, or None when it is longer than ``cap`` (reads at most cap+1 bytes)."""
        parts: list[bytes] = []
        total = 0
        for chunk in resp.iter_bytes():
            parts.append(chunk)
            total += len(chunk)
            if total > cap:
                return None
        return b"".join(parts)

    def _error_text(self, resp: httpx.Response) -> tuple[frozenset[str], str]:
        """Registry error codes and a short text from an error answer."""
        try:
            body = self._read_capped(resp, MAX_ERROR_BODY) or b""
        except httpx.HTTPError:
            body = b""
        codes: set[str] = set()
        messages: list[str] = []
        try:
            doc = json.loads(body) if body else None
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("errors"), list):
            for err in doc["errors"]:
                if isinstance(err, dict) and isinstance(err.get("code"), str):
                    codes.add(err["code"])
                    messages.append(f"{err['code']}: {err.get('message', '')}")
        text = "; ".join(messages) or body[:200].decode("utf-8", "replace").strip()
        return frozenset(codes), text

    def _outcome(self, resp: httpx.Response, repository: str, what: str) -> tuple[bool, str]:
        """(True, "") for 2xx, (False, reason) for a definitive absence; raises otherwise."""
        status = resp.status_code
        if 200 <= status < 300:
            return True, ""
        try:
            codes, text = self._error_text(resp)
        finally:
            resp.close()
        detail = f"{what}: HTTP {status}" + (f" ({text})" if text else "")
        if status in (401, 403):
            challenge = resp.headers.get("www-authenticate", "")
            hint = f"; challenge: {challenge}" if challenge else ""
            self._fatal(repository, f"{detail}: credentials missing or refused{hint}")
        if status in (408, 429) or status >= 500:
            self._transient(repository, detail)
        if status == 404 or codes & ABSENT_CODES:
            return False, ", ".join(sorted(codes)) or f"HTTP {status}"
        self._fatal(repository, detail)

    def _require_ok(self, resp: httpx.Response, repository: str, what: str) -> None:
        """A write: anything but 2xx is an error (a 404 here is not 'absent', it is a failure)."""
        present, reason = self._outcome(resp, repository, what)
        if not present:
            self._fatal(repository, f"{what}: registry answered {reason}")

    def _checked_digest(self, header: str | None, repository: str, what: str) -> str | None:
        if header is None:
            return None
        if not DIGEST_RE.match(header):
            self._fatal(repository, f"{what}: Docker-Content-Digest {header!r} is not a sha256 digest")
        return header

    @staticmethod
    def _media_type(resp: httpx.Response) -> str | None:
        value = resp.headers.get("content-type")
        return value.split(";", 1)[0].strip() if value else None

    # -- manifests ---------------------------------------------------------------------------

    def lookup(self, repository: str, tag: str) -> Lookup:
        """HEAD the manifest: present with its digest, or absent. One request (plus auth)."""
        check_repository(repository)
        check_reference(tag)
        what = f"HEAD manifest {tag}"
        url = self._url(f"/v2/{repository}/manifests/{tag}")
        resp = self._send("HEAD", url, repository, Scopes.of(repository, "pull"),
                          headers={"Accept": ACCEPT_MANIFESTS})
        present, reason = self._outcome(resp, repository, what)
        if not present:
            sep = "@" if DIGEST_RE.match(tag) else ":"
            return Lookup(present=False, reason=f"{self.name}/{repository}{sep}{tag}: {reason}")
        media_type = self._media_type(resp)
        if media_type is None:
            self._fatal(repository, f"{what}: answer has no Content-Type")
        if media_type not in MANIFEST_MEDIA_TYPES:
            self._fatal(repository, f"{what}: media type {media_type!r} is not one we read "
                                    f"({', '.join(MANIFEST_MEDIA_TYPES)})")
        digest = self._checked_digest(resp.headers.get("docker-content-digest"), repository, what)
        if digest is None:
            # Some registries omit the header on HEAD; the bytes are the truth.
            try:
                digest = self.manifest(repository, tag).digest
            except ReferenceNotFound as exc:
                return Lookup(present=False, reason=str(exc))
        if DIGEST_RE.match(tag) and digest != tag:
            self._fatal(repository, f"{what}: asked for {tag}, registry answered {digest}")
        return Lookup(present=True, digest=digest)

    def manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest's exact bytes, media type and (verified) digest. Absent → ReferenceNotFound."""
        check_repository(repository)
        check_reference(reference)
        what = f"GET manifest {reference}"
        url = self._url(f"/v2/{repository}/manifests/{reference}")
        resp = self._send("GET", url, repository, Scopes.of(repository, "pull"),
                          headers={"Accept": ACCEPT_MANIFESTS}, stream=True)
        present, reason = self._outcome(resp, repository, what)
        if not present:
            raise ReferenceNotFound(f"{self.name}/{repository}:{reference}: {reason}")
        try:
            raw = self._read_capped(resp, MAX_MANIFEST_BYTES)
        except httpx.HTTPError as exc:
            self._transport_error(repository, what, exc)
        finally:
            resp.close()
        if raw is None:
            self._fatal(repository, f"{what}: answer is larger than {MAX_MANIFEST_BYTES} bytes")
        media_type = self._media_type(resp)
        if media_type is None:
            self._fatal(repository, f"{what}: answer has no Content-Type")
        if media_type not in MANIFEST_MEDIA_TYPES:
            self._fatal(repository, f"{what}: media type {media_type!r} is not one we read "
                                    f"({', '.join(MANIFEST_MEDIA_TYPES)})")
        digest = sha256_digest(raw)
        header = self._checked_digest(resp.headers.get("docker-content-digest"), repository, what)
        if header is not None and header != digest:
            self._fatal(repository, f"{what}: Docker-Content-Digest {header} but the bytes hash to {digest}")
        if DIGEST_RE.match(reference) and reference != digest:
            self._fatal(repository, f"{what}: the bytes hash to {digest}")
        try:
            doc = json.loads(raw)
        except ValueError:
            self._fatal(repository, f"{what}: manifest is not JSON")
        declared = doc.get("mediaType") if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or (declared is not None and declared != media_type):
            self._fatal(repository, f"{what}: manifest body does not match its Content-Type {media_type}")
        return Manifest(raw=raw, media_type=media_type, digest=digest)

    def references(self, repository: str, manifest: Manifest) -> ManifestReferences:
        """What ``manifest`` points to; a malformed manifest is Fatal."""
        try:
            return manifest_references(manifest)
        except MalformedManifest as exc:
            self._fatal(repository, str(exc))

    def platform_manifest(self, repository: str, reference: str,
                          platform: tuple[str, str] = LABEL_PLATFORM) -> Manifest:
        """The image manifest for ``reference``: itself, or the index's entry for ``platform``."""
        top = self.manifest(repository, reference)
        if top.media_type not in INDEX_MEDIA_TYPES:
            return top
        for child in self.references(repository, top).manifests:
            if child.platform == platform:
                return self.manifest(repository, child.digest)
        self._fatal(repository, f"index {reference} ({top.digest}) has no {'/'.join(platform)} entry")

    def image_config(self, repository: str, reference: str) -> dict[str, Any]:
        """The image config JSON (linux/amd64 entry for an index), verified against its digest."""
        image = self.platform_manifest(repository, reference)
        config = self.references(repository, image).config
        if config is None:  # pragma: no cover - manifest_references always sets it for images
            self._fatal(repository, f"manifest {image.digest} has no config")
        raw = self.read_blob(repository, config.digest, size=config.size)
        try:
            doc = json.loads(raw)
        except ValueError:
            self._fatal(repository, f"config blob {config.digest} is not JSON")
        if not isinstance(doc, dict):
            self._fatal(repository, f"config blob {config.digest} is not a JSON object")
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
            self._fatal(repository, f"{reference}: config.Labels is not a map of strings")
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
        url = self._url(f"/v2/{repository}/manifests/{reference}")
        resp = self._send("PUT", url, repository, Scopes.of(repository, "pull,push"),
                          headers={"Content-Type": media_type}, content=raw)
        self._require_ok(resp, repository, what)
        header = self._checked_digest(resp.headers.get("docker-content-digest"), repository, what)
        if header is not None and header != digest:
            self._fatal(repository, f"{what}: registry stored it as {header}, the bytes hash to {digest}")
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
        url: httpx.URL | None = self._url(f"/v2/{repository}/tags/list").copy_merge_params(
            {"n": str(self.page_size)})
        seen_urls: set[str] = set()
        seen_tags: set[str] = set()
        while url is not None:
            if str(url) in seen_urls:
                self._fatal(repository, f"tag list pagination loops back to {url}")
            seen_urls.add(str(url))
            what = f"GET {url.path}?{url.query.decode()}"
            resp = self._send("GET", url, repository, Scopes.of(repository, "pull"))
            present, _ = self._outcome(resp, repository, what)
            if not present:
                return
            try:
                doc = resp.json()
            except ValueError:
                self._fatal(repository, f"{what}: answer is not JSON")
            tags = doc.get("tags") if isinstance(doc, dict) else ()
            if tags is None:  # distribution answers "tags": null for an emptied repository
                tags = []
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                self._fatal(repository, f"{what}: answer has no 'tags' list of strings")
            for tag_name in tags:
                if tag_name not in seen_tags:
                    seen_tags.add(tag_name)
                    yield tag_name
            link = resp.links.get("next", {}).get("url")
            url = None
            if link:
                url = self._base.join(link)
                if not self._same_origin(url):
                    self._fatal(repository, f"{what}: next page {link!r} is on another host")

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
            resp = self._send("HEAD", self._url(f"/v2/{repository}/manifests/{tag_name}"), repository,
                              Scopes.of(repository, "pull"), headers={"Accept": ACCEPT_MANIFESTS})
            present, _ = self._outcome(resp, repository, what)
            if not present:
                continue
            digest = self._checked_digest(resp.headers.get("docker-content-digest"), repository, what)
            media_type = self._media_type(resp)
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
            resp = self._send("DELETE", self._url(f"/v2/{repository}/manifests/{digest}"), repository,
                              Scopes.of(repository, "delete"))
            present, _ = self._outcome(resp, repository, what)
            if not present:
                log.info("%s/%s@%s was already deleted", self.name, repository, digest)

    # -- blobs -------------------------------------------------------------------------------

    def has_blob(self, repository: str, digest: str) -> bool:
        """HEAD the blob: True present, False absent (errors raise)."""
        check_repository(repository)
        check_digest(digest)
        resp = self._send("HEAD", self._url(f"/v2/{repository}/blobs/{digest}"), repository,
                          Scopes.of(repository, "pull"), follow_redirects=True)
        present, _ = self._outcome(resp, repository, f"HEAD blob {digest}")
        return present

    @contextmanager
    def open_blob(self, repository: str, digest: str, *, size: int | None = None) -> Iterator[BlobReader]:
        """Stream a blob; the reader verifies size (when given) and sha256 at its end.

        Absent → ReferenceNotFound. The registry may redirect to storage (S3); the
        redirect is followed and our credentials are not sent to the other host.
        """
        check_repository(repository)
        check_digest(digest)
        what = f"GET blob {digest}"
        resp = self._send("GET", self._url(f"/v2/{repository}/blobs/{digest}"), repository,
                          Scopes.of(repository, "pull"), stream=True, follow_redirects=True)
        present, reason = self._outcome(resp, repository, what)
        if not present:
            raise ReferenceNotFound(f"{self.name}/{repository}@{digest}: {reason}")

        def fail(detail: str) -> NoReturn:
            self._fatal(repository, detail)

        def transport_error(exc: Exception) -> NoReturn:
            self._transport_error(repository, what, exc)

        try:
            yield BlobReader(resp.iter_bytes(READ_CHUNK), digest, size, fail, transport_error)
        finally:
            resp.close()

    def read_blob(self, repository: str, digest: str, *, size: int | None = None,
                  max_size: int = MAX_SMALL_BLOB_BYTES) -> bytes:
        """A small blob's verified bytes (configs, checksum files). Larger than max_size → Fatal."""
        if size is not None and size > max_size:
            raise ValueError(f"blob {digest} has {size} bytes, more than read_blob's {max_size}; stream it")
        with self.open_blob(repository, digest, size=size) as reader:
            parts: list[bytes] = []
            total = 0
            for chunk in reader.iter_chunks():
                total += len(chunk)
                if total > max_size:
                    self._fatal(repository, f"blob {digest} is larger than {max_size} bytes")
                parts.append(chunk)
            return b"".join(parts)

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Cross-repository mount within this registry. True when mounted (201), no bytes moved.

        False when the registry started a normal upload instead (202: the blob is not in
        ``from_repository``, or mounting is not allowed); that upload is cancelled.
        """
        check_repository(repository)
        check_repository(from_repository)
        check_digest(digest)
        url = self._url(f"/v2/{repository}/blobs/uploads/").copy_merge_params(
            {"mount": digest, "from": from_repository})
        what = f"POST mount {digest} from {from_repository}"
        resp = self._send("POST", url, repository, Scopes.of(repository, "pull,push", from_repository))
        self._require_ok(resp, repository, what)
        if resp.status_code == 201:
            return True
        location = resp.headers.get("location")
        if location:
            self._cancel_upload(repository, self._base.join(location))
        return False

    def push_blob(
        self,
        repository: str,
        digest: str,
        data: bytes | Iterable[bytes] | IO[bytes],
        *,
        size: int | None = None,
        chunk_size: int | None = None,
    ) -> int:
        """Upload a blob, streaming; returns the bytes sent. Verifies the digest on both sides.

        ``chunk_size=None``: one streamed PUT (``Content-Length`` set when ``size`` is known).
        ``chunk_size=N``: PATCH chunks of N bytes with ``Content-Range`` (at most N bytes in
        memory), then a closing PUT — for registries that limit request sizes.
        A failed upload is cancelled (best effort) before the error is raised.
        """
        check_repository(repository)
        check_digest(digest)
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        scopes = Scopes.of(repository, "pull,push")
        resp = self._send("POST", self._url(f"/v2/{repository}/blobs/uploads/"), repository, scopes)
        self._require_ok(resp, repository, f"POST upload {digest}")
        location = resp.headers.get("location")
        if resp.status_code != 202 or not location:
            self._fatal(repository, f"POST upload {digest}: expected 202 with a Location, got "
                                    f"HTTP {resp.status_code}")
        upload = self._base.join(location)
        hasher = hashlib.sha256()
        sent = 0

        def counted(chunks: Iterable[bytes]) -> Iterator[bytes]:
            nonlocal sent
            for chunk in chunks:
                if chunk:
                    hasher.update(chunk)
                    sent += len(chunk)
                    yield chunk

        completed = False
        try:
            if chunk_size is None:
                headers = {"Content-Type": "application/octet-stream"}
                if size is not None:
                    headers["Content-Length"] = str(size)
                body: bytes | Iterator[bytes] = (
                    data if isinstance(data, bytes) else counted(iter_source(data, READ_CHUNK)))
                if isinstance(body, bytes):
                    hasher.update(body)
                    sent = len(body)
                final = upload.copy_merge_params({"digest": digest})
                resp = self._send("PUT", final, repository, scopes, headers=headers, content=body)
            else:
                for piece in rechunk(iter_source(data, READ_CHUNK), chunk_size):
                    hasher.update(piece)
                    headers = {"Content-Type": "application/octet-stream",
                               "Content-Range": f"{sent}-{sent + len(piece) - 1}",
                               "Content-Length": str(len(piece))}
                    resp = self._send("PATCH", upload, repository, scopes, headers=headers, content=piece)
                    self._require_ok(resp, repository, f"PATCH upload {digest} at {sent}")
                    sent += len(piece)
                    if resp.headers.get("location"):
                        upload = self._base.join(resp.headers["location"])
                final = upload.copy_merge_params({"digest": digest})
                resp = self._send("PUT", final, repository, scopes, content=b"",
                                  headers={"Content-Type": "application/octet-stream"})
            self._require_ok(resp, repository, f"PUT upload {digest}")
            completed = True
        finally:
            if not completed:
                self._cancel_upload(repository, upload)
        got = "sha256:" + hasher.hexdigest()
        if got != digest:
            self._fatal(repository, f"uploaded bytes hash to {got}, not {digest}")
        if size is not None and sent != size:
            self._fatal(repository, f"uploaded {sent} bytes for {digest}, expected {size}")
        header = self._checked_digest(resp.headers.get("docker-content-digest"), repository, "PUT upload")
        if header is not None and header != digest:
            self._fatal(repository, f"registry stored the upload as {header}, expected {digest}")
        return sent

    def _cancel_upload(self, repository: str, upload: httpx.URL) -> None:
        try:
            resp = self._send("DELETE", upload, repository, Scopes.of(repository, "pull,push"))
            resp.close()
        except RegistryError as exc:  # best effort: registries expire abandoned uploads anyway
            log.warning("could not cancel upload %s: %s", upload.path, exc)

    # -- credentials -------------------------------------------------------------------------

    @property
    def requires_login(self) -> bool:
        """Whether credentials are configured (an anonymous registry needs no ``docker login``)."""
        return self.username is not None

    def login_credentials(self) -> LoginCredentials:
        """Credentials for ``docker login``. Fatal when none are configured (see requires_login)."""
        if self.username is None or self._password is None:
            self._fatal("", "no credentials configured for docker login (anonymous registry)")
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
