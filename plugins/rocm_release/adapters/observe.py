"""What exists already: one function per artifact, each giving a definitive Observation.

These are the cores of the four sensors. Each returns present or absent (with
the reason), or lets a TransientRegistryError / FatalRegistryError escape: an
outage is "not yet known", never "absent". An image whose labels name another
schema, base key or variant, a base wheels image paired with another base, or
a wheels image whose SHA256SUMS does not verify counts as absent.

A wheels image is checked through digests and small metadata (issue #13): its labels, the
SHA256SUMS the build put on it as a label (``LABEL_DIST_SUMS``) and a HEAD of each layer blob
its manifest names; no layer is read. A layer blob missing behind a present manifest makes the
image absent (a rebuild pushes it again). A wheels image without that label (built before it
existed) is verified the old way, by reading /dist; a base wheels image without it is checked by
its labels only, as before.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from rocm_release.adapters.wheels_image import (
    BlobSource,
    LayerPresence,
    UnverifiedWheels,
    missing_layers,
    read_dist,
    sums_from_labels,
)
from rocm_release.core.decision import Observation
from rocm_release.core.plan import (
    LABEL_BASE_DIGEST,
    LABEL_BASE_KEY,
    LABEL_COMMIT,
    LABEL_DIST_SUMS,
    LABEL_SCHEMA,
    LABEL_VARIANT,
    SCHEMA_VERSION,
    ReleasePlan,
    VariantPlan,
)
from rocm_release.core.registry import ImageRegistry


class WheelsImageRegistry(ImageRegistry, BlobSource, LayerPresence, Protocol):
    """A registry that can also HEAD blobs (to check a wheels image) and stream them (to verify an
    image built before the sums label)."""


@runtime_checkable
class _HeadsBlobs(Protocol):
    """The capability of HEADing a blob (the OCI clients have it; the ECR API client does not)."""

    def blob_size(self, repository: str, digest: str) -> int | None: ...


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
    # Cheap: the sums label parsed, and the layers HEADed where the client can (no layer read).
    heads = registry if isinstance(registry, _HeadsBlobs) else None
    checked = _by_digests(heads, repo, wheels.digest, wheel_labels, "base wheels image")
    if checked is not None and not checked[0]:
        return Observation(present=False, reason=checked[1])
    note = checked[1] if checked is not None else f"base wheels image has no {LABEL_DIST_SUMS} label: labels only"
    return Observation(
        present=True, digest=base.digest, paired_digest=wheels.digest, labels=labels,
        reason=f"{v.cache_tags.base} and {v.cache_tags.base_wheels} are paired; {note}",
    )


def _by_digests(registry: LayerPresence | None, repo: str, digest: str, labels: dict[str, str],
                what: str) -> tuple[bool, str] | None:
    """A wheels image checked through its sums label and a HEAD of each layer (none when ``registry``
    is None): (present, reason), or None when it has no sums label."""
    where = f"{what} {digest}"
    try:
        sums = sums_from_labels(labels, where)
    except UnverifiedWheels as exc:
        return False, f"{where} does not verify: {exc}"
    if sums is None:
        return None
    wheels = ", ".join(name for name in sorted(sums) if name.endswith(".whl"))
    if registry is None:
        return True, f"{where}: its {LABEL_DIST_SUMS} label lists {wheels} (layers not checked)"
    missing = missing_layers(registry, repo, digest)
    if missing:
        return False, f"{where}: its manifest names layers the registry does not hold: {', '.join(missing)}"
    return True, f"{where}: layers present (HEAD), {LABEL_DIST_SUMS} lists {wheels}"


def observe_wheels_image(registry: WheelsImageRegistry, plan: ReleasePlan, v: VariantPlan) -> Observation:
    """The project's wheels image at this commit: present when its labels match, its sums label parses
    and every layer blob is in the registry (digests trusted, no layer read); an image without the
    sums label, only if its /dist verifies against SHA256SUMS (read whole, as before the label)."""
    repo = plan.cache_repository
    found = registry.lookup(repo, v.cache_tags.wheels)
    if not found.present:
        return Observation(present=False, reason=f"{v.cache_tags.wheels} is not in {registry.name}/{repo}")
    assert found.digest is not None
    labels = registry.labels(repo, found.digest)
    problem = _mismatch(labels, _expected(plan, v, commit=True))
    if problem:
        return Observation(present=False, reason=f"wheels image {found.digest}: {problem}")
    checked = _by_digests(registry, repo, found.digest, labels, "wheels image")
    if checked is not None:
        present, reason = checked
        return Observation(present=present, digest=found.digest if present else None,
                           labels=labels if present else {}, reason=reason)
    try:
        files = read_dist(registry, repo, found.digest)
    except UnverifiedWheels as exc:
        return Observation(present=False, reason=f"wheels image {found.digest} does not verify: {exc}")
    names = ", ".join(f.name for f in files if f.name.endswith(".whl"))
    return Observation(present=True, digest=found.digest, labels=labels,
                       reason=f"verified by reading /dist (no {LABEL_DIST_SUMS} label: built before it): {names}")


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
