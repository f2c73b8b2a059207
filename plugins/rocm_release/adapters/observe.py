"""What exists already: one function per artifact, each giving a definitive Observation.

These are the cores of the four sensors. Each returns present or absent (with
the reason), or lets a TransientRegistryError / FatalRegistryError escape: an
outage is "not yet known", never "absent". An image whose labels name another
schema, base key or variant, a base wheels image paired with another base, or
a wheels image whose SHA256SUMS does not verify counts as absent.
"""

from __future__ import annotations

from typing import Protocol

from rocm_release.adapters.wheels_image import BlobSource, UnverifiedWheels, read_dist
from rocm_release.core.decision import Observation
from rocm_release.core.plan import (
    LABEL_BASE_DIGEST,
    LABEL_BASE_KEY,
    LABEL_COMMIT,
    LABEL_SCHEMA,
    LABEL_VARIANT,
    SCHEMA_VERSION,
    ReleasePlan,
    VariantPlan,
)
from rocm_release.core.registry import ImageRegistry


class WheelsImageRegistry(ImageRegistry, BlobSource, Protocol):
    """A registry that can also stream blobs (to verify a wheels image)."""


def _mismatch(labels: dict[str, str], expected: dict[str, str]) -> str | None:
    for key, want in expected.items():
        if labels.get(key) != want:
            return f"label {key}={labels.get(key)!r}, expected {want!r}"
    return None


def _expected(plan: ReleasePlan, v: VariantPlan, *, commit: bool) -> dict[str, str]:
    labels = {LABEL_SCHEMA: str(SCHEMA_VERSION), LABEL_BASE_KEY: v.base_key, LABEL_VARIANT: v.name}
    if commit:
        labels[LABEL_COMMIT] = plan.commit
    return labels


def observe_base(registry: ImageRegistry, plan: ReleasePlan, v: VariantPlan) -> Observation:
    """The base unit: the base image and its base wheels image, present only together and paired."""
    repo = plan.cache_repository
    base = registry.lookup(repo, v.cache_tags.base)
    if not base.present:
        return Observation(present=False, reason=f"{v.cache_tags.base} is not in {registry.name}/{repo}")
    wheels = registry.lookup(repo, v.cache_tags.base_wheels)
    if not wheels.present:
        return Observation(
            present=False,
            reason=f"{v.cache_tags.base} exists but {v.cache_tags.base_wheels} does not: the pair is rebuilt",
        )
    assert base.digest is not None and wheels.digest is not None  # Lookup guarantees it when present
    labels = registry.labels(repo, base.digest)
    problem = _mismatch(labels, _expected(plan, v, commit=False))
    if problem:
        return Observation(present=False, reason=f"base image {base.digest}: {problem}")
    wheel_labels = registry.labels(repo, wheels.digest)
    problem = _mismatch(wheel_labels, {**_expected(plan, v, commit=False), LABEL_BASE_DIGEST: base.digest})
    if problem:
        return Observation(present=False, reason=f"base wheels image {wheels.digest}: {problem}")
    return Observation(
        present=True, digest=base.digest, paired_digest=wheels.digest, labels=labels,
        reason=f"{v.cache_tags.base} and {v.cache_tags.base_wheels} are paired",
    )


def observe_wheels_image(registry: WheelsImageRegistry, plan: ReleasePlan, v: VariantPlan) -> Observation:
    """The project's wheels image at this commit; present only if its SHA256SUMS verifies."""
    repo = plan.cache_repository
    found = registry.lookup(repo, v.cache_tags.wheels)
    if not found.present:
        return Observation(present=False, reason=f"{v.cache_tags.wheels} is not in {registry.name}/{repo}")
    assert found.digest is not None
    labels = registry.labels(repo, found.digest)
    problem = _mismatch(labels, _expected(plan, v, commit=True))
    if problem:
        return Observation(present=False, reason=f"wheels image {found.digest}: {problem}")
    try:
        files = read_dist(registry, repo, found.digest)
    except UnverifiedWheels as exc:
        return Observation(present=False, reason=f"wheels image {found.digest} does not verify: {exc}")
    names = ", ".join(f.name for f in files if f.name.endswith(".whl"))
    return Observation(present=True, digest=found.digest, labels=labels, reason=f"verified: {names}")


def observe_release_image(registry: ImageRegistry, plan: ReleasePlan, v: VariantPlan) -> Observation:
    """The release image at this commit, built on the current base key."""
    repo = plan.cache_repository
    found = registry.lookup(repo, v.cache_tags.release)
    if not found.present:
        return Observation(present=False, reason=f"{v.cache_tags.release} is not in {registry.name}/{repo}")
    assert found.digest is not None
    labels = registry.labels(repo, found.digest)
    problem = _mismatch(labels, _expected(plan, v, commit=True))
    if problem:
        return Observation(present=False, reason=f"release image {found.digest}: {problem}")
    return Observation(present=True, digest=found.digest, labels=labels)
