"""BuildKit builds of one Dockerfile target, pushed by digest to the cache registry.

Commands are argument lists (never shell lines); every value reaches docker
as its own argument. Secrets reach the build only through BuildKit
``--secret`` files (never build args, labels or history), and the registry
password only through ``docker login --password-stdin`` into a throwaway
``DOCKER_CONFIG``. The pushed digest is taken from the push itself (the
``digest: sha256:…`` line of ``docker push``, or buildx's metadata file),
never from a later tag lookup.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rocm_release.adapters.git import redact
from rocm_release.core.names import DIGEST_RE
from rocm_release.core.plan import (
    LABEL_BASE_DIGEST,
    LABEL_BASE_KEY,
    LABEL_COMMIT,
    LABEL_KIND,
    LABEL_SCHEMA,
    LABEL_SOURCE,
    LABEL_VARIANT,
    SCHEMA_VERSION,
    ImageKind,
    ReleasePlan,
    VariantPlan,
)
from rocm_release.core.registry import ImageRegistry, LoginCredentials

DOCKER_CLI_ENV = "ROCM_NIGHTLY_DOCKER_CLI"
PUSH_DIGEST_RE = re.compile(r"digest: (?P<digest>sha256:[0-9a-f]{64}) size: [0-9]+")
Log = Callable[[str], None]


class BuildError(RuntimeError):
    """A build or push failed; the message says which command and why (never a secret)."""


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


def docker_cli() -> str:
    """The docker client: ``$ROCM_NIGHTLY_DOCKER_CLI`` or ``docker`` on PATH."""
    return os.environ.get(DOCKER_CLI_ENV) or "docker"


def has_buildx(cli: str, env: Mapping[str, str]) -> bool:
    """True when the client has the buildx plugin (then build and push are one step)."""
    probe = subprocess.run([cli, "buildx", "version"], env=dict(env), capture_output=True, check=False)
    return probe.returncode == 0


def build_command(cli: str, request: BuildRequest, *, buildx: bool, metadata_file: Path | None = None) -> list[str]:
    """The build command line for one request (``docker build`` with BuildKit, or ``buildx build --push``)."""
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
        args += ["--push"]
        if metadata_file is not None:
            args += ["--metadata-file", str(metadata_file)]
    args.append(str(request.context))
    return args


def push_command(cli: str, tag_ref: str) -> list[str]:
    """``docker push`` of one tag."""
    return [cli, "push", tag_ref]


def parse_push_digest(output: str) -> str:
    """The manifest digest ``docker push`` printed (``<tag>: digest: sha256:… size: N``)."""
    found = PUSH_DIGEST_RE.findall(output)
    if not found:
        raise BuildError("docker push printed no 'digest: sha256:… size:' line; refusing to guess the digest")
    return str(found[-1])


def run_streaming(args: Sequence[str], env: Mapping[str, str], log: Log, *, stdin: str | None = None) -> str:
    """Run a command, sending each output line to ``log`` as it comes; the whole output is returned."""
    lines: list[str] = []
    with subprocess.Popen(
        list(args), env=dict(env), stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
    ) as proc:
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            log(line)
        code = proc.wait()
    if code != 0:
        tail = "\n".join(lines[-15:])
        raise BuildError(f"{args[0]} {args[1]} failed with exit code {code}:\n{tail}")
    return "\n".join(lines)


@contextmanager
def docker_session(daemon_host: str | None, credentials: Sequence[LoginCredentials]) -> Iterator[dict[str, str]]:
    """An environment for docker commands: the daemon to use and a throwaway ``DOCKER_CONFIG``
    holding only this task's logins (removed afterwards, so no credential outlives the task)."""
    config_dir = Path(tempfile.mkdtemp(prefix="rocm-nightly-docker-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_CONFIG")}
    env.update({"DOCKER_CONFIG": str(config_dir), "DOCKER_BUILDKIT": "1", "BUILDKIT_PROGRESS": "plain"})
    if daemon_host:
        env["DOCKER_HOST"] = daemon_host
    try:
        for cred in credentials:
            proc = subprocess.run(
                [docker_cli(), "login", "--username", cred.username, "--password-stdin", cred.registry],
                env=env, input=cred.password, capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                raise BuildError(f"docker login to {cred.registry} as {cred.username} failed: {proc.stderr.strip()}")
        yield env
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)


def build_and_push(request: BuildRequest, env: Mapping[str, str], log: Log) -> str:
    """Build one target and push it; return the pushed manifest digest (from the push itself)."""
    cli = docker_cli()
    if has_buildx(cli, env):
        with tempfile.TemporaryDirectory(prefix="rocm-nightly-meta-") as tmp:
            meta = Path(tmp) / "metadata.json"
            run_streaming(build_command(cli, request, buildx=True, metadata_file=meta), env, log)
            digest = str(json.loads(meta.read_text()).get("containerimage.digest", ""))
    else:
        run_streaming(build_command(cli, request, buildx=False), env, log)
        digest = parse_push_digest(run_streaming(push_command(cli, request.tag_ref), env, log))
    if not DIGEST_RE.match(digest):
        raise BuildError(f"the push of {request.tag_ref} returned no valid digest ({digest!r})")
    return digest


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


def _pushed_by_this_run(registry: ImageRegistry, repo: str, tag: str, labels: Mapping[str, str]) -> str | None:
    """The digest this same run already pushed under ``tag`` with these input labels (a retry after a crash).

    Only this run's own push counts: an older image under the tag was judged
    by the sensors already (and found stale or unverifiable), so it is rebuilt.
    """
    found = registry.lookup(repo, tag)
    if not found.present or found.digest is None:
        return None
    have = registry.labels(repo, found.digest)
    if any(have.get(k) != v for k, v in labels.items()):
        return None
    return found.digest


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


def build_stage(
    *,
    plan: ReleasePlan,
    v: VariantPlan,
    stage: Stage,
    inputs: StageInputs,
    registry: ImageRegistry,
    env: Mapping[str, str],
    log: Log,
) -> dict[str, str]:
    """Build (or, on a retry, reuse what this run already pushed) one stage; return kind → pinned ref.

    ``base`` builds the base image, then the base wheels image labelled with
    the base image's digest: the pair is one unit. ``wheels`` and ``release``
    build on the base image by digest.
    """
    if stage not in STAGE_KINDS:
        raise ValueError(f"unknown stage {stage!r}; allowed: {sorted(STAGE_KINDS)}")
    if stage != "base" and (inputs.base_digest is None or not DIGEST_RE.match(inputs.base_digest)):
        raise BuildError(f"{stage} of {v.name} needs the base image digest, got {inputs.base_digest!r}")
    base_digest = inputs.base_digest
    refs: dict[str, str] = {}
    for kind in STAGE_KINDS[stage]:
        request = stage_request(plan, v, kind, inputs, None if kind == "base" else base_digest)
        digest = _pushed_by_this_run(registry, plan.cache_repository, str(getattr(v.cache_tags, kind)),
                                     request.labels)
        if digest:
            log(f"{request.tag_ref}: already pushed by this run as {digest}; reusing it (retry)")
        else:
            log(f"building {kind} ({request.target}) for {v.name} → {request.tag_ref}")
            digest = build_and_push(request, env, log)
            log(f"pushed {request.tag_ref} as {digest}")
        if kind == "base":
            base_digest = digest
        refs[kind] = plan.cache_ref(digest)
    return refs


def planned_commands(plan: ReleasePlan, v: VariantPlan, builds: Sequence[str], inputs: StageInputs,
                     base_digest: str | None) -> list[list[str]]:
    """The build and push commands ``builds`` would run (for a dry run's log).

    A digest not known before the build runs appears as ``<digest of …>``.
    """
    cli = docker_cli()
    commands = []
    stages = {"build_base_image": "base", "build_wheels": "wheels", "build_release_image": "release"}
    for build in builds:
        for kind in STAGE_KINDS[stages[build]]:
            label_digest = base_digest if kind != "base" else None
            if kind != "base" and "build_base_image" in builds:
                label_digest = "<digest of the base image built above>"
            request = stage_request(plan, v, kind, inputs, label_digest)
            commands += [build_command(cli, request, buildx=False), push_command(cli, request.tag_ref)]
    return commands
