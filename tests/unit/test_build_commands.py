"""The rendered build commands: golden files, argument lists, and what a push prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from rocm_release.core.build_commands import (
    BuildError,
    FatalPushError,
    StageInputs,
    TransientPushError,
    build_command,
    parse_push_digest,
    planned_commands,
    push_failure,
    stage_request,
)
from rocm_release.core.decision import BUILD_ORDER
from rocm_release.core.errors import FatalError, TransientError
from tests.unit.test_plan import _golden, _plan

INPUTS = StageInputs(
    context=Path("/build/src"), base_dockerfile="docker/Dockerfile.rocm_base", dockerfile="docker/Dockerfile.rocm",
    targets={"base": "base", "base_wheels": "base-wheels", "wheels": "wheels", "release": "release"},
    network="none", run_id="scheduled__2026-11-26T02:00:00+00:00",
    secrets={"sccache_aws": Path("/run/secrets/sccache_aws")},
)
BASE = "sha256:" + "ba" * 32


@pytest.mark.parametrize("config_name", ["demo", "vllm"])
def test_full_rebuild_commands_match_golden(config_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROCM_NIGHTLY_DOCKER_CLI", "docker")
    plan = _plan(config_name)
    _golden(f"commands_{config_name}", planned_commands(plan, plan.variants[0], BUILD_ORDER, INPUTS, None))


def test_values_stay_single_arguments_and_secrets_stay_files() -> None:
    plan = _plan("demo")
    v = plan.variants[0]
    request = stage_request(plan, v, "wheels", INPUTS, BASE)
    args = build_command("docker", request, buildx=False)
    assert "--build-arg" in args and f"PYTORCH_ROCM_ARCH={';'.join(v.variant.gpu_archs)}" in args
    assert args[args.index("--secret") + 1] == "id=sccache_aws,src=/run/secrets/sccache_aws"
    assert f"BASE_IMAGE={plan.cache_registry}/{plan.cache_repository}@{BASE}" in args
    assert args[-1] == "/build/src"
    buildx = build_command("docker", request, buildx=True)
    # The build ends in the daemon: the push is a command of its own, retried alone (never a rebuild).
    assert buildx[:3] == ["docker", "buildx", "build"] and "--load" in buildx and "--push" not in buildx
    assert "--push" not in args


def test_wheels_and_release_need_the_base_digest() -> None:
    plan = _plan("demo")
    with pytest.raises(BuildError, match="needs the base image digest"):
        stage_request(plan, plan.variants[0], "release", INPUTS, None)


def test_push_digest_comes_from_the_push_output() -> None:
    out = "The push refers to [127.0.0.1:5101/x]\nabc: Pushed\nt: digest: sha256:" + "1" * 64 + " size: 528\n"
    assert parse_push_digest(out) == "sha256:" + "1" * 64
    with pytest.raises(BuildError, match="refusing to guess"):
        parse_push_digest("abc: Pushed\n")


def test_force_rebuild_builds_without_any_cache() -> None:
    plan = _plan("demo", force_rebuild=True)
    args = build_command("docker", stage_request(plan, plan.variants[0], "base", INPUTS, None), buildx=False)
    assert "--no-cache" in args and "--cache-from" not in args
    normal = build_command("docker", stage_request(_plan("demo"), plan.variants[0], "base", INPUTS, None), buildx=False)
    assert "--no-cache" not in normal and "--cache-from" in normal


REFUSED = 'Get "http://127.0.0.1:5101/v2/": dial tcp 127.0.0.1:5101: connect: connection refused'


@pytest.mark.parametrize("output", [
    f"The push refers to repository [127.0.0.1:5101/x]\n{REFUSED}",
    "abc123: Retrying in 5 seconds\nPut \"http://127.0.0.1:5101/v2/x/blobs/uploads/u\": EOF",
    "received unexpected HTTP status: 503 Service Unavailable",
    "error parsing HTTP 502 response body: invalid character '<'",
    "net/http: TLS handshake timeout",
    "Get \"https://r/v2/\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
    "read tcp 127.0.0.1:4->127.0.0.1:5101: read: connection reset by peer",
    "toomanyrequests: Rate exceeded",
    "blob upload unknown: blob upload unknown to registry",
])
def test_a_push_that_met_an_outage_is_transient(output: str) -> None:
    error = push_failure("docker push of 127.0.0.1:5101/x:t", 1, output)
    assert isinstance(error, TransientPushError) and not isinstance(error, FatalError)
    assert str(error).startswith("docker push of 127.0.0.1:5101/x:t failed with exit code 1:\n")


@pytest.mark.parametrize("output", [
    "unauthorized: authentication required",
    "denied: requested access to the resource is denied",
    "no basic auth credentials",
    "An image does not exist locally with the tag: 127.0.0.1:5101/x",
    "manifest invalid: manifest invalid",
    "http: server gave HTTP response to HTTPS client",
    # A refusal wins over a network error seen on the way: retrying cannot fix the credentials.
    f"{REFUSED}\nunauthorized: authentication required",
])
def test_a_refused_push_is_fatal(output: str) -> None:
    error = push_failure("docker push of x", 1, output)
    assert isinstance(error, FatalPushError) and not isinstance(error, TransientError)


def test_an_unknown_push_failure_is_neither_retried_nor_called_fatal() -> None:
    error = push_failure("docker push of x", 1, "something nobody has seen before")
    assert type(error) is BuildError
