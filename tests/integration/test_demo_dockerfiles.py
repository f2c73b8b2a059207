"""The demo project's Dockerfiles, built for real: offline, on the local dockerd and cache registry.

Plain ``docker build`` commands (not the pipeline's build module), so a failure
here points at the Dockerfiles themselves. The source of each build is exported
from the demo history with ``GitMirror``, as a build task does.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rocm_release.adapters.config_file import load_config
from rocm_release.adapters.git import GitMirror
from tests.support.demo import DEMO_CONFIG, make_history

pytestmark = pytest.mark.integration

CONFIG = load_config(DEMO_CONFIG)
VARIANT = CONFIG.variant("rocm723")
TEST_REPOSITORY = "rocm-nightly/demo-dockerfiles-test"
LOCAL = "rocm-nightly-demo-test"  # local tag prefix of every image this module builds
WHEEL_RE = re.compile(r"^dist/[A-Za-z0-9_.+-]+-cp311-cp311-linux_x86_64\.whl$")


@dataclass
class Build:
    """One finished build: its tag, the BuildKit steps it ran and which of them were cached."""

    tag: str
    seconds: float
    steps: dict[str, str]  # step id -> name, e.g. "#11" -> "[build_tinyllm 4/4] RUN ..."
    cached: set[str]

    def ran(self, pattern: str) -> bool:
        """Whether a step whose name matches ``pattern`` ran (was not taken from the cache)."""
        hits = [i for i, name in self.steps.items() if re.search(pattern, name)]
        assert hits, f"no step matches {pattern!r}: {sorted(self.steps.values())}"
        return any(i not in self.cached for i in hits)


class Docker:
    """The docker CLI named by services.env, run with argument lists."""

    def __init__(self) -> None:
        self.cli = os.environ.get("ROCM_NIGHTLY_DOCKER_CLI", "/usr/bin/docker")
        self.env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        self.tags: set[str] = set()

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run([self.cli, *args], env=self.env, capture_output=True, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed:\n{proc.stderr.decode()[-4000:]}")
        return proc

    def build(
        self, context: Path, dockerfile: str, target: str, args: Mapping[str, str], tag: str, *, check: bool = True
    ) -> tuple[Build, str]:
        command = ["build", "--network", "none", "--progress", "plain", "-f", str(context / dockerfile)]
        for key, value in sorted(args.items()):
            command += ["--build-arg", f"{key}={value}"]
        command += ["--target", target, "-t", f"{LOCAL}/{tag}", str(context)]
        started = time.monotonic()
        proc = self.run(*command, check=check)
        seconds = time.monotonic() - started
        self.tags.add(f"{LOCAL}/{tag}")
        log = proc.stderr.decode()
        steps = dict(re.findall(r"^(#\d+) (\[[^\]]+\] .*)$", log, re.MULTILINE))
        cached = set(re.findall(r"^(#\d+) CACHED$", log, re.MULTILINE))
        print(f"built {target} ({tag}) in {seconds:.1f}s", file=sys.stderr)
        return Build(f"{LOCAL}/{tag}", seconds, steps, cached), log

    def push(self, tag: str, registry: str) -> str:
        """Push a local image to the cache registry; return ``repo@sha256:…`` from the push itself."""
        remote = f"{registry}/{TEST_REPOSITORY}:{tag.rsplit('/', 1)[-1].replace(':', '-')}"
        self.run("tag", tag, remote)
        self.tags.add(remote)
        out = self.run("push", remote).stdout.decode()
        digest = re.search(r"digest: (sha256:[0-9a-f]{64})", out)
        assert digest, out
        return f"{registry}/{TEST_REPOSITORY}@{digest.group(1)}"

    def layer_files(self, tag: str) -> dict[str, bytes]:
        """Every regular file and directory in an image's layers (``docker save``), path -> bytes."""
        saved = tarfile.open(fileobj=io.BytesIO(self.run("save", tag).stdout))
        files: dict[str, bytes] = {}
        for member in saved.getmembers():
            if not member.name.endswith("layer.tar"):
                continue
            layer_bytes = saved.extractfile(member)
            assert layer_bytes is not None
            with tarfile.open(fileobj=io.BytesIO(layer_bytes.read())) as layer:
                for entry in layer.getmembers():
                    data = layer.extractfile(entry) if entry.isfile() else None
                    files[entry.name.rstrip("/")] = data.read() if data else b""
        return files


@pytest.fixture(scope="module")
def docker(services: dict[str, Any]) -> Iterator[Docker]:
    d = Docker()
    yield d
    if d.tags:
        d.run("rmi", *sorted(d.tags), check=False)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[GitMirror, dict[str, str], Path]:
    """The demo history, a mirror of it, and a folder for build contexts."""
    root = tmp_path_factory.mktemp("demo-build")
    shas = make_history(root / "tinyllm.git")
    mirror = GitMirror(f"file://{root / 'tinyllm.git'}", root / "cache")
    mirror.update()
    return mirror, shas, root


def context(source: tuple[GitMirror, dict[str, str], Path], label: str) -> Path:
    mirror, shas, root = source
    dest = root / "ctx" / label
    return dest if dest.exists() else mirror.export(shas[label], dest)


def base_args(parent: str) -> dict[str, str]:
    return {
        "BASE_IMAGE": parent,
        "ROCM_VERSION": VARIANT.rocm_version,
        "PYTHON_VERSION": VARIANT.python_version,
        "PYTORCH_ROCM_ARCH": ";".join(VARIANT.gpu_archs),
    }


@pytest.fixture(scope="module")
def base(docker: Docker, source: tuple[GitMirror, dict[str, str], Path]) -> dict[str, Any]:
    """Both base targets of the first commit, and the base pushed by digest."""
    ctx = context(source, "initial")
    parent = os.environ["ROCM_NIGHTLY_BASE_OS_IMAGE"]
    dockerfile = CONFIG.project.base_dockerfile
    image, _ = docker.build(ctx, dockerfile, "base", base_args(parent), "base:initial")
    wheels, _ = docker.build(ctx, dockerfile, "base-wheels", base_args(parent), "base-wheels:initial")
    ref = docker.push(image.tag, os.environ["ROCM_NIGHTLY_CACHE_REGISTRY"])
    return {"image": image, "wheels": wheels, "ref": ref, "parent": parent}


def project_build(
    docker: Docker, source: tuple[GitMirror, dict[str, str], Path], base_ref: str, label: str, target: str
) -> Build:
    ctx = context(source, label)
    args = {"BASE_IMAGE": base_ref, **{k: v for k, v in base_args("").items() if k != "BASE_IMAGE"}}
    build, _ = docker.build(ctx, CONFIG.project.dockerfile, target, args, f"{target}:{label}")
    return build


def run_in(docker: Docker, tag: str, *command: str) -> str:
    return docker.run("run", "--rm", "--network", "none", tag, *command).stdout.decode()


def only_dist(files: Mapping[str, bytes]) -> list[str]:
    """Check the shape every wheels-type image has; return its wheel names."""
    assert set(files) == {"dist", "dist/SHA256SUMS", *[p for p in files if WHEEL_RE.match(p)]}, sorted(files)
    wheels = sorted(p.removeprefix("dist/") for p in files if WHEEL_RE.match(p))
    assert wheels
    sums = files["dist/SHA256SUMS"].decode().splitlines()
    assert sums == [f"{hashlib.sha256(files['dist/' + w]).hexdigest()}  {w}" for w in wheels]
    return wheels


# --------------------------------------------------------------------------- base Dockerfile


def test_base_records_its_build_args(docker: Docker, base: dict[str, Any]) -> None:
    tag = base["image"].tag
    assert run_in(docker, tag, "cat", "/opt/rocm/.info/version") == f"{VARIANT.rocm_version}\n"
    assert run_in(docker, tag, "cat", "/etc/rocm-nightly/base.env").splitlines() == [
        f"BASE_IMAGE={base['parent']}",
        f"ROCM_VERSION={VARIANT.rocm_version}",
        f"PYTHON_VERSION={VARIANT.python_version}",
        f"PYTORCH_ROCM_ARCH={';'.join(VARIANT.gpu_archs)}",
    ]
    env = run_in(docker, tag, "env").splitlines()
    assert f"ROCM_VERSION={VARIANT.rocm_version}" in env
    assert f"PYTORCH_ROCM_ARCH={';'.join(VARIANT.gpu_archs)}" in env
    info = run_in(docker, tag, "python3", "-c", "import tinytorch; print(tinytorch.__version__, tinytorch.version.hip)")
    assert info == f"2.9.0+rocm{VARIANT.rocm_version} {VARIANT.rocm_version}\n"


def test_base_wheels_hold_exactly_the_wheels_installed_in_base(docker: Docker, base: dict[str, Any]) -> None:
    files = docker.layer_files(base["wheels"].tag)
    assert only_dist(files) == [f"tinytorch-2.9.0+rocm{VARIANT.rocm_version}-cp311-cp311-linux_x86_64.whl"]
    installed = run_in(docker, base["image"].tag, "cat", "/etc/rocm-nightly/base-wheels.SHA256SUMS")
    assert installed.encode() == files["dist/SHA256SUMS"]


def test_base_refuses_a_python_version_the_parent_does_not_have(
    docker: Docker, source: tuple[GitMirror, dict[str, str], Path], base: dict[str, Any]
) -> None:
    args = {**base_args(base["parent"]), "PYTHON_VERSION": "3.12"}
    _, log = docker.build(
        context(source, "initial"), CONFIG.project.base_dockerfile, "base", args, "base:py312", check=False
    )
    assert "PYTHON_VERSION is '3.12' but the parent image's python3 is 3.11" in log


def test_a_base_dockerfile_label_change_reuses_every_base_layer(
    docker: Docker, source: tuple[GitMirror, dict[str, str], Path], base: dict[str, Any]
) -> None:
    build, _ = docker.build(
        context(source, "base_change"), CONFIG.project.base_dockerfile, "base", base_args(base["parent"]),
        "base:base_change",
    )
    assert not build.ran(r"RUN ")
    labels = docker.run("inspect", "--format", "{{json .Config.Labels}}", build.tag).stdout.decode()
    assert "org.opencontainers.image.vendor" in labels


# --------------------------------------------------------------------------- project Dockerfile


def test_wheels_image_holds_only_the_project_wheel(
    docker: Docker, source: tuple[GitMirror, dict[str, str], Path], base: dict[str, Any]
) -> None:
    build = project_build(docker, source, base["ref"], "initial", "wheels")
    files = docker.layer_files(build.tag)
    assert only_dist(files) == ["tinyllm-0.1.0-cp311-cp311-linux_x86_64.whl"]
    with zipfile.ZipFile(io.BytesIO(files["dist/tinyllm-0.1.0-cp311-cp311-linux_x86_64.whl"])) as wheel:
        metadata = wheel.read("tinyllm-0.1.0.dist-info/METADATA").decode()
        tags = wheel.read("tinyllm-0.1.0.dist-info/WHEEL").decode()
        assert any(n.endswith(".cpython-311-x86_64-linux-gnu.so") for n in wheel.namelist())
    assert re.search(r"^Requires-Dist: tinytorch", metadata, re.MULTILINE)
    assert re.search(r"^Requires-Python: ", metadata, re.MULTILINE)
    assert "Tag: cp311-cp311-linux_x86_64" in tags


def test_release_runs_offline_and_names_its_build(
    docker: Docker, source: tuple[GitMirror, dict[str, str], Path], base: dict[str, Any]
) -> None:
    build = project_build(docker, source, base["ref"], "initial", "release")
    out = docker.run("run", "--rm", "--network", "none", build.tag).stdout.decode()
    archs = ";".join(VARIANT.gpu_archs)
    assert out.startswith(
        f"tinyllm 0.1.0 (tinytorch 2.9.0+rocm{VARIANT.rocm_version}, ROCm {VARIANT.rocm_version}, archs {archs})"
    ), out
    assert run_in(docker, build.tag, "cat", "/etc/rocm-nightly/release.env") == f"BASE_IMAGE={base['ref']}\n"


def test_a_source_only_commit_rebuilds_only_the_wheel_step(
    docker: Docker, source: tuple[GitMirror, dict[str, str], Path], base: dict[str, Any]
) -> None:
    project_build(docker, source, base["ref"], "initial", "wheels")
    build = project_build(docker, source, base["ref"], "source_change", "wheels")
    # The base and the build metadata come from the cache; the wheel step's output is new
    # (whether that step ran now or in an earlier session depends on the daemon's cache).
    assert not build.ran(r"COPY pyproject\.toml setup\.py")
    assert not build.ran(r"COPY csrc/")
    files = docker.layer_files(build.tag)
    assert only_dist(files) == ["tinyllm-0.1.1-cp311-cp311-linux_x86_64.whl"]
    release = project_build(docker, source, base["ref"], "source_change", "release")
    assert docker.run("run", "--rm", "--network", "none", release.tag).stdout.decode().startswith("tinyllm 0.1.1 ")


def test_a_rebuild_without_changes_is_fully_cached(
    docker: Docker, source: tuple[GitMirror, dict[str, str], Path], base: dict[str, Any]
) -> None:
    project_build(docker, source, base["ref"], "initial", "release")
    again = project_build(docker, source, base["ref"], "initial", "release")
    assert not again.ran(r"RUN ")
