"""Issue 4's acceptance through ``build_stage``, the code path the build operator runs.

Real BuildKit builds on private docker daemons, pushed to the real local cache
registry (a repository unique to this module), from the sample project exported
with ``GitMirror`` out of the demo history, with the demo config narrowed to one
variant. The builds run on daemons this module starts itself (``dockerd`` with
its own data root, exec root and socket), so a "cold" daemon is really empty and
nothing here depends on, or disturbs, what others build on the shared daemon:

1. all four images of a variant are pushed, labelled with their inputs; the two
   wheels images hold only ``dist/``; the release image's command runs offline;
2. a rebuild of the same commit compiles nothing: every BuildKit step is
   CACHED, except (when the base is rebuilt too, as force_rebuild does) the
   release step that records the new base digest; wheels are byte-identical;
   a retry within the run pushes nothing; a source-only commit keeps the base
   key, a base Dockerfile change does not;
3. a base build on a second, empty daemon takes every layer from the registry's
   inline cache instead of running the RUN steps;
4. a build secret (an Airflow connection) is used by the build but appears in
   no log line, image history, image config or rendered template field.

Cold and warm build times are printed (run with ``-s``); nothing asserts on them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from rocm_release.adapters.config_file import REPO_ROOT
from rocm_release.adapters.docker_build import build_stage, docker_cli, docker_session
from rocm_release.adapters.git import GitMirror
from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.adapters.wheels_image import layer_digests, parse_sums, read_dist
from rocm_release.core.build_commands import LABEL_RUN_ID, StageInputs
from rocm_release.core.config import ReleaseConfig, parse_config
from rocm_release.core.params import ReleaseParams
from rocm_release.core.plan import (
    LABEL_BASE_DIGEST,
    LABEL_BASE_KEY,
    LABEL_COMMIT,
    LABEL_DIST_SUMS,
    LABEL_KIND,
    LABEL_SCHEMA,
    LABEL_VARIANT,
    SCHEMA_VERSION,
    ReleasePlan,
    make_plan,
)
from tests.support.demo import demo_config, make_history
from tests.support.dockerd import PrivateDockerd, private_dockerd
from tests.support.registries import remove_tags

pytestmark = pytest.mark.integration

VARIANT = "rocm710"
STAGES = ("base", "wheels", "release")
CANARY_ID = "canary_secret"
# What pip prints when it really builds a wheel (the compile step ran rather than coming from the cache).
COMPILED_MARKERS = ("Building wheel for", "Created wheel for")
STEP_RE = re.compile(r"^(#\d+) (\[[^\]]+\] .*)$")
CACHED_RE = re.compile(r"^(#\d+) CACHED$")
# A Dockerfile instruction step ("[stage 2/4] RUN ..."), as opposed to "[internal] load ..." bookkeeping.
INSTRUCTION_RE = re.compile(r"^\[(?:[\w.-]+ )?\d+/\d+\] (?P<instruction>[A-Z]+) ")
BUILD_START_RE = re.compile(r"^building (?P<kind>\w+) \(")


# --------------------------------------------------------------------------- the test's world


@dataclass
class StageRun:
    """One ``build_stage`` call: what it returned, every line it logged, and how long it took."""

    refs: dict[str, str]
    lines: list[str]
    seconds: float

    def builds(self) -> dict[str, list[str]]:
        """The log lines of each image's build (and push), by image kind."""
        found: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in self.lines:
            start = BUILD_START_RE.match(line)
            if start:
                current = found.setdefault(start["kind"], [])
            if current is not None:
                current.append(line)
        return found


@dataclass
class Steps:
    """The Dockerfile steps of one build (BuildKit plain progress) and which came from the cache."""

    names: dict[str, str]
    cached: set[str]

    @classmethod
    def parse(cls, lines: list[str]) -> Steps:
        names: dict[str, str] = {}
        cached: set[str] = set()
        for line in lines:
            if m := STEP_RE.match(line):
                names.setdefault(m[1], m[2])
            elif m := CACHED_RE.match(line):
                cached.add(m[1])
        return cls(names, cached)

    def instructions(self, kind: str) -> dict[str, str]:
        """Step id -> name of every ``kind`` instruction (RUN, COPY, ...)."""
        return {i: n for i, n in self.names.items() if (m := INSTRUCTION_RE.match(n)) and m["instruction"] == kind}

    def executed(self) -> list[str]:
        """The instruction steps (FROM aside) that ran instead of coming from the cache."""
        return sorted(n for i, n in self.names.items()
                      if (m := INSTRUCTION_RE.match(n)) and m["instruction"] != "FROM" and i not in self.cached)


@dataclass
class World:
    """Config, demo history, registry and daemon of this module."""

    root: Path
    config: ReleaseConfig
    mirror: GitMirror
    shas: dict[str, str]
    registry: OciRegistry
    parent: str
    daemon: PrivateDockerd
    contexts: dict[str, Path] = field(default_factory=dict)

    @property
    def repo(self) -> str:
        return self.config.cache_registry.repository

    @property
    def repo_prefix(self) -> str:
        """``<prefix>`` of the repositories ``<prefix>/tinyllm`` (cache) and ``<prefix>/tinyllm-rocm``."""
        return self.repo.rsplit("/", 1)[0]

    def context(self, label: str) -> Path:
        """The source at a commit of the demo history, exported as a build task does."""
        if label not in self.contexts:
            self.contexts[label] = self.mirror.export(self.shas[label], self.root / "src" / label)
        return self.contexts[label]

    def plan(self, label: str, *, base_dockerfile: bytes | None = None) -> ReleasePlan:
        """The plan ``resolve_release`` would make for a manual run of one commit."""
        commit = self.shas[label]
        project = self.config.project
        return make_plan(
            self.config, commit=commit, run_kind="manual", as_of=datetime.now(UTC), params=ReleaseParams(),
            base_dockerfile=base_dockerfile or self.mirror.read_file(commit, project.base_dockerfile),
            base_inputs={p: self.mirror.read_file(commit, p) for p in project.base_inputs},
            parent_images={project.parent_image: self.parent},
            commit_time=self.mirror.commit_time(commit),
        )

    def build(
        self, plan: ReleasePlan, context: Path, stage: str, *, run_id: str, base_digest: str | None = None,
        daemon: PrivateDockerd | None = None, secret_files: Mapping[str, Path] | None = None,
    ) -> StageRun:
        """``build_stage`` as BuildImageOperator calls it, on one of this module's daemons."""
        project = self.config.project
        inputs = StageInputs(
            context=context, base_dockerfile=project.base_dockerfile, dockerfile=project.dockerfile,
            targets=project.targets.model_dump(), network=self.config.build.network, run_id=run_id,
            secrets=dict(secret_files or {}), base_digest=base_digest,
        )
        lines: list[str] = []
        started = time.monotonic()
        with docker_session((daemon or self.daemon).host, []) as env:
            refs = build_stage(plan=plan, v=plan.variant(VARIANT), stage=stage, inputs=inputs,
                               registry=self.registry, env=env, log=lines.append)
        return StageRun(refs, lines, time.monotonic() - started)

    def build_all(self, label: str, *, run_id: str) -> dict[str, StageRun]:
        """The three build tasks of one variant in DAG order: base (two images), wheels, release."""
        plan, context = self.plan(label), self.context(label)
        runs = {"base": self.build(plan, context, "base", run_id=run_id)}
        base_digest = runs["base"].refs["base"].split("@", 1)[1]
        for stage in ("wheels", "release"):
            runs[stage] = self.build(plan, context, stage, run_id=run_id, base_digest=base_digest)
        return runs

    def docker(self, *args: str, daemon: PrivateDockerd | None = None) -> str:
        """A docker CLI command against one of this module's daemons; its stdout."""
        env = {**os.environ, "DOCKER_HOST": (daemon or self.daemon).host}
        proc = subprocess.run([docker_cli(), *args], env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr[-3000:]}"
        return proc.stdout

    def digest(self, ref: str) -> str:
        return ref.split("@", 1)[1]

    def layer_entries(self, ref: str) -> list[str]:
        """Every path in every layer of an image, read through the registry's blob API."""
        entries = []
        for digest in layer_digests(self.registry, self.repo, self.digest(ref)):
            with self.registry.open_blob(self.repo, digest) as blob, tarfile.open(fileobj=blob, mode="r|*") as tar:
                entries += [member.name for member in tar]
        return entries

    def sums(self, ref: str) -> dict[str, str]:
        """File name -> sha256 of /dist (verified against the image's SHA256SUMS by read_dist)."""
        return {f.name: f.sha256 for f in read_dist(self.registry, self.repo, self.digest(ref))}


def _config(root: Path, repository_prefix: str, **build: Any) -> ReleaseConfig:
    """The demo config with this module's git repository, cache repository and one variant."""
    demo = demo_config(root, repository_prefix, [VARIANT])
    demo["build"].update(build)
    return parse_config(yaml.safe_dump(demo), "test_build config", repo_root=str(REPO_ROOT))


@pytest.fixture(scope="module")
def world(services: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("build")
    shas = make_history(root / "tinyllm.git")
    config = _config(root, f"build-test-{uuid.uuid4().hex[:10]}")
    mirror = GitMirror(config.project.git_url, root / "git-cache")
    mirror.update()
    base_os = services["base_os_image"]
    # As resolve_release pins it: "host/repo:tag@sha256:…".
    assert config.project.parent_image == base_os["tag_reference"]
    parent = f"{base_os['tag_reference']}@{base_os['digest']}"
    registry = OciRegistry(config.cache_registry.host, scheme=config.cache_registry.scheme)
    try:
        with private_dockerd(root, "a") as daemon:
            yield World(root, config, mirror, shas, registry, parent, daemon)
    finally:
        registry.close()
        remove_tags(config.cache_registry.host, [config.cache_registry.repository])


@pytest.fixture(scope="module")
def cold(world: World) -> dict[str, StageRun]:
    """All four images of the first commit, built on the empty daemon."""
    assert world.docker("images", "--all", "--quiet") == "", "daemon a is not empty"
    runs = world.build_all("initial", run_id=f"cold-{uuid.uuid4().hex[:8]}")
    print(f"\ncold build, all four targets of {VARIANT} on an empty daemon: "
          f"{sum(r.seconds for r in runs.values()):.1f}s "
          f"({', '.join(f'{s} {r.seconds:.1f}s' for s, r in runs.items())})")
    return runs


@pytest.fixture(scope="module")
def warm(world: World, cold: dict[str, StageRun]) -> dict[str, StageRun]:
    """The same commit again, in another run, on the same daemon: nothing changed."""
    runs = world.build_all("initial", run_id=f"warm-{uuid.uuid4().hex[:8]}")
    print(f"\nwarm rebuild, same commit, same daemon: {sum(r.seconds for r in runs.values()):.1f}s "
          f"({', '.join(f'{s} {r.seconds:.1f}s' for s, r in runs.items())})")
    return runs


def _refs(runs: Mapping[str, StageRun]) -> dict[str, str]:
    return {kind: ref for run in runs.values() for kind, ref in run.refs.items()}


# --------------------------------------------------------------------------- 1. four labelled images


def test_one_variant_builds_four_images_labelled_with_their_inputs(world: World, cold: dict[str, StageRun]) -> None:
    refs = _refs(cold)
    assert set(refs) == {"base", "base_wheels", "wheels", "release"}
    plan = world.plan("initial")
    v = plan.variant(VARIANT)
    prefix = f"{world.config.cache_registry.host}/{world.repo}@sha256:"
    assert all(ref.startswith(prefix) for ref in refs.values()), refs
    assert len(set(refs.values())) == 4
    # Each digest is what the cache tag of its kind now names.
    for kind, tag in v.cache_tags.model_dump().items():
        assert world.registry.lookup(world.repo, tag).digest == world.digest(refs[kind]), kind

    base_digest = world.digest(refs["base"])
    common = {
        LABEL_SCHEMA: str(SCHEMA_VERSION),
        LABEL_BASE_KEY: v.base_key,
        LABEL_VARIANT: VARIANT,
        "dev.rocm-nightly.rocm-version": "7.1.0",
        "dev.rocm-nightly.python-version": "3.11",
        "dev.rocm-nightly.gpu-archs": "gfx90a;gfx942;gfx950",
        "dev.rocm-nightly.parent-image": world.parent,
    }
    for kind, ref in refs.items():
        labels = world.registry.labels(world.repo, world.digest(ref))
        assert {k: labels.get(k) for k in common} == common, kind
        assert labels[LABEL_KIND] == kind
        assert labels[LABEL_RUN_ID].startswith("cold-")
        if kind in ("wheels", "release"):
            assert labels[LABEL_COMMIT] == world.shas["initial"], kind
        else:
            assert LABEL_COMMIT not in labels, kind
        if kind == "base":
            assert LABEL_BASE_DIGEST not in labels
        else:
            assert labels[LABEL_BASE_DIGEST] == base_digest, kind


def test_wheels_images_hold_only_dist(world: World, cold: dict[str, StageRun]) -> None:
    refs = _refs(cold)
    for kind, wheel in (("base_wheels", "tinytorch-2.9.0+rocm7.1.0-cp311-cp311-linux_x86_64.whl"),
                        ("wheels", "tinyllm-0.1.0-cp311-cp311-linux_x86_64.whl")):
        entries = world.layer_entries(refs[kind])
        assert entries, kind
        outside = [e for e in entries if e.strip("./").split("/", 1)[0] != "dist"]
        assert outside == [], f"{kind} holds entries outside dist/: {outside}"
        assert sorted(e.strip("./") for e in entries) == ["dist", "dist/SHA256SUMS", f"dist/{wheel}"], kind
        assert list(world.sums(refs[kind])) == [wheel]  # and SHA256SUMS verifies
        # ... and is on the image as a label (issue #13), the very sums /dist holds.
        labels = world.registry.labels(world.repo, world.digest(refs[kind]))
        assert parse_sums(labels[LABEL_DIST_SUMS]) == world.sums(refs[kind]), kind


def test_release_image_command_runs_offline_and_imports_the_package(world: World, cold: dict[str, StageRun]) -> None:
    ref = _refs(cold)["release"]
    out = world.docker("run", "--rm", "--network", "none", ref)
    assert out.startswith("tinyllm 0.1.0 (tinytorch 2.9.0+rocm7.1.0, ROCm 7.1.0, archs gfx90a;gfx942;gfx950)"), out


# --------------------------------------------------------------------------- 2. rebuilds compile nothing


def test_cold_build_compiled_both_wheels(cold: dict[str, StageRun]) -> None:
    # The counterpart of the next test: on the empty daemon the wheel steps really ran.
    builds = {kind: lines for run in cold.values() for kind, lines in run.builds().items()}
    for kind in ("base", "wheels"):
        log = "\n".join(builds[kind])
        assert all(marker in log for marker in COMPILED_MARKERS), kind
        assert any("pip wheel" in name for name in Steps.parse(builds[kind]).executed()), kind


def test_rebuild_of_the_same_commit_compiles_nothing(
    world: World, cold: dict[str, StageRun], warm: dict[str, StageRun]
) -> None:
    """All three build tasks again in a new run (what force_rebuild does): every step comes from the
    cache but one: the release step that records the base image's reference, which is new."""
    builds = {kind: lines for run in warm.values() for kind, lines in run.builds().items()}
    assert set(builds) == {"base", "base_wheels", "wheels", "release"}
    for kind, lines in builds.items():
        steps = Steps.parse(lines)
        assert steps.instructions("RUN") or steps.instructions("COPY"), f"{kind}: no build steps in the log"
        assert not any(marker in line for line in lines for marker in COMPILED_MARKERS), kind
        # The pip wheel steps are in every build that needs them, and CACHED.
        wheel_steps = {i for i, n in steps.instructions("RUN").items() if "pip wheel" in n}
        if kind != "release":
            assert wheel_steps, f"{kind}: no pip wheel step in the log"
        assert wheel_steps <= steps.cached, kind
    for kind in ("base", "base_wheels", "wheels"):
        assert Steps.parse(builds[kind]).executed() == [], f"{kind} ran steps instead of taking them from the cache"
    # The new run's base differs from the old one only by its run label (layers, history, everything
    # else identical), so its digest is new, and the release step that writes BASE_IMAGE (pinned by
    # that digest) into the image runs again: a pip install of the cached wheel, no compile.
    old, new = _refs(cold), _refs(warm)
    configs = [world.registry.image_config(world.repo, world.digest(r["base"])) for r in (old, new)]
    for config in configs:
        config["config"]["Labels"].pop(LABEL_RUN_ID)
    assert configs[0] == configs[1]
    assert new["base"] != old["base"]
    executed = Steps.parse(builds["release"]).executed()
    assert len(executed) == 1 and new["base"] in executed[0] and "pip install" in executed[0], executed
    # New images (new labels), byte-identical wheels.
    for kind in ("base_wheels", "wheels"):
        assert new[kind] != old[kind]
        assert world.sums(new[kind]) == world.sums(old[kind]), kind


def test_rebuild_on_an_unchanged_base_runs_no_step_at_all(world: World, warm: dict[str, StageRun]) -> None:
    """The decision table's "base present" rows: wheels and release again, on the base now in the cache."""
    plan, context = world.plan("initial"), world.context("initial")
    found = world.registry.lookup(world.repo, plan.variant(VARIANT).cache_tags.base)
    assert found.present and found.digest
    run_id = f"again-{uuid.uuid4().hex[:8]}"
    runs = {stage: world.build(plan, context, stage, run_id=run_id, base_digest=found.digest)
            for stage in ("wheels", "release")}
    for stage, run in runs.items():
        lines = run.builds()[stage]
        steps = Steps.parse(lines)
        assert steps.instructions("RUN"), stage
        assert steps.executed() == [], f"{stage} ran steps instead of taking them from the cache"
        assert not any(marker in line for line in lines for marker in COMPILED_MARKERS), stage
    assert world.sums(runs["wheels"].refs["wheels"]) == world.sums(warm["wheels"].refs["wheels"])


def test_retry_in_the_same_run_reuses_what_it_pushed(world: World, cold: dict[str, StageRun]) -> None:
    """A build task retried within its run (same run id) pushes nothing new: the tag already holds its image."""
    plan, context = world.plan("initial"), world.context("initial")
    found = world.registry.lookup(world.repo, plan.variant(VARIANT).cache_tags.release)
    assert found.present and found.digest
    labels = world.registry.labels(world.repo, found.digest)
    again = world.build(plan, context, "release", run_id=labels[LABEL_RUN_ID],
                        base_digest=labels[LABEL_BASE_DIGEST])
    assert again.refs == {"release": plan.cache_ref(found.digest)}
    assert not any(line.startswith("building ") for line in again.lines), again.lines
    assert any("reusing it (retry)" in line for line in again.lines)


def test_base_key_follows_base_inputs_only(world: World) -> None:
    keys = {label: world.plan(label).variant(VARIANT).base_key
            for label in ("initial", "source_change", "base_change")}
    assert keys["source_change"] == keys["initial"]  # a package source change needs no base build
    assert keys["base_change"] != keys["initial"]


# --------------------------------------------------------------------------- 3. an empty daemon


def test_empty_daemon_takes_base_layers_from_the_registry(world: World, cold: dict[str, StageRun]) -> None:
    with private_dockerd(world.root, "b") as fresh:
        assert world.docker("images", "--all", "--quiet", daemon=fresh) == "", "daemon b is not empty"
        plan = world.plan("initial")
        v = plan.variant(VARIANT)
        run = world.build(plan, world.context("initial"), "base", run_id=f"empty-{uuid.uuid4().hex[:8]}",
                          daemon=fresh)
        print(f"\nbase + base wheels on an empty daemon, cache from the registry: {run.seconds:.1f}s")
    base_lines = run.builds()["base"]
    cache_ref = plan.cache_ref(v.cache_tags.base)
    assert any(line.endswith(f"importing cache manifest from {cache_ref}") for line in base_lines), base_lines
    steps = Steps.parse(base_lines)
    runs = steps.instructions("RUN")
    assert len(runs) >= 3 and set(runs) <= steps.cached, runs
    assert steps.executed() == []
    assert not any(marker in line for line in base_lines for marker in COMPILED_MARKERS)
    # Not just "CACHED": the very same layer blobs as the cold build, none rebuilt.
    old = layer_digests(world.registry, world.repo, world.digest(cold["base"].refs["base"]))
    new = layer_digests(world.registry, world.repo, world.digest(run.refs["base"]))
    assert new == old


# --------------------------------------------------------------------------- 4. build secrets


CANARY_STEP = (
    "# Proves the build secret reached the build: its sha256 (never the value) goes into the image.\n"
    f"RUN --mount=type=secret,id={CANARY_ID},required=true \\\n"
    f"    sha256sum < /run/secrets/{CANARY_ID} | cut -d' ' -f1 > /etc/rocm-nightly/canary.sha256\n"
)


def test_build_secret_is_used_but_never_shown(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from rocm_release.adapters.steps import _secret_files
    from rocm_release.tasks.nightly import BuildImageOperator

    canary = f"canary-{secrets.token_hex(16)}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{CANARY_ID.upper()}", json.dumps({"conn_type": "generic", "password": canary}))
    config = _config(world.root, world.repo_prefix, secrets=[CANARY_ID])
    assert config.build.secrets == (CANARY_ID,)
    # The sample project with a base Dockerfile that reads the secret.
    context = world.root / "src" / "canary"
    shutil.copytree(world.context("initial"), context)
    dockerfile = context / config.project.base_dockerfile
    text = dockerfile.read_text()
    anchor = "# ---------------------------------------------------------------- the toolchain's wheels\n"
    assert text.count(anchor) == 1
    dockerfile.write_text(text.replace(anchor, CANARY_STEP + "\n" + anchor))
    plan = world.plan("initial", base_dockerfile=dockerfile.read_bytes())
    assert plan.variant(VARIANT).base_key != world.plan("initial").variant(VARIANT).base_key

    with _secret_files(config.build.secrets, world.root / "secret-files") as files:
        assert files[CANARY_ID].read_text() == canary
        assert files[CANARY_ID].stat().st_mode & 0o777 == 0o600
        run = world.build(plan, context, "base", run_id=f"canary-{uuid.uuid4().hex[:8]}", secret_files=files)
    assert not files[CANARY_ID].exists()

    # The secret was used: the image holds its hash, computed inside the build.
    base = run.refs["base"]
    assert world.docker("run", "--rm", "--network", "none", base, "cat", "/etc/rocm-nightly/canary.sha256") == (
        hashlib.sha256(canary.encode()).hexdigest() + "\n"
    )
    assert any(CANARY_ID in line and "RUN --mount=type=secret" in line for line in run.lines)
    # ... and shown nowhere.
    assert not [line for line in run.lines if canary in line], "the canary is in the build log"
    for kind, ref in run.refs.items():
        history = world.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", ref)
        assert history.strip() and canary not in history, f"the canary is in the history of {kind}"
        image_config = json.dumps(world.registry.image_config(world.repo, world.digest(ref)))
        assert LABEL_RUN_ID in image_config and canary not in image_config, f"the canary is in the config of {kind}"
        inspect = world.docker("image", "inspect", ref)
        assert canary not in inspect, f"the canary is in docker inspect of {kind}"

    # The operator as the DAG wires it: its rendered template fields never hold the secret.
    from airflow.sdk.execution_time.task_runner import _serialize_rendered_fields

    op = BuildImageOperator(task_id="build_base_image", stage="base", variant=VARIANT, config=config)
    op.render_template_fields({"params": {}, "run_id": "canary", "ds": "2026-11-01"})
    raw = {name: getattr(op, name) for name in op.template_fields}
    assert canary not in repr(raw) and canary not in json.dumps(_serialize_rendered_fields(op), default=str)
    assert canary not in repr(vars(op))
