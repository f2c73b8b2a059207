"""The rendered build commands: golden files, argument lists, and what a push prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from rocm_release.core.build_commands import (
    BuildError,
    StageInputs,
    build_command,
    parse_push_digest,
    planned_commands,
    stage_request,
)
from rocm_release.core.decision import BUILD_ORDER
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
    buildx = build_command("docker", request, buildx=True, metadata_file=Path("/tmp/m.json"))
    assert buildx[:3] == ["docker", "buildx", "build"] and "--push" in buildx


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
