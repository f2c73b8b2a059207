"""Pushing images (cache tags, then the public registry) and moving the nightly image aliases.

Within one registry a tag is a manifest PUT (no layer bytes move); across
registries only the blobs the target lacks move, and the manifest goes last
(``adapters.registry.image_copy.copy_image``).

Each tag and each copy is one idempotent operation, retried through registry outages as the
``retrying`` policy says (``core.retrying``): a copy cut short by an outage resumes with the blobs
still missing, and its manifest is only PUT once every blob is there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from rocm_release.adapters.registry.image_copy import BlobRegistry, CopyResult, copy_image
from rocm_release.core.frozen import Frozen
from rocm_release.core.names import DIGEST_RE
from rocm_release.core.plan import LABEL_COMMIT, ReleasePlan, VariantPlan
from rocm_release.core.promotion import AliasMoved
from rocm_release.core.registry import FatalRegistryError, ImageRegistry
from rocm_release.core.retrying import ONCE, Retrying

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


def tag_cache(*, plan: ReleasePlan, v: VariantPlan, refs: dict[str, str], cache: ImageRegistry, log: Log,
              retrying: Retrying = ONCE) -> dict[str, str]:
    """Give the four digests their cache tags (idempotent: a tag already there is not written); kind → digest.

    Runs before the smoke tests (``tag_cache_images``): a night whose test fails keeps its images findable in
    the cache, so the fix-forward night rebuilds only what the fix changed."""
    missing = [k for k in KINDS if k not in refs]
    if missing:
        raise ValueError(f"{v.name}: no digest for {missing}; nothing is tagged or pushed")
    digests = {k: digest_of(refs[k]) for k in KINDS}
    tags = v.cache_tags.model_dump()
    for kind in KINDS:
        retrying(f"tag {cache.name}/{plan.cache_repository}:{tags[kind]}",
                 partial(ensure_tag, cache, plan.cache_repository, tags[kind], digests[kind], log))
    return digests


def push_images(
    *,
    plan: ReleasePlan,
    v: VariantPlan,
    refs: dict[str, str],
    cache: ImageRegistry,
    cache_blobs: BlobRegistry,
    public: BlobRegistry,
    log: Log,
    retrying: Retrying = ONCE,
) -> PushedImages:
    """Give the digests their cache tags, then copy the release and base images to the public registry
    under their per-commit public tags. Idempotent: a second run writes nothing and moves no bytes.
    Each tag and each copy is retried through outages as ``retrying`` says."""
    digests = tag_cache(plan=plan, v=v, refs=refs, cache=cache, log=log, retrying=retrying)
    copied = skipped = nbytes = 0
    public_refs = {}
    for kind, tag in (("release", v.public_tags.nightly_commit), ("base", v.public_tags.base_nightly_commit)):
        public_refs[kind] = plan.public_ref(tag)
        result = retrying(f"copy of {kind} {digests[kind]} to {plan.public_ref(tag)}",
                          partial(_copy_to_public, plan, cache_blobs, public, tag, digests[kind], log))
        if result is not None:
            copied += result.blobs_copied
            skipped += result.blobs_skipped
            nbytes += result.bytes_copied
    return PushedImages(digests=digests, public=public_refs, bytes_copied=nbytes, blobs_copied=copied,
                        blobs_skipped=skipped)


def _copy_to_public(plan: ReleasePlan, cache_blobs: BlobRegistry, public: BlobRegistry, tag: str, digest: str,
                    log: Log) -> CopyResult | None:
    """Copy one image to ``public:tag`` unless the tag already names it (None then); check the digest."""
    there = public.lookup(plan.public_repository, tag)
    if there.present and there.digest == digest:
        # A re-run (or a no-op night) only asks: no manifest PUT, the tag's update time stays.
        log(f"{plan.public_ref(tag)} already points to {digest}")
        return None
    result = copy_image(cache_blobs, plan.cache_repository, digest, public, plan.public_repository, [tag])
    if result.digest != digest:
        raise FatalRegistryError(public.name, plan.public_repository,
                                 f"copy of {digest} to {tag} gave {result.digest}")
    log(f"{plan.public_ref(tag)} = {digest} ({result.blobs_copied} blobs, "
        f"{result.bytes_copied} bytes copied; {result.blobs_skipped} already there)")
    return result


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
