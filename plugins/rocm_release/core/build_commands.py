"""The docker command lines of a build, as argument lists: pure functions of the plan.

Every value reaches docker as its own argument (never a shell line). Secrets appear only as
``--secret id=…,src=<file>``; their values never do. ``adapters.docker_build`` runs these commands;
a dry run prints them (``core.dry_run``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rocm_release.core.errors import FatalError, TransientError
from rocm_release.core.names import redact
from rocm_release.core.plan import (
    LABEL_BASE_DIGEST,
    LABEL_BASE_KEY,
    LABEL_COMMIT,
    LABEL_DIST_SUMS,
    LABEL_KIND,
    LABEL_SCHEMA,
    LABEL_SOURCE,
    LABEL_VARIANT,
    SCHEMA_VERSION,
    ImageKind,
    ReleasePlan,
    VariantPlan,
)
from rocm_release.core.task_ids import BUILD_BASE_IMAGE, BUILD_RELEASE_IMAGE, BUILD_WHEELS

PUSH_DIGEST_RE = re.compile(r"digest: (?P<digest>sha256:[0-9a-f]{64}) size: [0-9]+")


class BuildError(RuntimeError):
    """A build or push failed; the message says which command and why (never a secret)."""


class TransientPushError(BuildError, TransientError):
    """``docker push`` or ``docker login`` met an outage (refused connection, timeout, 429, 5xx): push again."""


class FatalPushError(BuildError, FatalError):
    """The registry refused the push or login (401/403), or the image to push is not there: a person must act."""


# What docker prints (client or daemon, any version since 20.10) when the registry refuses us for good:
# checked first, so a refusal is never retried even when the same output also shows a network error.
FATAL_PUSH_MARKERS = (
    "unauthorized", "denied", "authentication required", "no basic auth credentials", "forbidden",
    "incorrect username or password", "does not exist locally", "no such image", "manifest invalid",
    "digest invalid", "blob upload invalid", "name invalid", "tag invalid", "server gave http response to https",
    "x509:", "certificate",
)
# ... and when the registry (or the way to it) is down, slow or overloaded.
TRANSIENT_PUSH_RE = re.compile(
    r"connection refused|connection reset|broken pipe|\bEOF\b|i/o timeout|timeout exceeded|handshake timeout"
    r"|context deadline exceeded|request canceled|no route to host|network is unreachable|no such host"
    r"|temporary failure in name resolution|toomanyrequests|too many requests|\b429\b"
    r"|status: 5[0-9][0-9]|HTTP 5[0-9][0-9]"
    r"|service unavailable|bad gateway|gateway timeout|internal server error|blob upload unknown",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class BuildRequest:
    """One Dockerfile target to build and push."""

    context: Path
    dockerfile: str
    target: str
    tag_ref: str
    build_args: Mapping[str, str]
    labels: Mapping[str, str]
    cache_from: Sequence[str] = ()
    secrets: Mapping[str, Path] = field(default_factory=dict)
    network: str = "default"
    no_cache: bool = False


def build_command(cli: str, request: BuildRequest, *, buildx: bool) -> list[str]:
    """The build command line for one request: ``docker build`` with BuildKit, or ``buildx build --load``.

    Never ``--push``: the build ends in the local daemon and ``docker push`` runs next, on its own,
    so a registry outage during the push is retried without building again.
    """
    args = [cli, "buildx", "build"] if buildx else [cli, "build"]
    args += ["--progress=plain", "--file", str(request.context / request.dockerfile), "--target", request.target]
    if request.network != "default":
        args += ["--network", request.network]
    for key, value in sorted(request.build_args.items()):
        args += ["--build-arg", f"{key}={value}"]
    # Inline cache metadata lets a build on a fresh host reuse these layers from the registry.
    args += ["--build-arg", "BUILDKIT_INLINE_CACHE=1"]
    for key, value in sorted(request.labels.items()):
        args += ["--label", f"{key}={value}"]
    if request.no_cache:
        args += ["--no-cache"]  # a forced rebuild really rebuilds (as the reference's force switch does)
    for ref in request.cache_from:
        args += ["--cache-from", ref]
    for secret_id, path in sorted(request.secrets.items()):
        args += ["--secret", f"id={secret_id},src={path}"]
    args += ["--tag", request.tag_ref]
    if buildx:
        args += ["--load"]  # into the daemon's image store, as ``docker build`` does, for ``docker push``
    args.append(str(request.context))
    return args


def push_command(cli: str, tag_ref: str) -> list[str]:
    """``docker push`` of one tag."""
    return [cli, "push", tag_ref]


# Wheels images get their /dist/SHA256SUMS as a label between build and push (``label_build_command``).
WHEELS_IMAGE_KINDS: frozenset[ImageKind] = frozenset({"wheels", "base_wheels"})
DIST_SUMS_PATH = "/dist/SHA256SUMS"
# A throwaway local name for the image being labelled: BuildKit's FROM takes a name, not an image id.
LABEL_SOURCE_REPOSITORY = "rocm-nightly-label-source"
# ``docker create`` wants a command; a FROM-scratch image has none. The container is never started.
NEVER_RUN = "rocm-nightly-never-run"


def label_dockerfile(source_ref: str) -> str:
    """The Dockerfile (sent on stdin) of the labelling build: the image as it is, no instruction added."""
    return f"FROM {source_ref}\n"


def label_build_command(cli: str, source_ref: str, tag_ref: str, labels: Mapping[str, str], *,
                        buildx: bool, iidfile: Path | str) -> list[str]:
    """A build of ``label_dockerfile(source_ref)`` from stdin (no context, no network) that adds ``labels``
    and retags ``tag_ref``: a new image config over the very same layers (no layer is added)."""
    args = [cli, "buildx", "build"] if buildx else [cli, "build"]
    args += ["--progress=plain", "--network", "none", "--iidfile", str(iidfile)]
    for key, value in sorted(labels.items()):
        args += ["--label", f"{key}={value}"]
    args += ["--tag", tag_ref]
    if buildx:
        args += ["--load"]
    args.append("-")
    return args


def push_failure(what: str, code: int, output: str) -> BuildError:
    """The error of a failed ``docker push``/``docker login``, classified from what docker printed.

    Refused credentials and bad input → FatalPushError (no retry); an outage → TransientPushError
    (retried); anything else stays a plain BuildError (not retried: we do not know that it helps).
    The message quotes the last lines of the output (docker prints no secret there).
    """
    tail = "\n".join(output.splitlines()[-15:])
    message = f"{what} failed with exit code {code}:\n{tail}"
    lowered = output.lower()
    if any(marker in lowered for marker in FATAL_PUSH_MARKERS):
        return FatalPushError(message)
    if TRANSIENT_PUSH_RE.search(output):
        return TransientPushError(message)
    return BuildError(message)


def parse_push_digest(output: str) -> str:
    """The manifest digest ``docker push`` printed (``<tag>: digest: sha256:… size: N``)."""
    found = PUSH_DIGEST_RE.findall(output)
    if not found:
        raise BuildError("docker push printed no 'digest: sha256:… size:' line; refusing to guess the digest")
    return str(found[-1])


def image_labels(plan: ReleasePlan, v: VariantPlan, kind: ImageKind, *, base_digest: str | None) -> dict[str, str]:
    """The labels that record every input of an image (DESIGN.md)."""
    labels = {
        LABEL_SCHEMA: str(SCHEMA_VERSION),
        LABEL_BASE_KEY: v.base_key,
        LABEL_VARIANT: v.name,
        LABEL_KIND: kind,
        LABEL_SOURCE: redact(plan.git_url),
        "dev.rocm-nightly.rocm-version": v.variant.rocm_version,
        "dev.rocm-nightly.python-version": v.variant.python_version,
        "dev.rocm-nightly.gpu-archs": ";".join(v.variant.gpu_archs),
        "dev.rocm-nightly.parent-image": v.parent_image,
    }
    if kind in ("wheels", "release"):
        labels[LABEL_COMMIT] = plan.commit
    if base_digest is not None:
        labels[LABEL_BASE_DIGEST] = base_digest
    return {k: val for k, val in labels.items() if val}


LABEL_RUN_ID = "dev.rocm-nightly.run-id"
Stage = str  # "base" (base + base wheels), "wheels" or "release"


@dataclass(frozen=True)
class StageInputs:
    """What one build task needs besides the plan: where the source is, which daemon, which base."""

    context: Path
    base_dockerfile: str
    dockerfile: str
    targets: Mapping[str, str]
    network: str
    run_id: str
    secrets: Mapping[str, Path] = field(default_factory=dict)
    base_digest: str | None = None


STAGE_KINDS: dict[str, tuple[ImageKind, ...]] = {
    "base": ("base", "base_wheels"),
    "wheels": ("wheels",),
    "release": ("release",),
}


def stage_request(plan: ReleasePlan, v: VariantPlan, kind: ImageKind, inputs: StageInputs,
                  base_digest: str | None) -> BuildRequest:
    """The one BuildRequest of an image kind: Dockerfile, target, args, labels, tag, cache source.

    ``base_digest`` is the base image's digest: a label of every image built on
    it (and, for wheels and release, their ``BASE_IMAGE``); None for the base itself.
    """
    if kind in ("base", "base_wheels"):
        dockerfile, args = inputs.base_dockerfile, dict(v.base_build_args)
    else:
        if base_digest is None:
            raise BuildError(f"{kind} of {v.name} needs the base image digest")
        dockerfile = inputs.dockerfile
        args = {**v.build_args, "BASE_IMAGE": f"{plan.cache_registry}/{plan.cache_repository}@{base_digest}"}
    tag = str(getattr(v.cache_tags, kind))
    labels = {**image_labels(plan, v, kind, base_digest=base_digest), LABEL_RUN_ID: inputs.run_id}
    return BuildRequest(
        context=inputs.context, dockerfile=dockerfile, target=inputs.targets[kind], tag_ref=plan.cache_ref(tag),
        build_args=args, labels=labels, cache_from=[] if plan.force_rebuild else [plan.cache_ref(tag)],
        secrets=inputs.secrets, network=inputs.network, no_cache=plan.force_rebuild,
    )


def planned_commands(plan: ReleasePlan, v: VariantPlan, builds: Sequence[str], inputs: StageInputs,
                     base_digest: str | None, *, cli: str = "docker") -> list[list[str]]:
    """The build and push commands ``builds`` would run (for a dry run's log).

    A digest not known before the build runs appears as ``<digest of …>``; so do the local image
    id and the SHA256SUMS of a wheels image's labelling build (read from the built image).
    """
    commands = []
    stages: dict[str, Stage] = {BUILD_BASE_IMAGE: "base", BUILD_WHEELS: "wheels", BUILD_RELEASE_IMAGE: "release"}
    for build in builds:
        for kind in STAGE_KINDS[stages[build]]:
            label_digest = base_digest if kind != "base" else None
            if kind != "base" and BUILD_BASE_IMAGE in builds:
                label_digest = "<digest of the base image built above>"
            request = stage_request(plan, v, kind, inputs, label_digest)
            commands.append(build_command(cli, request, buildx=False))
            if kind in WHEELS_IMAGE_KINDS:
                commands.append(label_build_command(
                    cli, f"{LABEL_SOURCE_REPOSITORY}:<image id of the build above>", request.tag_ref,
                    {LABEL_DIST_SUMS: f"<{DIST_SUMS_PATH} of the build above>"}, buildx=False,
                    iidfile="<temporary file>"))
            commands.append(push_command(cli, request.tag_ref))
    return commands
