"""Retention histories for the unit tests: tags, bases, public copies and inputs made to order."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from rocm_release.core.config import PublicTagPatterns
from rocm_release.core.plan import base_tag, base_wheels_tag, public_tag, release_tag, wheels_tag
from rocm_release.core.registry import TagInfo
from rocm_release.core.retention import (
    BaseUse,
    Repository,
    RepositoryTags,
    RetentionInputs,
    RetentionPlan,
    WheelFolder,
    images_to_inspect,
    plan_retention,
)

V1, V2 = "rocm710", "rocm723"
T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
STORE = "s3://wheels/rocm"
TAGS = PublicTagPatterns()
CACHE = Repository("123456789012.dkr.ecr.us-east-1.amazonaws.com", "proj", ("cache",), deletes_by_digest=False)
PUBLIC = Repository("registry.example", "proj/proj-rocm", ("public",), deletes_by_digest=True)
KEY_OLD, KEY_USED, KEY_NEW = "0" * 15 + "1", "0" * 15 + "2", "0" * 15 + "3"


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def sha(n: int) -> str:
    """Commit n: the higher n, the *smaller* the name, so names sort against push time."""
    return f"{10_000 - n:040x}"


def day(n: int) -> datetime:
    return T0 + timedelta(days=n)


def built(commit: str, when: datetime, variant: str = V1) -> list[TagInfo]:
    """A night's cache tags: the wheels and release images of one commit."""
    return [TagInfo(wheels_tag(commit, variant), digest(f"w{commit}{variant}"), when),
            TagInfo(release_tag(commit, variant), digest(f"r{commit}{variant}"), when)]


def base(key: str, when: datetime, variant: str = V1) -> list[TagInfo]:
    return [TagInfo(base_tag(key, variant), digest(f"b{key}{variant}"), when),
            TagInfo(base_wheels_tag(key, variant), digest(f"bw{key}{variant}"), when)]


def public_night(commit: str, variant: str = V1, base_key: str = KEY_USED) -> list[TagInfo]:
    """The public copies of a night (OCI listing: no push times); same digests as the cache."""
    return [TagInfo(public_tag(TAGS.nightly_commit, variant=variant, commit=commit), digest(f"r{commit}{variant}")),
            TagInfo(public_tag(TAGS.base_nightly_commit, variant=variant, commit=commit),
                    digest(f"b{base_key}{variant}"))]


def make_inputs(cache: Sequence[TagInfo], public: Sequence[TagInfo] = (), *, keep: int = 2,
                folders: Sequence[WheelFolder] = (), nightly: dict[str, str | None] | None = None,
                variants: tuple[str, ...] = (V1, V2), public_by_digest: bool = True) -> RetentionInputs:
    pub = Repository(PUBLIC.registry, PUBLIC.repository, ("public",), deletes_by_digest=public_by_digest)
    return RetentionInputs(
        repositories=(RepositoryTags(CACHE, tuple(cache)), RepositoryTags(pub, tuple(public))),
        wheel_folders=tuple(folders), store_url=STORE, keep_commits=keep, variants=variants,
        public_tags=TAGS, nightly_folders=nightly or {},
    )


def make_plan(inputs: RetentionInputs, key: str | None = KEY_USED) -> RetentionPlan:
    """Plan with every kept image's labels naming ``key`` (None: no base labels at all)."""
    use = BaseUse(key, None) if key else None
    return plan_retention(inputs, {i.digest: use for i in images_to_inspect(inputs)})
