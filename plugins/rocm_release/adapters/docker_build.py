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
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from rocm_release.core.build_commands import (
    STAGE_KINDS,
    BuildError,
    BuildRequest,
    Stage,
    StageInputs,
    build_command,
    parse_push_digest,
    push_command,
    push_failure,
    stage_request,
)
from rocm_release.core.names import DIGEST_RE
from rocm_release.core.plan import (
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


def build_and_push(request: BuildRequest, env: Mapping[str, str], log: Log, retrying: Retrying = ONCE) -> str:
    """Build one target into the daemon, then push it (only the push is retried, as ``retrying`` says);
    return the pushed manifest digest (from the push itself)."""
    cli = docker_cli()
    run_streaming(build_command(cli, request, buildx=has_buildx(cli, env)), env, log)
    digest = retrying(f"docker push of {request.tag_ref}", lambda: push_image(request.tag_ref, env, log))
    if not DIGEST_RE.match(digest):
        raise BuildError(f"the push of {request.tag_ref} returned no valid digest ({digest!r})")
    return digest


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
        digest = retrying(f"look-up of {request.tag_ref}",
                          partial(_pushed_by_this_run, registry, plan.cache_repository, tag, request.labels))
        if digest:
            log(f"{request.tag_ref}: already pushed by this run as {digest}; reusing it (retry)")
        else:
            log(f"building {kind} ({request.target}) for {v.name} → {request.tag_ref}")
            digest = build_and_push(request, env, log, retrying)
            log(f"pushed {request.tag_ref} as {digest}")
        if kind == "base":
            base_digest = digest
        refs[kind] = plan.cache_ref(digest)
    return refs
