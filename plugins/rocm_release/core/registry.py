"""The one interface every image registry implements, and its three outcomes.

A registry call ends in exactly one of:

* **present** — the reference resolves; the answer carries the digest;
* **absent** — the registry said definitively that it is not there
  (HTTP 404, ``ImageNotFoundException``, ``RepositoryNotFoundException``);
* **an error**, raised, never returned: :class:`TransientRegistryError`
  (refused connection, timeout, 429, 5xx, throttling — ask again later) or
  :class:`FatalRegistryError` (401/403, a malformed answer — a person must act).

Why an error is never "absent": a sensor that turned an expired credential
into "absent" would start a six-hour base rebuild (REFERENCE_PIPELINE.md §2.13).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from rocm_release.core.errors import FatalError, TransientError
from rocm_release.core.names import DIGEST_RE

# A tag listing reads at most this many pages (100,000 tags at 100 a page, a million on ECR's 1,000);
# a registry that pages on, in a circle or forever, fails Fatal instead of holding a worker.
MAX_LIST_PAGES = 1000


class RegistryError(Exception):
    """A registry call that gave no definitive answer. Names where it happened."""

    def __init__(self, registry: str, repository: str, detail: str, connection_id: str | None = None) -> None:
        self.registry = registry
        self.repository = repository
        self.detail = detail
        self.connection_id = connection_id
        conn = f" (connection {connection_id!r})" if connection_id else ""
        super().__init__(f"{registry}/{repository}{conn}: {detail}")


class TransientRegistryError(RegistryError, TransientError):
    """Outage, timeout, throttling, 5xx: the answer may be different if asked again."""


class FatalRegistryError(RegistryError, FatalError):
    """Credentials refused (401/403) or an answer we cannot read: asking again will not help."""


@dataclass(frozen=True)
class Lookup:
    """The definitive answer about one reference: present with a digest, or absent with a reason."""

    present: bool
    digest: str | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if self.present and (self.digest is None or not DIGEST_RE.match(self.digest)):
            raise ValueError(f"a present image needs a sha256 digest, got {self.digest!r}")


@dataclass(frozen=True)
class Manifest:
    """A manifest as the registry stores it: the exact bytes, their media type and digest."""

    raw: bytes
    media_type: str
    digest: str


@dataclass(frozen=True)
class TagInfo:
    """One tag of a repository, with the time its image was pushed (and its manifest's media type)
    when the registry's listing says."""

    tag: str
    digest: str
    pushed_at: datetime | None = None
    media_type: str | None = None


@dataclass(frozen=True)
class UntaggedImage:
    """A manifest no tag points to: left by a rebuild that moved its tag, or a platform image (or an
    attestation) that an index lists. ``artifact_type``: its config's media type, where listed."""

    digest: str
    pushed_at: datetime | None = None
    media_type: str | None = None
    artifact_type: str | None = None


@dataclass(frozen=True)
class LoginCredentials:
    """What ``docker login`` needs. ``password`` must never be logged."""

    registry: str
    username: str
    password: str = field(repr=False)


@runtime_checkable
class ImageRegistry(Protocol):
    """The operations the pipeline needs from a container registry (ECR or OCI Distribution)."""

    @property
    def name(self) -> str:
        """Host (and port) of the registry, for messages and image references."""
        ...

    def lookup(self, repository: str, tag: str) -> Lookup:
        """Present with digest, or absent. Raises TransientRegistryError / FatalRegistryError."""
        ...

    def manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest for a tag or digest (absent raises LookupError)."""
        ...

    def labels(self, repository: str, reference: str) -> dict[str, str]:
        """The image config's labels (``config.Labels``); empty when it has none."""
        ...

    def tag(self, repository: str, digest: str, new_tag: str) -> None:
        """Point ``new_tag`` at an existing digest. Moves no layer bytes (a manifest PUT)."""
        ...

    @property
    def deletes_by_digest(self) -> bool:
        """True when deleting a tag deletes its manifest, and so every tag on that digest (the OCI
        Registry API); False when tags are deleted one by one (ECR)."""
        ...

    def list_tags(self, repository: str, *, with_push_times: bool = False) -> Iterator[TagInfo]:
        """Every tag of the repository, all pages (at most MAX_LIST_PAGES, else Fatal). Push times come
        where the listing has them (ECR) or, when ``with_push_times``, at extra cost (OCI: a manifest
        and a config read per tag)."""
        ...

    def delete_tags(self, repository: str, tags: Sequence[str]) -> None:
        """Delete tags (ECR: batches of at most 100 per call)."""
        ...

    @property
    def lists_untagged(self) -> bool:
        """True when ``list_untagged`` can list the manifests no tag points to (ECR). The OCI Registry
        API cannot: there the registry's garbage collection deletes them
        (``registry garbage-collect --delete-untagged``)."""
        ...

    def list_untagged(self, repository: str) -> Iterator[UntaggedImage]:
        """Every manifest of the repository that no tag points to (nothing where ``lists_untagged`` is False)."""
        ...

    def delete_digests(self, repository: str, digests: Sequence[str]) -> None:
        """Delete manifests by digest (ECR: batches of at most 100; one already gone counts as deleted)."""
        ...

    def login_credentials(self) -> LoginCredentials:
        """Credentials for ``docker login`` against this registry."""
        ...
