"""Untagged images: what a rebuild leaves behind when it moves a tag, and when retention deletes one.

A registry that can list them (ECR: ``DescribeImages`` with ``tagStatus=UNTAGGED``) hands them to
retention with the digests its indexes list. An untagged image is deleted only when all of these hold:

* it is an image or an index (an image manifest media type, an image config or none as its artifact
  type): signatures, attestations and other artifacts are never touched;
* no index in the repository lists it (a platform image or attestation goes with its index, never
  before it: deleting it would break the index, and ECR refuses to anyway);
* no nightly run in progress handed it on (by digest);
* its push time is known and outside the recent window (``retention.protect_recent_hours``): a build in
  progress may have pushed it and not tagged it yet.

The OCI Registry API cannot list untagged manifests; there the registry's own garbage collection
(``registry garbage-collect --delete-untagged``) removes them.
"""

from __future__ import annotations

from collections import defaultdict

from rocm_release.core.names import IMAGE_MEDIA_TYPES, INDEX_MEDIA_TYPES
from rocm_release.core.registry import UntaggedImage
from rocm_release.core.retention_model import RecentWindow, RepositoryTags, RetentionDecision, RetentionInputs

# An image's config media types (ECR's ``artifactMediaType`` of an image); anything else is an artifact.
IMAGE_CONFIG_TYPES = frozenset({"application/vnd.oci.image.config.v1+json",
                                "application/vnd.docker.container.image.v1+json"})


def _artifact(image: UntaggedImage) -> str | None:
    """Why ``image`` is not an image we may delete; None when it is one."""
    if image.media_type is not None and image.media_type not in IMAGE_MEDIA_TYPES | INDEX_MEDIA_TYPES:
        return f"not an image manifest ({image.media_type}): never touched"
    if image.artifact_type is not None and image.artifact_type not in IMAGE_CONFIG_TYPES:
        return f"an artifact ({image.artifact_type}), not an image: never touched"
    return None


def _keep_reasons(image: UntaggedImage, listing: RepositoryTags, in_use: dict[str, list[str]],
                  recent: RecentWindow | None) -> list[str]:
    reasons: list[str] = []
    if (artifact := _artifact(image)) is not None:
        reasons.append(artifact)
    if image.digest in listing.index_children:
        reasons.append("an index in this repository lists it: it goes with its index, never before")
    if in_use.get(image.digest):
        reasons.append(f"in use by {', '.join(sorted(set(in_use[image.digest])))}")
    if image.pushed_at is None:
        reasons.append("no push time: cannot tell how old it is, kept")
    elif recent is not None and recent.covers(image.pushed_at):
        reasons.append(recent.reason(image.pushed_at))
    return reasons


def untagged_decisions(inputs: RetentionInputs) -> list[RetentionDecision]:
    """One decision per untagged image of every repository that listed them."""
    in_use: dict[str, list[str]] = defaultdict(list)
    for run in inputs.runs_in_use:
        for digest in run.digests:
            in_use[digest].append(run.label)
    recent = inputs.recent
    decisions: list[RetentionDecision] = []
    for listing in inputs.repositories:
        for image in sorted(listing.untagged, key=lambda i: i.digest):
            reasons = _keep_reasons(image, listing, in_use, recent)
            when = image.pushed_at.isoformat() if image.pushed_at else "no push time"
            reason = "untagged (no tag points to it), pushed " + when
            if reasons:
                reason += ": kept, " + "; ".join(reasons)
            elif recent is not None:
                reason += f", more than {recent.hours} hours ago"
            decisions.append(RetentionDecision(
                action="keep" if reasons else "delete", target="image", location=listing.repository.location,
                name=image.digest, kind="untagged", digest=image.digest, pushed_at=image.pushed_at, reason=reason))
    return decisions
