"""BuildKit builds of one Dockerfile target, pushed by digest to the cache registry.

Commands are argument lists (never shell lines); every value reaches docker
as its own argument. Secrets reach the build only through BuildKit
``--secret`` files (never build args, labels or history), and the registry
password only through ``docker login --password-stdin`` into a throwaway
``DOCKER_CONFIG``. The pushed digest is taken from the push itself (the
``digest: sha256:…`` line of ``docker push``), never from a later tag lookup.

Build and push are two commands (also with buildx: ``--load``, then ``docker push``), so a registry
outage during the push is retried alone, with backoff, for the configured window (``retry`` in the
config, ``core.retrying``); the build never runs again for it. ``docker login`` and the registry
look-up before the build are retried the same way. A refusal (401/403) fails at once.

A wheels image (``wheels``, ``base_wheels``) gets its ``/dist/SHA256SUMS`` as the label
``LABEL_DIST_SUMS`` between build and push (``label_dist_sums``): the file is copied out of a
container created (never started) from the built image, and a second build of ``FROM <that
image>`` adds the label, a new image config over the same layers. The labelled image is what is
pushed, so sensors check wheels images through digests and that label, never reading a wheel.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from rocm_release.adapters.wheels_image import sums_from_labels
from rocm_release.core.build_commands import (
    DIST_SUMS_PATH,
    LABEL_SOURCE_REPOSITORY,
    NEVER_RUN,
    STAGE_KINDS,
    WHEELS_IMAGE_KINDS,
    BuildError,
    BuildRequest,
    Stage,
    StageInputs,
    build_command,
    label_build_command,
    label_dockerfile,
    parse_push_digest,
    push_command,
    push_failure,
    stage_request,
)
from rocm_release.core.errors import FatalError
from rocm_release.core.names import DIGEST_RE
from rocm_release.core.plan import (
    LABEL_DIST_SUMS,
    ReleasePlan,
    VariantPlan,
)
from rocm_release.core.registry import ImageRegistry, LoginCredentials
from rocm_release.core.retrying import ONCE, Retrying

DOCKER_CLI_ENV = "ROCM_NIGHTLY_DOCKER_CLI"
Log = Callable[[str], None]


def docker_cli() -> str:
    """The docker client: ``$ROCM_NIGHTLY_DOCKER_CLI`` or ``docker`` on PATH."""
    return os.environ.get(DOCKER_CLI_ENV) or "docker"


def has_buildx(cli: str, env: Mapping[str, str]) -> bool:
    """True when the client has the buildx plugin (then it builds, with ``--load``)."""
    probe = subprocess.run([cli, "buildx", "version"], env=dict(env), capture_output=True, check=False)
    return probe.returncode == 0


def run_streaming(args: Sequence[str], env: Mapping[str, str], log: Log, *, stdin: str | None = None) -> str:
    """Run a command, sending each output line to ``log`` as it comes; the whole output is returned.
    A non-zero exit raises BuildError with the last lines."""
    code, output = run_logged(args, env, log, stdin=stdin)
    if code != 0:
        tail = "\n".join(output.splitlines()[-15:])
        daemon = env.get("DOCKER_HOST") or "the default docker daemon"
        # A daemon stopped mid-build leaves docker saying only "unexpected EOF": say whether it is gone.
        gone = "" if _daemon_answers(args[0], env) else " (the daemon does not answer now: stopped or restarted?)"
        raise BuildError(f"{args[0]} {args[1]} on {daemon} failed with exit code {code}{gone}:\n{tail}")
    return output


def run_logged(args: Sequence[str], env: Mapping[str, str], log: Log, *,
               stdin: str | None = None) -> tuple[int, str]:
    """Run a command, sending each output line to ``log`` as it comes; (exit code, whole output)."""
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
    return code, "\n".join(lines)


def docker_login(cred: LoginCredentials, env: Mapping[str, str]) -> None:
    """``docker login`` with the password on stdin; a failure classified like a push's."""
    proc = subprocess.run(
        [docker_cli(), "login", "--username", cred.username, "--password-stdin", cred.registry],
        env=dict(env), input=cred.password, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise push_failure(f"docker login to {cred.registry} as {cred.username}", proc.returncode,
                           proc.stderr.strip())


def _daemon_answers(cli: str, env: Mapping[str, str]) -> bool:
    """Whether the daemon of ``env`` answers ``docker version`` within 20 s."""
    try:
        probe = subprocess.run([cli, "version", "--format", "{{.Server.Version}}"], env=dict(env),
                               capture_output=True, check=False, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@contextmanager
def docker_session(daemon_host: str | None, credentials: Sequence[LoginCredentials],
                   retrying: Retrying = ONCE) -> Iterator[dict[str, str]]:
    """An environment for docker commands: the daemon to use and a throwaway ``DOCKER_CONFIG``
    holding only this task's logins (removed afterwards, so no credential outlives the task).
    Each login is retried through outages as ``retrying`` says."""
    config_dir = Path(tempfile.mkdtemp(prefix="rocm-nightly-docker-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_CONFIG")}
    env.update({"DOCKER_CONFIG": str(config_dir), "DOCKER_BUILDKIT": "1", "BUILDKIT_PROGRESS": "plain"})
    if daemon_host:
        env["DOCKER_HOST"] = daemon_host
    try:
        for cred in credentials:
            retrying(f"docker login to {cred.registry}", partial(docker_login, cred, env))
        yield env
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)


def push_image(tag_ref: str, env: Mapping[str, str], log: Log) -> str:
    """``docker push`` of an image the daemon has; the manifest digest it printed. Failures classified."""
    cli = docker_cli()
    code, output = run_logged(push_command(cli, tag_ref), env, log)
    if code != 0:
        raise push_failure(f"docker push of {tag_ref}", code, output)
    return parse_push_digest(output)


class MissingDistSums(BuildError, FatalError):
    """A wheels image was built without a valid /dist/SHA256SUMS: its Dockerfile target must write one."""


MAX_SUMS_BYTES = 1 << 20
# What ``docker cp`` says (daemon 20.10 on) for a path the container's image does not hold.
_NOT_THERE = ("no such container:path", "could not find the file", "no such file or directory")


def _docker_output(args: Sequence[str], env: Mapping[str, str]) -> bytes:
    """A short docker command's stdout; a non-zero exit raises BuildError with what it printed."""
    proc = subprocess.run(list(args), env=dict(env), capture_output=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(args[:3])} failed with exit code {proc.returncode}: "
                         f"{proc.stderr.decode('utf-8', 'replace').strip()[-2000:]}")
    return proc.stdout


def _inspect(image: str, env: Mapping[str, str]) -> dict[str, object]:
    """``docker image inspect`` of one local image: its id, layer diff ids and labels."""
    out = _docker_output([docker_cli(), "image", "inspect", "--format",
                          '{"id":{{json .Id}},"layers":{{json .RootFS.Layers}},"labels":{{json .Config.Labels}}}',
                          image], env)
    found: dict[str, object] = json.loads(out)
    return found


def read_image_file(image: str, path: str, env: Mapping[str, str]) -> bytes:
    """One small file of a local image, through a container created (never started) from it; the
    container is removed afterwards. A file that is not there raises MissingDistSums."""
    cli = docker_cli()
    container = _docker_output([cli, "create", image, NEVER_RUN], env).decode().strip()
    try:
        proc = subprocess.run([cli, "cp", f"{container}:{path}", "-"], env=dict(env), capture_output=True,
                              check=False)
    finally:
        subprocess.run([cli, "rm", container], env=dict(env), capture_output=True, check=False)
    if proc.returncode != 0:
        error = proc.stderr.decode("utf-8", "replace").strip()
        # The container was just created, so "no such container:path" means the path is not in the image.
        kind = MissingDistSums if any(m in error.lower() for m in _NOT_THERE) else BuildError
        raise kind(f"{path} of image {image}: docker cp failed: {error[-2000:]}")
    with tarfile.open(fileobj=io.BytesIO(proc.stdout), mode="r:") as tar:
        member = next((m for m in tar if m.isfile()), None)
        if member is None or member.size > MAX_SUMS_BYTES:
            raise MissingDistSums(f"{path} of image {image} is not a regular file of at most {MAX_SUMS_BYTES} bytes")
        stream = tar.extractfile(member)
        assert stream is not None  # a regular file always has a stream
        return stream.read()


def label_dist_sums(request: BuildRequest, env: Mapping[str, str], log: Log, *, buildx: bool) -> str:
    """Put the built wheels image's /dist/SHA256SUMS on it as ``LABEL_DIST_SUMS`` (the text exactly),
    without adding a layer; ``request.tag_ref`` then names the labelled image. Returns the text.

    Fails fatally (MissingDistSums) when the image has no SHA256SUMS listing at least one wheel.
    """
    cli = docker_cli()
    built = _inspect(request.tag_ref, env)
    image_id = str(built["id"])
    raw = read_image_file(image_id, DIST_SUMS_PATH, env)
    where = f"{request.tag_ref} (target {request.target})"
    try:
        text = raw.decode("utf-8")
        sums_from_labels({LABEL_DIST_SUMS: text}, where)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MissingDistSums(f"{DIST_SUMS_PATH} of {where} is not sha256sum output of its wheels: {exc}") from exc
    source = f"{LABEL_SOURCE_REPOSITORY}:{image_id.removeprefix('sha256:')[:12]}-{uuid.uuid4().hex[:8]}"
    _docker_output([cli, "tag", image_id, source], env)
    try:
        with tempfile.TemporaryDirectory(prefix="rocm-nightly-label-") as tmp:
            iidfile = Path(tmp) / "iid"
            run_streaming(label_build_command(cli, source, request.tag_ref, {LABEL_DIST_SUMS: text},
                                              buildx=buildx, iidfile=iidfile),
                          env, lambda line: log(f"label build: {line}"), stdin=label_dockerfile(source))
            labelled = _inspect(iidfile.read_text().strip(), env)
    finally:
        # Only the throwaway name goes (the labelled image keeps the layers; the build cache stays).
        subprocess.run([cli, "image", "rm", source], env=dict(env), capture_output=True, check=False)
    labels, layers = labelled["labels"], built["layers"]
    if labelled["layers"] != layers or not isinstance(labels, dict) or labels.get(LABEL_DIST_SUMS) != text:
        raise BuildError(f"labelling {where} changed its layers or lost the label: {built} → {labelled}")
    count = len(layers) if isinstance(layers, list) else 0
    log(f"{request.tag_ref}: labelled {LABEL_DIST_SUMS} ({len(text)} bytes), same {count} layer(s), "
        f"image {labelled['id']}")
    return text


def build_and_push(request: BuildRequest, env: Mapping[str, str], log: Log, retrying: Retrying = ONCE, *,
                   dist_sums: bool = False) -> str:
    """Build one target into the daemon, then push it (only the push is retried, as ``retrying`` says);
    return the pushed manifest digest (from the push itself). With ``dist_sums`` (a wheels image) the
    built image is labelled with its SHA256SUMS before the push (``label_dist_sums``)."""
    cli = docker_cli()
    buildx = has_buildx(cli, env)
    run_streaming(build_command(cli, request, buildx=buildx), env, log)
    if dist_sums:
        label_dist_sums(request, env, log, buildx=buildx)
    digest = retrying(f"docker push of {request.tag_ref}", lambda: push_image(request.tag_ref, env, log))
    if not DIGEST_RE.match(digest):
        raise BuildError(f"the push of {request.tag_ref} returned no valid digest ({digest!r})")
    return digest


def _pushed_by_this_run(registry: ImageRegistry, repo: str, tag: str, labels: Mapping[str, str], *,
                        dist_sums: bool = False) -> str | None:
    """The digest this same run already pushed under ``tag`` with these input labels (a retry after a crash);
    for a wheels image (``dist_sums``) also with its SHA256SUMS label, as every push of it has.

    Only this run's own push counts: an older image under the tag was judged
    by the sensors already (and found stale or unverifiable), so it is rebuilt.
    """
    found = registry.lookup(repo, tag)
    if not found.present or found.digest is None:
        return None
    have = registry.labels(repo, found.digest)
    if any(have.get(k) != v for k, v in labels.items()):
        return None
    if dist_sums and LABEL_DIST_SUMS not in have:
        return None
    return found.digest


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

    Registry calls and pushes are retried through outages for ``plan.config.retry``'s window;
    the build itself runs once.

    ``base`` builds the base image, then the base wheels image labelled with
    the base image's digest: the pair is one unit. ``wheels`` and ``release``
    build on the base image by digest.
    """
    if stage not in STAGE_KINDS:
        raise ValueError(f"unknown stage {stage!r}; allowed: {sorted(STAGE_KINDS)}")
    if stage != "base" and (inputs.base_digest is None or not DIGEST_RE.match(inputs.base_digest)):
        raise BuildError(f"{stage} of {v.name} needs the base image digest, got {inputs.base_digest!r}")
    base_digest = inputs.base_digest
    retrying = plan.config.retry.retrying(log)
    refs: dict[str, str] = {}
    for kind in STAGE_KINDS[stage]:
        request = stage_request(plan, v, kind, inputs, None if kind == "base" else base_digest)
        tag = str(getattr(v.cache_tags, kind))
        wheels_image = kind in WHEELS_IMAGE_KINDS
        digest = retrying(f"look-up of {request.tag_ref}", partial(
            _pushed_by_this_run, registry, plan.cache_repository, tag, request.labels, dist_sums=wheels_image))
        if digest:
            log(f"{request.tag_ref}: already pushed by this run as {digest}; reusing it (retry)")
        else:
            log(f"building {kind} ({request.target}) for {v.name} → {request.tag_ref}")
            digest = build_and_push(request, env, log, retrying, dist_sums=wheels_image)
            log(f"pushed {request.tag_ref} as {digest}")
        if kind == "base":
            base_digest = digest
        refs[kind] = plan.cache_ref(digest)
    return refs
