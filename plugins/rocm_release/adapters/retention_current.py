"""Reading again, just before deleting, everything the retention plan assumed.

``read_current`` reads the nightly aliases (:func:`~rocm_release.adapters.retention.read_guard`), the
tags of every repository with something to delete (one listing each, without push times: an OCI
image's push time is its config's ``created``, fixed by its digest, so an unmoved tag keeps it; ECR
and Docker Hub listings bring theirs), the untagged images where the plan deletes some, and takes the
nightly runs in progress (read by the Airflow layer) and the recent window ending ``now``. The checks
themselves are pure: :func:`rocm_release.core.retention_recheck.recheck`.

Cost, on top of the alias reads: per repository with deletions one tag listing (ECR: one
``DescribeImages`` per 1,000 images; OCI: the tag list and one HEAD per tag) and, where untagged
images go, one ``DescribeImages`` per 1,000 untagged images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from rocm_release.adapters.retention import FolderStore, read_guard
from rocm_release.core.config import ReleaseConfig
from rocm_release.core.registry import ImageRegistry, TagInfo, UntaggedImage
from rocm_release.core.retention_model import RecentWindow, RetentionDecision, RunInUse
from rocm_release.core.retention_recheck import CurrentState


def read_current(
    config: ReleaseConfig,
    deletions: Sequence[RetentionDecision],
    *,
    targets: Mapping[str, tuple[ImageRegistry, str]],
    public: ImageRegistry,
    store: FolderStore,
    runs: Sequence[RunInUse],
    now: datetime,
) -> CurrentState:
    """What is there now, for every assumption ``deletions`` rest on."""
    guard = read_guard(config, public=public, store=store)
    listed = {d.location for d in deletions if d.target in ("tag", "image")}
    with_images = {d.location for d in deletions if d.target == "image"}
    tags: dict[str, dict[str, TagInfo]] = {}
    untagged: dict[str, dict[str, UntaggedImage]] = {}
    for location in sorted(listed):
        if location not in targets:
            raise ValueError(f"no registry client for {location}")
        registry, repository = targets[location]
        tags[location] = {t.tag: t for t in registry.list_tags(repository, with_push_times=False)}
        if location in with_images:
            untagged[location] = {i.digest: i for i in registry.list_untagged(repository)}
    return CurrentState(alias_commits=guard.commits, alias_digests=guard.digests, tags=tags, untagged=untagged,
                        runs=tuple(runs),
                        recent=RecentWindow.before(now, config.retention.protect_recent_hours))
