"""Issue #11, defect 6: a registry blip does not fail the night (the retries of ``core.retrying``).

Each test stops a *throwaway* registry of its own (``LocalRegistry`` on a free port, never the shared
ones) in the middle of one task's work, through the code path the operator runs, with the default
config (a retry window of 600 s), and starts it again a few seconds after the first failed attempt
(``tests.support.outages.Outage``: the restart is the event, a timer only decides when):

1. ``build_wheels``: the registry goes down when BuildKit names the built image (the push is next):
   the ``docker push`` is retried until it goes through; the image is built once; the digest
   returned is the one the registry holds under the cache tag;
2. ``push_images``: the public (or the cache) registry is down when the copy starts: the tags and the
   copies go through once it is back, the public tags name the cache digests, every blob is there,
   and a second run moves nothing;
3. ``publish_wheels``: the cache registry the wheels images are read from is down: the index is
   published and verified once it is back;
4. a push the registry refuses (no credentials) fails at once: one attempt, FatalPushError;
5. a wheel upload to S3 (moto behind a TCP gate that closes after the first upload) is retried
   until the endpoint is back; the folder then reads as published and verified.

On 07d6ad6 (before the retries) every one of these fails at the first refused connection.
Durations are printed (``-s``).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from rocm_release.adapters.config_file import REPO_ROOT
from rocm_release.adapters.docker_build import build_and_push, build_stage, docker_session
from rocm_release.adapters.git import GitMirror
from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.adapters.steps import publish_variant_wheels, push_variant_images
from rocm_release.adapters.store import observe_published, store_root
from rocm_release.adapters.wheels_publish import publish_wheels
from rocm_release.core.build_commands import BuildRequest, FatalPushError, StageInputs
from rocm_release.core.config import ReleaseConfig, parse_config
from rocm_release.core.params import ReleaseParams
from rocm_release.core.plan import LABEL_KIND, ReleasePlan, make_plan
from tests.support.demo import demo_config, local_path, make_history
from tests.support.dockerd import PrivateDockerd, private_dockerd
from tests.support.gates import TcpGate
from tests.support.moto import admin_client, set_connection
from tests.support.outages import Outage
from tests.support.registries import LocalRegistry, make_image, token_registry
from tests.support.wheels import make_wheel

pytestmark = pytest.mark.integration

VARIANT = "rocm710"
OUTAGE_SECONDS = 8.0
# BuildKit's last step of a build: the image is in the daemon under its tag; ``docker push`` comes next.
BUILT = re.compile(r"^#\d+ naming to ")


@dataclass
class World:
    """Two throwaway registries (cache, public), the demo history and config pointing at them."""

    root: Path
    cache: LocalRegistry
    public: LocalRegistry
    config: ReleaseConfig
    mirror: GitMirror
    shas: dict[str, str]
    parent: str

    def plan(self, label: str = "initial") -> ReleasePlan:
        """The plan ``resolve_release`` would make for a manual run of one commit."""
        commit, project = self.shas[label], self.config.project
        return make_plan(
            self.config, commit=commit, run_kind="manual", as_of=datetime.now(UTC), params=ReleaseParams(),
            base_dockerfile=self.mirror.read_file(commit, project.base_dockerfile),
            base_inputs={p: self.mirror.read_file(commit, p) for p in project.base_inputs},
            parent_images={project.parent_image: self.parent}, commit_time=self.mirror.commit_time(commit),
        )

    def client(self, registry: LocalRegistry) -> OciRegistry:
        return OciRegistry(registry.host, scheme="http")


@pytest.fixture(scope="module")
def world(services: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("retries")
    shas = make_history(root / "tinyllm.git")
    cache, public = LocalRegistry(root / "cache"), LocalRegistry(root / "public")
    for registry in (cache, public):
        registry.root.mkdir()
        registry.start()
    try:
        document = demo_config(root, f"retries-{uuid.uuid4().hex[:8]}", [VARIANT])
        document["cache_registry"]["host"] = cache.host
        document["public_registry"]["host"] = public.host
        (root / "wheels").mkdir()
        # The default retry settings: what a deployment gets without a `retry` section.
        assert "retry" not in document
        config = parse_config(yaml.safe_dump(document), "test_retries config", repo_root=str(REPO_ROOT))
        mirror = GitMirror(config.project.git_url, root / "git-cache")
        mirror.update()
        base_os = services["base_os_image"]  # the parent stays in the shared cache registry, read only
        parent = f"{base_os['tag_reference']}@{base_os['digest']}"
        yield World(root, cache, public, config, mirror, shas, parent)
    finally:
        cache.stop()
        public.stop()


# --------------------------------------------------------------------------- 1. docker push


@pytest.fixture(scope="module")
def builder(world: World) -> Iterator[PrivateDockerd]:
    with private_dockerd(world.root, "retries") as daemon:
        yield daemon


def _inputs(world: World, plan: ReleasePlan, *, run_id: str, base_digest: str | None) -> StageInputs:
    project = world.config.project
    return StageInputs(
        context=world.mirror.export(plan.commit, world.root / "src" / uuid.uuid4().hex),
        base_dockerfile=project.base_dockerfile, dockerfile=project.dockerfile,
        targets=project.targets.model_dump(), network=world.config.build.network, run_id=run_id,
        base_digest=base_digest,
    )


def test_a_push_during_a_cache_registry_outage_is_retried_and_the_build_runs_once(
        world: World, builder: PrivateDockerd) -> None:
    plan, run_id = world.plan(), f"manual__{uuid.uuid4().hex[:8]}"
    v = plan.variant(VARIANT)
    cache = world.client(world.cache)
    with docker_session(builder.host, []) as env:
        base = build_stage(plan=plan, v=v, stage="base", inputs=_inputs(world, plan, run_id=run_id, base_digest=None),
                           registry=cache, env=env, log=lambda line: None)
        base_digest = base["base"].split("@", 1)[1]

        outage = Outage(world.cache, OUTAGE_SECONDS, stop_on=" naming to ")
        started = time.monotonic()
        try:
            refs = build_stage(plan=plan, v=v, stage="wheels",
                               inputs=_inputs(world, plan, run_id=run_id, base_digest=base_digest),
                               registry=cache, env=env, log=outage.log)
        finally:
            outage.finish()
        took = time.monotonic() - started

    pushes = outage.failed_attempts("docker push of ")
    print(f"\nbuild_wheels with the cache registry down {outage.down_seconds:.1f} s from the end of the build: "
          f"{took:.1f} s, {len(pushes) + 1} push attempts")
    assert pushes, "the registry was never down during the push"
    assert "connection refused" in pushes[0]
    assert outage.down_seconds >= OUTAGE_SECONDS
    # Built once: one "building wheels" and one image named by BuildKit; then only pushes.
    target, tag_ref = world.config.project.targets.wheels, plan.cache_ref(v.cache_tags.wheels)
    assert [line for line in outage.lines if line.startswith("building ")] == [
        f"building wheels ({target}) for {VARIANT} → {tag_ref}"]
    assert len([line for line in outage.lines if BUILT.match(line)]) == 1
    # The digest handed on is what the registry now holds under the cache tag, and it is the wheels image.
    digest = refs["wheels"].split("@", 1)[1]
    assert refs == {"wheels": plan.cache_ref(digest)}
    assert cache.lookup(plan.cache_repository, v.cache_tags.wheels).digest == digest
    assert cache.labels(plan.cache_repository, digest)[LABEL_KIND] == "wheels"


# --------------------------------------------------------------------------- 2. cache → public copies


def _cached_images(world: World, plan: ReleasePlan) -> dict[str, str]:
    """Four images in the cache registry (by digest, untagged), as a build night leaves them: kind → ref."""
    refs = {}
    for kind in ("base", "base_wheels", "wheels", "release"):
        image = make_image(world.cache.url, plan.cache_repository, None, labels={LABEL_KIND: kind},
                           layers=[kind.encode() + uuid.uuid4().bytes * 65536, uuid.uuid4().bytes * 4096])
        refs[kind] = plan.cache_ref(image.digest)
    return refs


@pytest.mark.parametrize("down", ["public", "cache"])
def test_push_images_waits_out_a_registry_outage(world: World, down: str) -> None:
    plan = world.plan()
    v = plan.variant(VARIANT)
    refs = _cached_images(world, plan)
    outage = Outage(getattr(world, down), OUTAGE_SECONDS)  # down from the start
    started = time.monotonic()
    try:
        pushed = push_variant_images(plan, v, refs, outage.log)
    finally:
        outage.finish()
    took = time.monotonic() - started
    print(f"\npush_images with the {down} registry down {outage.down_seconds:.1f} s: {took:.1f} s, "
          f"{len(outage.failed_attempts())} failed attempts")
    assert outage.failed_attempts(), f"the {down} registry outage was never met"
    assert took >= OUTAGE_SECONDS

    cache, public = world.client(world.cache), world.client(world.public)
    digests = {kind: ref.split("@", 1)[1] for kind, ref in refs.items()}
    assert pushed.digests == digests
    for kind, tag in v.cache_tags.model_dump().items():
        assert cache.lookup(plan.cache_repository, tag).digest == digests[kind], kind
    for kind, tag in (("release", v.public_tags.nightly_commit), ("base", v.public_tags.base_nightly_commit)):
        assert public.lookup(plan.public_repository, tag).digest == digests[kind], kind
        doc = json.loads(public.manifest(plan.public_repository, digests[kind]).raw)
        blobs = [doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])]
        assert all(public.has_blob(plan.public_repository, blob) for blob in blobs), kind
    # Converged: a second run moves nothing.
    again = push_variant_images(plan, v, refs, lambda line: None)
    assert (again.blobs_copied, again.bytes_copied) == (0, 0)


# --------------------------------------------------------------------------- 3. publish_wheels


def _wheels_image(world: World, plan: ReleasePlan, folder: Path, name: str, version: str) -> str:
    """A wheels image (``/dist/<wheel>`` + ``/dist/SHA256SUMS``, one plain tar layer) in the cache; its ref."""
    wheel = make_wheel(folder, name, version, tag="cp311-cp311-linux_x86_64")
    data = wheel.read_bytes()
    sums = f"{hashlib.sha256(data).hexdigest()}  {wheel.name}\n".encode()
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for path, content in ((f"dist/{wheel.name}", data), ("dist/SHA256SUMS", sums)):
            info = tarfile.TarInfo(path)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    image = make_image(world.cache.url, plan.cache_repository, None, layers=[layer.getvalue()])
    return plan.cache_ref(image.digest)


def test_publish_wheels_waits_out_a_cache_registry_outage(world: World, tmp_path: Path) -> None:
    plan = world.plan("source_change")
    v = plan.variant(VARIANT)
    refs = {"wheels": _wheels_image(world, plan, tmp_path, "tinyllm", "0.1.0"),
            "base_wheels": _wheels_image(world, plan, tmp_path, "tinytorch", "2.9.0")}
    outage = Outage(world.cache, OUTAGE_SECONDS)  # down from the start
    started = time.monotonic()
    try:
        published = publish_variant_wheels(plan, v, refs, outage.log)
    finally:
        outage.finish()
    took = time.monotonic() - started
    print(f"\npublish_wheels with the cache registry down {outage.down_seconds:.1f} s: {took:.1f} s, "
          f"{len(outage.failed_attempts())} failed attempts")
    assert outage.failed_attempts("read of /dist of "), "the outage was never met"
    assert sorted(f.filename for f in published) == [
        "tinyllm-0.1.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        "tinytorch-2.9.0-cp311-cp311-manylinux_2_28_x86_64.whl"]
    observed = observe_published(store_root(v.wheels_url), v.wheels_url)
    assert observed.present, observed.reason
    assert (local_path(v.wheels_url) / "index.html").exists()


def test_a_refused_push_fails_at_once_without_retrying(world: World, builder: PrivateDockerd) -> None:
    """A registry that wants credentials we do not have: the push is fatal, and not tried a second time."""
    context = world.root / "tiny"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text("FROM scratch AS out\nCOPY payload /payload\n")
    (context / "payload").write_bytes(uuid.uuid4().bytes)
    lines: list[str] = []
    retrying = world.config.retry.retrying(lines.append)
    assert retrying.window_seconds >= 300
    (world.root / "token").mkdir(exist_ok=True)
    with token_registry(world.root / "token", {"writer": "secret"}) as (registry, _), \
            docker_session(builder.host, []) as env:
        request = BuildRequest(context=context, dockerfile="Dockerfile", target="out",
                               tag_ref=f"{registry.host}/refused/tiny:t", build_args={}, labels={})
        started = time.monotonic()
        with pytest.raises(FatalPushError, match="denied|no basic auth credentials|unauthorized"):
            build_and_push(request, env, lines.append, retrying)
        took = time.monotonic() - started
    print(f"\na refused push failed after {took:.1f} s (build included)")
    assert [line for line in lines if ": attempt " in line] == []
    assert len([line for line in lines if line.startswith("The push refers to repository")]) == 1


# --------------------------------------------------------------------------- 5. uploads to S3


def test_a_wheel_upload_to_s3_waits_out_an_outage(world: World, moto_url: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 endpoint (moto behind a TCP gate, so no state is lost) goes away after the first upload."""
    gate = TcpGate(int(moto_url.rsplit(":", 1)[1]))  # listening from here
    set_connection(monkeypatch.setenv, "retries_s3", gate.url)
    bucket = f"wheels-{uuid.uuid4().hex[:12]}"
    admin_client("s3", moto_url).create_bucket(Bucket=bucket)
    wheels = [make_wheel(tmp_path, "tinydep", "1.0"), make_wheel(tmp_path, "tinything", "0.2.0")]
    url = f"s3://{bucket}/rocm/{'0' * 40}/{VARIANT}/"
    outage = Outage(gate, 5.0, stop_on=f"{url}{wheels[0].name}: uploaded")
    started = time.monotonic()
    try:
        published = publish_wheels(wheels, store_root(url, "retries_s3"), url, outage.log,
                                   world.config.retry.retrying(outage.log))
    finally:
        outage.finish()
        gate.stop()
    took = time.monotonic() - started
    print(f"\npublish_wheels to S3, endpoint down {outage.down_seconds:.1f} s after the first upload: {took:.1f} s, "
          f"{len(outage.failed_attempts())} failed attempts")
    assert outage.failed_attempts(f"upload of {url}{wheels[1].name}"), "the second upload never met the outage"
    assert [f.uploaded for f in published] == [True, True]
    gate.start()  # read it back through the same connection
    try:
        observed = observe_published(store_root(url, "retries_s3"), url)
    finally:
        gate.stop()
    assert observed.present, observed.reason
