"""Pushing images (cache tags, then the public registry) and moving the nightly image aliases.

Within one registry a tag is a manifest PUT (no layer bytes move); across
registries only the blobs the target lacks move, and the manifest goes last
(``adapters.registry.image_copy.copy_image``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rocm_release.adapters.registry.image_copy import BlobRegistry, copy_image
from rocm_release.core.frozen import Frozen
from rocm_release.core.names import DIGEST_RE
from rocm_release.core.plan import LABEL_COMMIT, ReleasePlan, VariantPlan
from rocm_release.core.promotion import AliasMoved
from rocm_release.core.registry import ImageRegistry

Log = Callable[[str], None]
KINDS = ("base", "base_wheels", "wheels", "release")


class PushedImages(Frozen):
    """What ``push_images`` published for one variant: digests and the public references."""


    digests: dict[str, str]
    public: dict[str, str]
    bytes_copied: int
    blobs_copied: int
    blobs_skipped: int


def digest_of(ref: str) -> str:
    """``repo@sha256:…`` → ``sha256:…`` (refusing anything that is not digest-pinned)."""
    _, sep, digest = ref.partition("@")
    if not sep or not DIGEST_RE.match(digest):
        raise ValueError(f"{ref!r} is not pinned by digest; refusing to publish a mutable reference")
    return digest


def ensure_tag(registry: ImageRegistry, repo: str, tag: str, digest: str, log: Log) -> bool:
    """Point ``tag`` at ``digest`` unless it already does; True when a manifest was written."""
    found = registry.lookup(repo, tag)
    if found.present and found.digest == digest:
        log(f"{registry.name}/{repo}:{tag} already points to {digest}")
        return False
    registry.tag(repo, digest, tag)
    log(f"{registry.name}/{repo}:{tag} → {digest}")
    return True


def push_images(
    *,
    plan: ReleasePlan,
    v: VariantPlan,
    refs: dict[str, str],
    cache: ImageRegistry,
    cache_blobs: BlobRegistry,
    public: BlobRegistry,
    log: Log,
) -> PushedImages:
    """Give the digests their cache tags, then copy the release and base images to the public registry
    under their per-commit public tags. Idempotent: a second run writes nothing and moves no bytes."""
    missing = [k for k in KINDS if k not in refs]
    if missing:
        raise ValueError(f"{v.name}: no digest for {missing}; nothing is pushed")
    digests = {k: digest_of(refs[k]) for k in KINDS}
    tags = v.cache_tags.model_dump()
    for kind in KINDS:
        ensure_tag(cache, plan.cache_repository, tags[kind], digests[kind], log)
    copied = skipped = nbytes = 0
    public_refs = {}
    for kind, tag in (("release", v.public_tags.nightly_commit), ("base", v.public_tags.base_nightly_commit)):
        public_refs[kind] = plan.public_ref(tag)
        there = public.lookup(plan.public_repository, tag)
        if there.present and there.digest == digests[kind]:
            # A re-run (or a no-op night) only asks: no manifest PUT, the tag's update time stays.
            log(f"{plan.public_ref(tag)} already points to {digests[kind]}")
            continue
        result = copy_image(cache_blobs, plan.cache_repository, digests[kind], public, plan.public_repository, [tag])
        if result.digest != digests[kind]:
            raise ValueError(f"copy of {kind} gave {result.digest}, expected {digests[kind]}")
        copied += result.blobs_copied
        skipped += result.blobs_skipped
        nbytes += result.bytes_copied
        log(f"{plan.public_ref(tag)} = {digests[kind]} ({result.blobs_copied} blobs, "
            f"{result.bytes_copied} bytes copied; {result.blobs_skipped} already there)")
    return PushedImages(digests=digests, public=public_refs, bytes_copied=nbytes, blobs_copied=copied,
                       blobs_skipped=skipped)


@dataclass(frozen=True)
class AliasState:
    """Which commit an alias tag points to now (None when the alias does not exist yet)."""

    tag: str
    digest: str | None
    commit: str | None


def alias_state(public: ImageRegistry, repo: str, tag: str) -> AliasState:
    """Read an alias: its digest and the commit its image's labels name."""
    found = public.lookup(repo, tag)
    if not found.present or found.digest is None:
        return AliasState(tag=tag, digest=None, commit=None)
    return AliasState(tag=tag, digest=found.digest, commit=public.labels(repo, found.digest).get(LABEL_COMMIT))


def move_alias(registry: ImageRegistry, repo: str, tag: str, *, expected: str | None, digest: str,
               log: Log) -> bool:
    """Point ``tag`` at ``digest`` only if it still points at ``expected`` (None: absent), as when the
    move was decided; read again after the write to confirm. A registry has no conditional tag write:
    this is compare, write, compare — with publishing serialized by the ``rocm_publishing`` pool."""
    where = f"{registry.name}/{repo}:{tag}"
    now = registry.lookup(repo, tag)
    current = now.digest if now.present else None
    if current == digest:
        log(f"{where} already points to {digest}")
        return False
    if current != expected:
        raise AliasMoved(f"{where} moved to {current or 'nothing'} since the decision (it was "
                         f"{expected or 'absent'}); nothing changed, the retry decides again")
    registry.tag(repo, digest, tag)
    after = registry.lookup(repo, tag)
    if not after.present or after.digest != digest:
        raise AliasMoved(f"{where} reads {after.digest or 'nothing'} right after we wrote {digest}: "
                         "another writer moved it")
    log(f"{where} → {digest} (was {expected or 'absent'})")
    return True
