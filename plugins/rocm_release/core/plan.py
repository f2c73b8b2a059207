"""The ReleasePlan: every name, key, tag and path one release uses — pure functions.

This module is the single source of truth for naming. Tasks never build a tag
or path themselves; they read it from the plan that ``resolve_release``
computed once and passed through XCom. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from rocm_release.core.config import ReleaseConfig, Variant
from rocm_release.core.errors import FatalError
from rocm_release.core.frozen import Frozen
from rocm_release.core.names import DIGEST_RE, SHA_RE, TAG_RE
from rocm_release.core.params import ReleaseParams

# Bump when the meaning of a key or a label changes: every cached image then counts as absent.
SCHEMA_VERSION = 1
KEY_HEX = 16

RunKind = Literal["scheduled", "manual", "backfill"]


# Labels every image we build carries (DESIGN.md: "labels recording every input").
LABEL_PREFIX = "dev.rocm-nightly."
LABEL_SCHEMA = LABEL_PREFIX + "schema"
LABEL_BASE_KEY = LABEL_PREFIX + "base-key"
LABEL_BASE_DIGEST = LABEL_PREFIX + "base-digest"
LABEL_VARIANT = LABEL_PREFIX + "variant"
LABEL_KIND = LABEL_PREFIX + "kind"
LABEL_COMMIT = "org.opencontainers.image.revision"
LABEL_SOURCE = "org.opencontainers.image.source"
# On wheels images: their /dist/SHA256SUMS, verbatim, put there at build time, so that a sensor
# checks the image through its manifest, this label and HEADs of its layers without reading a wheel.
LABEL_DIST_SUMS = LABEL_PREFIX + "dist-sha256sums"

ImageKind = Literal["base", "base_wheels", "wheels", "release"]
IMAGE_KINDS: tuple[ImageKind, ...] = ("base", "base_wheels", "wheels", "release")


# --------------------------------------------------------------------------- names


def base_tag(base_key: str, variant: str) -> str:
    """Cache tag of the base image: ``<base_key>-<variant>-base``."""
    return _tag(f"{base_key}-{variant}-base")


def base_wheels_tag(base_key: str, variant: str) -> str:
    """Cache tag of the base wheels image: ``<base_key>-<variant>-base-wheels``."""
    return _tag(f"{base_key}-{variant}-base-wheels")


def wheels_tag(commit: str, variant: str) -> str:
    """Cache tag of the project's wheels image: ``<commit>-<variant>-wheels``."""
    return _tag(f"{commit}-{variant}-wheels")


def release_tag(commit: str, variant: str) -> str:
    """Cache tag of the release (runtime) image: ``<commit>-<variant>``."""
    return _tag(f"{commit}-{variant}")


def public_tag(pattern: str, *, variant: str, commit: str) -> str:
    """Render one public tag pattern from config (``nightly-{variant}`` …)."""
    return _tag(pattern.format(variant=variant, commit=commit))


def tag_regex(pattern: str, variant: str) -> re.Pattern[str]:
    """An exact (anchored) regex for the tags a pattern yields for one variant, any commit.

    Retention matches with these, never with prefixes: ``nightly-`` as a prefix
    would also match ``nightly-<commit>-rocm714`` (REFERENCE_PIPELINE.md §2.11).
    """
    parts = re.split(r"(\{commit\}|\{variant\})", pattern)
    body = "".join(
        "(?P<commit>[0-9a-f]{40})" if p == "{commit}" else re.escape(variant) if p == "{variant}" else re.escape(p)
        for p in parts
    )
    return re.compile(f"^{body}$")


def cache_tag_regexes(variant: str) -> dict[str, re.Pattern[str]]:
    """Exact regexes of the per-commit and per-key cache tags of one variant."""
    return {
        "base": re.compile(rf"^(?P<key>[0-9a-f]{{{KEY_HEX}}})-{re.escape(variant)}-base$"),
        "base_wheels": re.compile(rf"^(?P<key>[0-9a-f]{{{KEY_HEX}}})-{re.escape(variant)}-base-wheels$"),
        "wheels": re.compile(rf"^(?P<commit>[0-9a-f]{{40}})-{re.escape(variant)}-wheels$"),
        "release": re.compile(rf"^(?P<commit>[0-9a-f]{{40}})-{re.escape(variant)}$"),
    }


def _tag(tag: str) -> str:
    if not TAG_RE.match(tag):
        raise ValueError(f"{tag!r} is not a valid OCI tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})")
    return tag


def wheels_prefix(store_url: str, commit: str, variant: str) -> str:
    """Per-commit wheel folder: ``<store>/<commit>/<variant>/``."""
    return f"{store_url.rstrip('/')}/{commit}/{variant}/"


BASE_FOLDER = "base"


def base_wheels_prefix(store_url: str, base_key: str, variant: str, base_wheels_digest: str) -> str:
    """A base's wheels, stored once and linked from every commit built on it:
    ``<store>/base/<base key>-<variant>-<12 hex of the base wheels image digest>/``.

    Keyed by base key and variant, and by the image the wheels come from: a base rebuilt on the same key
    (``force_rebuild``) gets a folder of its own, so a published file's bytes never change under the pages
    of earlier commits that link it.
    """
    hex12 = base_wheels_digest.removeprefix("sha256:")[:12]
    return f"{store_url.rstrip('/')}/{BASE_FOLDER}/{base_key}-{variant}-{hex12}/"


def nightly_wheels_prefix(store_url: str, variant: str) -> str:
    """The nightly alias folder: ``<store>/nightly/<variant>/``."""
    return f"{store_url.rstrip('/')}/nightly/{variant}/"


# --------------------------------------------------------------------------- keys


def base_build_args(config: ReleaseConfig, variant: Variant, parent_image: str) -> dict[str, str]:
    """The effective build args of the base Dockerfile for one variant (sorted by name).

    The variant's own fields become the args vLLM's Dockerfile reads, so a base
    built for one variant can never be mistaken for another's.
    """
    args = {
        **config.project.build_args,
        "BASE_IMAGE": parent_image,
        "ROCM_VERSION": variant.rocm_version,
        "PYTHON_VERSION": variant.python_version,
        "PYTORCH_ROCM_ARCH": ";".join(variant.gpu_archs),
        **variant.build_args,
    }
    return dict(sorted(args.items()))


def base_key(
    *,
    dockerfile: bytes,
    inputs: Mapping[str, bytes],
    parent_image: str,
    build_args: Mapping[str, str],
    variant: Variant,
    schema: int = SCHEMA_VERSION,
) -> str:
    """Content identity of the base: first 16 hex of a sha256 over every input that changes it.

    Inputs: the schema version, the base Dockerfile's bytes, each configured
    extra input file (path and bytes), the parent image reference (pinned by
    digest), the effective build args (order-free) and the variant's fields.
    """
    document = {
        "schema": schema,
        "dockerfile": hashlib.sha256(dockerfile).hexdigest(),
        "inputs": {path: hashlib.sha256(data).hexdigest() for path, data in sorted(inputs.items())},
        "parent": parent_image,
        "build_args": dict(sorted(build_args.items())),
        "variant": variant.model_dump(mode="json"),
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:KEY_HEX]


# --------------------------------------------------------------------------- the plan


class CacheTags(Frozen):
    """Tags of the four images of one variant in the cache registry."""

    base: str
    base_wheels: str
    wheels: str
    release: str


class PublicTags(Frozen):
    """The tags one variant's images get in the public registry."""

    nightly: str
    nightly_commit: str
    base_nightly: str
    base_nightly_commit: str


class VariantPlan(Frozen):
    """Everything one variant's tasks need; computed once by ``make_plan``."""

    variant: Variant
    base_key: str
    parent_image: str
    base_build_args: dict[str, str]
    build_args: dict[str, str]
    cache_tags: CacheTags
    public_tags: PublicTags
    wheels_url: str
    nightly_wheels_url: str

    @property
    def name(self) -> str:
        """The variant's name."""
        return self.variant.name


class ReleasePlan(Frozen):
    """A frozen description of one release: the commit, the run kind and every name it uses."""

    schema_version: int = SCHEMA_VERSION
    project: str
    git_url: str
    branch: str
    commit: Annotated[str, Field(pattern=SHA_RE.pattern)]
    commit_time: datetime | None = None
    run_kind: RunKind
    as_of: datetime
    promote: bool
    force_rebuild: bool
    dry_run: bool
    # Manual runs only (core.params): the gate's tests are skipped, loudly; never a scheduled run.
    skip_tests: bool = False
    cache_registry: str
    cache_repository: str
    public_registry: str
    public_repository: str
    store_url: str
    summary_url: str
    variants: tuple[VariantPlan, ...]
    # The config as resolve_release read it: later tasks (on any worker) use this, never the file.
    config: ReleaseConfig

    def variant(self, name: str) -> VariantPlan:
        """The plan of one variant; KeyError naming the planned ones otherwise."""
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"variant {name!r} is not in this plan; planned: {[v.name for v in self.variants]}")

    def cache_ref(self, tag_or_digest: str) -> str:
        """A full reference in the cache registry: ``host/repo:tag`` or ``host/repo@sha256:…``."""
        sep = "@" if DIGEST_RE.match(tag_or_digest) else ":"
        return f"{self.cache_registry}/{self.cache_repository}{sep}{tag_or_digest}"

    def public_ref(self, tag_or_digest: str) -> str:
        """A full reference in the public registry."""
        sep = "@" if DIGEST_RE.match(tag_or_digest) else ":"
        return f"{self.public_registry}/{self.public_repository}{sep}{tag_or_digest}"


def should_promote(run_kind: RunKind, params: ReleaseParams) -> bool:
    """Scheduled runs promote; manual runs only when asked; backfills never."""
    if run_kind == "scheduled":
        return True
    if run_kind == "manual":
        return params.promote
    return False


class PlanError(ValueError, FatalError):
    """The inputs cannot make a plan (a commit that is no full SHA, a missing input file, an unpinned parent)."""


def _pinned_parent(config: ReleaseConfig, variant: Variant, parent_images: Mapping[str, str]) -> str:
    parent_ref = variant.parent_image or config.project.parent_image
    try:
        parent = parent_images[parent_ref]
    except KeyError:
        raise PlanError(f"parent image {parent_ref!r} of variant {variant.name!r} was not resolved") from None
    if "@sha256:" not in parent:
        raise PlanError(f"parent image {parent!r} must be pinned by digest")
    return parent


def _variant_plan(config: ReleaseConfig, variant: Variant, *, commit: str, parent: str, base_dockerfile: bytes,
                  base_inputs: Mapping[str, bytes], store: str) -> VariantPlan:
    """One variant's keys, args, tags and paths."""
    args = base_build_args(config, variant, parent)
    key = base_key(dockerfile=base_dockerfile, inputs={p: base_inputs[p] for p in config.project.base_inputs},
                   parent_image=parent, build_args=args, variant=variant)
    project_args = {
        **config.project.build_args,
        "PYTHON_VERSION": variant.python_version,
        "PYTORCH_ROCM_ARCH": ";".join(variant.gpu_archs),
        "ROCM_VERSION": variant.rocm_version,
        **variant.build_args,
    }
    v, tags = variant.name, config.public_tags
    return VariantPlan(
        variant=variant,
        base_key=key,
        parent_image=parent,
        base_build_args=args,
        build_args=dict(sorted(project_args.items())),
        cache_tags=CacheTags(base=base_tag(key, v), base_wheels=base_wheels_tag(key, v),
                             wheels=wheels_tag(commit, v), release=release_tag(commit, v)),
        public_tags=PublicTags(
            nightly=public_tag(tags.nightly, variant=v, commit=commit),
            nightly_commit=public_tag(tags.nightly_commit, variant=v, commit=commit),
            base_nightly=public_tag(tags.base_nightly, variant=v, commit=commit),
            base_nightly_commit=public_tag(tags.base_nightly_commit, variant=v, commit=commit),
        ),
        wheels_url=wheels_prefix(store, commit, v),
        nightly_wheels_url=nightly_wheels_prefix(store, v),
    )


def make_plan(
    config: ReleaseConfig,
    *,
    commit: str,
    run_kind: RunKind,
    as_of: datetime,
    params: ReleaseParams,
    base_dockerfile: bytes,
    base_inputs: Mapping[str, bytes],
    parent_images: Mapping[str, str],
    commit_time: datetime | None = None,
) -> ReleasePlan:
    """Compute the whole plan. ``parent_images`` maps each configured parent reference to its
    digest-pinned form (``ref@sha256:…``), resolved by the caller."""
    if not SHA_RE.match(commit):
        raise PlanError(f"commit must be a full 40-hex SHA, got {commit!r}")
    missing = sorted(set(config.project.base_inputs) - set(base_inputs))
    if missing:
        raise PlanError(f"base input files missing from the source at {commit}: {missing}")
    selected: Sequence[Variant] = (
        [config.variant(n) for n in params.variants] if params.variants else list(config.variants)
    )
    store = config.wheel_store.url.rstrip("/")
    plans = [
        _variant_plan(config, variant, commit=commit, parent=_pinned_parent(config, variant, parent_images),
                      base_dockerfile=base_dockerfile, base_inputs=base_inputs, store=store)
        for variant in selected
    ]
    return ReleasePlan(
        project=config.project.name,
        git_url=config.project.git_url,
        branch=config.project.branch,
        commit=commit,
        commit_time=commit_time,
        run_kind=run_kind,
        as_of=as_of,
        promote=should_promote(run_kind, params),
        force_rebuild=params.force_rebuild,
        dry_run=params.dry_run,
        skip_tests=params.skip_tests,
        cache_registry=config.cache_registry.host,
        cache_repository=config.cache_registry.repository,
        public_registry=config.public_registry.host,
        public_repository=config.public_registry.repository,
        store_url=store,
        summary_url=f"{store}/{commit}/RELEASE.md",
        variants=tuple(plans),
        config=config,
    )
