"""The decision: from what the sensors observed to the smallest set of builds (DESIGN.md's table).

| base (both images) | wheels image | release image | builds that run                       |
|--------------------|--------------|---------------|---------------------------------------|
| present            | present      | present       | none — reuse_cached_images            |
| present            | present      | absent        | build_release_image                   |
| present            | absent       | any           | build_wheels, build_release_image     |
| absent             | any          | any           | build_base_image, build_wheels, build_release_image |

A wheels or release image counts as present only if its labels name the
current base key and the digest of the base image now in the cache; a rebuilt
base is a new digest, so everything on top of it is rebuilt with it.
``force_rebuild`` makes every artifact count as absent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rocm_release.core.errors import HandOffError
from rocm_release.core.frozen import Frozen
from rocm_release.core.plan import IMAGE_KINDS, LABEL_BASE_DIGEST, LABEL_BASE_KEY, ReleasePlan
from rocm_release.core.task_ids import BUILD_ORDER, BUILD_RELEASE_IMAGE, BUILD_WHEELS, BuildTask


class Observation(Frozen):
    """What one sensor found: present (with digest and labels) or absent, and why."""


    present: bool
    digest: str | None = None
    labels: dict[str, str] = {}
    reason: str = ""
    # The base unit is two images; the base wheels image's digest rides along here.
    paired_digest: str | None = None

    def absent(self, reason: str) -> Observation:
        """The same observation, demoted to absent for ``reason``."""
        return Observation(present=False, reason=reason)


class PathDecision(Frozen):
    """The builds to run, in order, and the observations they were decided on (after demotion)."""


    builds: tuple[BuildTask, ...]
    base: Observation
    wheels_image: Observation
    release_image: Observation
    wheels_published: Observation
    reasons: tuple[str, ...]

    @property
    def reuse(self) -> bool:
        """True when every image exists and nothing is built."""
        return not self.builds


def _on_current_base(obs: Observation, what: str, base: Observation, base_key: str) -> Observation:
    if not obs.present:
        return obs
    if obs.labels.get(LABEL_BASE_KEY) != base_key:
        return obs.absent(
            f"{what} was built on base key {obs.labels.get(LABEL_BASE_KEY)!r}, the plan's is {base_key!r}"
        )
    if obs.labels.get(LABEL_BASE_DIGEST) != base.digest:
        return obs.absent(
            f"{what} was built on base {obs.labels.get(LABEL_BASE_DIGEST)!r}, the cache now holds {base.digest!r}"
        )
    return obs


def decide(
    *,
    base: Observation,
    wheels_image: Observation,
    release_image: Observation,
    wheels_published: Observation,
    base_key: str,
    force_rebuild: bool,
) -> PathDecision:
    """Apply DESIGN.md's table. Pure: the same observations always give the same builds."""
    if force_rebuild:
        forced = "force_rebuild was requested"
        base, wheels_image, release_image, wheels_published = (
            o.absent(forced) for o in (base, wheels_image, release_image, wheels_published)
        )
    if not base.present:
        # A new base means a new digest: nothing built on the old one may be reused.
        wheels_image = wheels_image.absent("the base is rebuilt") if wheels_image.present else wheels_image
        release_image = release_image.absent("the base is rebuilt") if release_image.present else release_image
    else:
        wheels_image = _on_current_base(wheels_image, "the wheels image", base, base_key)
        release_image = _on_current_base(release_image, "the release image", base, base_key)
    if not wheels_image.present and release_image.present:
        # The release image installs the wheels image's wheels: rebuilt wheels mean a rebuilt release.
        release_image = release_image.absent("the wheels image is rebuilt")
    if not wheels_image.present and wheels_published.present:
        wheels_published = wheels_published.absent("the wheels image is rebuilt")

    if not base.present:
        builds: tuple[BuildTask, ...] = BUILD_ORDER
    elif not wheels_image.present:
        builds = (BUILD_WHEELS, BUILD_RELEASE_IMAGE)
    elif not release_image.present:
        builds = (BUILD_RELEASE_IMAGE,)
    else:
        builds = ()
    reasons = tuple(
        f"{name}: {'present' if o.present else 'absent'}{' — ' + o.reason if o.reason else ''}"
        for name, o in (
            ("base", base),
            ("wheels image", wheels_image),
            ("release image", release_image),
            ("published wheels", wheels_published),
        )
    )
    return PathDecision(
        builds=builds,
        base=base,
        wheels_image=wheels_image,
        release_image=release_image,
        wheels_published=wheels_published,
        reasons=reasons,
    )


def observed_refs(plan: ReleasePlan, decision: PathDecision) -> dict[str, str]:
    """Pinned cache refs (kind → ``host/repo@sha256:…``) of the images the sensors saw present."""
    observed = {
        "base": decision.base.digest,
        "base_wheels": decision.base.paired_digest,
        "wheels": decision.wheels_image.digest,
        "release": decision.release_image.digest,
    }
    return {kind: plan.cache_ref(digest) for kind, digest in observed.items() if digest}


def reuse_refs(plan: ReleasePlan, decision: PathDecision) -> dict[str, str]:
    """Every image exists: the four observed digests, pinned; HandOffError naming any that is missing."""
    refs = observed_refs(plan, decision)
    missing = sorted(set(IMAGE_KINDS) - set(refs))
    if missing:
        raise HandOffError(f"reuse chosen but no digest observed for {missing}")
    return refs


def current_refs(plan: ReleasePlan, decision: PathDecision,
                 built: Sequence[Mapping[str, str] | None]) -> dict[str, str]:
    """The pinned refs of a variant's four images: what this run built (``built``, in build order)
    over what the sensors saw."""
    refs = observed_refs(plan, decision)
    for step in built:
        if step:
            refs.update(step)
    return refs
