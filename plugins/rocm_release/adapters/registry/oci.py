"""The OCI Distribution (Docker Registry HTTP API v2) implementation of :class:`ImageRegistry`.

:class:`OciRegistry` speaks the API with httpx. It adds tags (paged listing, deletion by digest)
and credentials to what it inherits: manifests and labels (:mod:`.oci_manifest_client`) and blobs
(:mod:`.oci_blob_client`). Requests, auth and the mapping of answers to present / absent /
Transient / Fatal are :mod:`.oci_session`'s. :func:`from_login` and :func:`from_connection` build
a client from ``docker login`` credentials or an Airflow Connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from rocm_release.adapters.registry.oci_auth import Scopes
from rocm_release.adapters.registry.oci_manifest import Descriptor
from rocm_release.adapters.registry.oci_manifest_client import ACCEPT_MANIFESTS, OciManifestClient
from rocm_release.adapters.registry.oci_session import DEFAULT_TIMEOUT, OciSession, ReferenceNotFound
from rocm_release.core.names import DIGEST_RE, INDEX_MEDIA_TYPES, check_repository, check_tag
from rocm_release.core.registry import MAX_LIST_PAGES, FatalRegistryError, LoginCredentials, TagInfo, UntaggedImage

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
# A tag page holds page_size names; a registry that ignores ``n`` sends all of them (≈ 60 bytes each).
MAX_TAG_PAGE_BYTES = 8 << 20


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


class OciRegistry(OciManifestClient):
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

    # -- tags --------------------------------------------------------------------------------

    def tag_names(self, repository: str) -> Iterator[str]:
        """Every tag name, all pages (``?n=page_size``, ``Link: <…>; rel="next"``). One request a page.

        An unknown repository has no tags. Registries that ignore ``n`` (distribution 2.8)
        answer everything in one page, which is fine. A registry that pages in a circle, or on
        for more than MAX_LIST_PAGES pages, or sends a page over MAX_TAG_PAGE_BYTES, is Fatal.
        """
        check_repository(repository)
        url: httpx.URL | None = self._http.url(f"/v2/{repository}/tags/list").copy_merge_params(
            {"n": str(self.page_size)})
        seen_urls: set[str] = set()
        seen_tags: set[str] = set()
        while url is not None:
            if str(url) in seen_urls:
                self._http.fatal(repository, f"tag list pagination loops back to {url}")
            if len(seen_urls) >= MAX_LIST_PAGES:
                self._http.fatal(repository, f"tag list has more than {MAX_LIST_PAGES} pages (next: {url}): "
                                             "a registry that pages forever?")
            seen_urls.add(str(url))
            page = self._tag_page(repository, url)
            if page is None:
                return
            tags, url = page
            for tag_name in tags:
                if tag_name not in seen_tags:
                    seen_tags.add(tag_name)
                    yield tag_name

    def _tag_page(self, repository: str, url: httpx.URL) -> tuple[list[str], httpx.URL | None] | None:
        """One page of the tag list and the URL of the next (None on the last); None when absent."""
        http = self._http
        what = f"GET {url.path}?{url.query.decode()}"
        resp = http.send("GET", url, repository, Scopes.of(repository, "pull"), stream=True)
        present, _ = http.outcome(resp, repository, what)
        if not present:
            return None
        try:
            raw = http.read_capped(resp, MAX_TAG_PAGE_BYTES)
        except httpx.HTTPError as exc:
            http.transport_error(repository, what, exc)
        finally:
            resp.close()
        if raw is None:
            http.fatal(repository, f"{what}: answer is larger than {MAX_TAG_PAGE_BYTES} bytes")
        try:
            doc = json.loads(raw)
        except ValueError:
            http.fatal(repository, f"{what}: answer is not JSON")
        tags = doc.get("tags") if isinstance(doc, dict) else ()
        if tags is None:  # distribution answers "tags": null for an emptied repository
            tags = []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            http.fatal(repository, f"{what}: answer has no 'tags' list of strings")
        link = resp.links.get("next", {}).get("url")
        if not link:
            return tags, None
        next_url = http.url(link)
        if not http.same_origin(next_url):
            http.fatal(repository, f"{what}: next page {link!r} is on another host")
        return tags, next_url

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
            if with_push_times:
                info = self._tag_with_push_time(repository, tag_name, created_by_config)
            else:
                info = self._tag_with_digest(repository, tag_name)
            if info is not None:
                yield info

    def _tag_with_digest(self, repository: str, tag_name: str) -> TagInfo | None:
        """The tag and its digest (one HEAD); None when it is gone."""
        found = self.lookup(repository, tag_name)
        if found.present and found.digest is not None:
            return TagInfo(tag=tag_name, digest=found.digest)
        return None

    def _tag_with_push_time(self, repository: str, tag_name: str,
                            created_by_config: dict[str, datetime | None]) -> TagInfo | None:
        """The tag, its digest and its config's ``created`` (read once per config); None when gone."""
        try:
            top = self.manifest(repository, tag_name)
            image = top
            if top.media_type in INDEX_MEDIA_TYPES:
                image = self.platform_manifest(repository, top.digest)
        except ReferenceNotFound:
            return None
        config = self.references(repository, image).config
        pushed_at = None
        if config is not None:
            if config.digest not in created_by_config:
                created_by_config[config.digest] = self._created(repository, config)
            pushed_at = created_by_config[config.digest]
        return TagInfo(tag=tag_name, digest=top.digest, pushed_at=pushed_at)

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
        current = self._current_tags(repository)
        doomed: dict[str, list[str]] = {}  # digest → the wanted tags on it
        for tag_name in wanted:
            if tag_name in current:
                doomed.setdefault(current[tag_name][0], []).append(tag_name)
            else:
                log.info("%s/%s:%s is already gone", self.name, repository, tag_name)
        wanted_set = set(wanted)
        kept = {t: v for t, v in current.items() if t not in wanted_set}
        conflicts = self._deletion_conflicts(repository, kept, doomed)
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

    # The Registry API cannot list manifests that no tag points to: the registry's garbage collection
    # deletes them (``registry garbage-collect --delete-untagged``).
    lists_untagged = False

    def list_untagged(self, repository: str) -> Iterator[UntaggedImage]:
        """Nothing: the API has no way to list untagged manifests (see ``lists_untagged``)."""
        return iter(())

    def delete_digests(self, repository: str, digests: Sequence[str]) -> None:
        """DELETE each manifest by digest (every tag on it goes too); one already gone counts as deleted."""
        check_repository(repository)
        for digest in dict.fromkeys(digests):
            if not DIGEST_RE.match(digest):
                raise ValueError(f"delete_digests() needs sha256 digests, got {digest!r}")
            what = f"DELETE manifest {digest}"
            resp = self._http.send("DELETE", self._http.url(f"/v2/{repository}/manifests/{digest}"), repository,
                                   Scopes.of(repository, "delete"))
            if not self._http.outcome(resp, repository, what)[0]:
                log.info("%s/%s@%s was already deleted", self.name, repository, digest)

    def _current_tags(self, repository: str) -> dict[str, tuple[str, str]]:
        """Every tag → (digest, media type): a HEAD each, a GET when the HEAD lacks either header."""
        http = self._http
        current: dict[str, tuple[str, str]] = {}
        for tag_name in self.tag_names(repository):
            what = f"HEAD manifest {tag_name}"
            resp = http.send("HEAD", http.url(f"/v2/{repository}/manifests/{tag_name}"), repository,
                             Scopes.of(repository, "pull"), headers={"Accept": ACCEPT_MANIFESTS})
            present, _ = http.outcome(resp, repository, what)
            if not present:
                continue
            digest = http.checked_digest(resp.headers.get("docker-content-digest"), repository, what)
            media_type = http.media_type(resp)
            if digest is None or media_type is None:
                manifest = self.manifest(repository, tag_name)
                digest, media_type = manifest.digest, manifest.media_type
            current[tag_name] = (digest, media_type)
        return current

    def _deletion_conflicts(self, repository: str, kept: dict[str, tuple[str, str]],
                            doomed: dict[str, list[str]]) -> list[str]:
        """Why deleting ``doomed`` would hurt a ``kept`` tag: it points to one, or is an index listing one."""
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
        return conflicts

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
    extra = _connection_extra(conn)
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


def _connection_extra(conn: ConnectionLike) -> dict[str, Any]:
    """The connection's ``extra`` as a dict: a JSON object (text) or a mapping; {} when empty."""
    extra_raw: object = conn.extra
    if isinstance(extra_raw, Mapping):
        return dict(extra_raw)
    if not isinstance(extra_raw, str) or not extra_raw.strip():
        return {}
    try:
        loaded = json.loads(extra_raw)
    except ValueError as exc:
        raise ValueError(f"connection {conn.conn_id!r}: extra is not JSON: {exc}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"connection {conn.conn_id!r}: extra must be a JSON object")
    return loaded
