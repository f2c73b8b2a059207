"""Issue 13, point 1 (image side): a wheels image is checked through digests and small metadata.

Real builds on a private ``dockerd`` (tests/support/dockerd.py), pushed by ``build_stage`` to a
throwaway ``docker-registry`` of this module (its own access log), with a config and plan made by
the real ``make_plan``:

1. a built wheels image carries its /dist/SHA256SUMS, verbatim, as the label ``LABEL_DIST_SUMS``,
   over the very layers an unlabelled build of the same target has (no layer added) — with
   BuildKit and with the classic builder; a retry in the same run reuses the labelled push;
   a wheels target without SHA256SUMS fails the build fatally and pushes nothing;
2. the wheels sensor on that image reads no layer blob (the access log: HEADs only) and says
   present; the old way (``read_dist``) is measured on the same image for comparison;
3. the sensor trusts digests, the publisher verifies bytes: a label that disagrees with /dist
   is "present" to the sensor and fails ``publish_variant_wheels`` (UnverifiedWheels);
4. an image without the label (built before it) is verified by reading /dist, as before;
5. a layer blob deleted behind a present manifest makes the image absent; a layer whose stored
   size differs from the manifest's is an error (Fatal), never "absent".
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rocm_release.adapters.config_file import REPO_ROOT
from rocm_release.adapters.docker_build import MissingDistSums, build_stage, docker_cli
from rocm_release.adapters.observe import observe_base, observe_wheels_image
from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.adapters.steps import publish_variant_wheels
from rocm_release.adapters.wheels_image import StoredLayerMismatch, UnverifiedWheels, layer_digests, read_dist
from rocm_release.core.build_commands import StageInputs
from rocm_release.core.config import ReleaseConfig, parse_config
from rocm_release.core.errors import FatalError
from rocm_release.core.params import ReleaseParams
from rocm_release.core.plan import (
    LABEL_BASE_DIGEST,
    LABEL_BASE_KEY,
    LABEL_COMMIT,
    LABEL_DIST_SUMS,
    LABEL_SCHEMA,
    LABEL_VARIANT,
    SCHEMA_VERSION,
    ReleasePlan,
    VariantPlan,
    make_plan,
)
from tests.support.demo import demo_config
from tests.support.dockerd import PrivateDockerd, private_dockerd
from tests.support.registries import (
    REGISTRY_BIN,
    LocalRegistry,
    Request,
    RequestLog,
    TestImage,
    digest_of,
    make_image,
    raw_put_manifest,
    running_registry,
)
from tests.support.wheels import make_wheel

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not REGISTRY_BIN.exists(), reason="needs Debian docker-registry (/usr/bin/docker-registry)"),
]

VARIANT = "rocm710"
COMMIT = "5d1c2b9d8e7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e"
BASE_DIGEST = "sha256:" + "cd" * 32
PARENT_DIGEST = "sha256:" + "ab" * 32
DOCKERFILE = """\
ARG BASE_IMAGE
FROM scratch AS wheels
COPY dist/ /dist/

FROM scratch AS no-sums
COPY dist/*.whl /dist/
"""


# --------------------------------------------------------------------------- the module's world


@dataclass
class World:
    root: Path
    registry: LocalRegistry
    daemon: PrivateDockerd
    context: Path
    sums_text: str

    def config(self) -> ReleaseConfig:
        """The demo config, one variant, this module's registry (a repository per call) and file store."""
        document = demo_config(self.root, f"label-{uuid.uuid4().hex[:10]}", [VARIANT])
        document["cache_registry"].update(host=self.registry.host, scheme="http")
        document["wheel_store"]["url"] = f"file://{self.root}/wheels-{uuid.uuid4().hex[:8]}"
        return parse_config(yaml.safe_dump(document), "test_wheels_label config", repo_root=str(REPO_ROOT))

    def plan(self) -> ReleasePlan:
        config = self.config()
        parents = {config.project.parent_image, *(v.parent_image for v in config.variants if v.parent_image)}
        return make_plan(
            config, commit=COMMIT, run_kind="manual", as_of=datetime(2026, 11, 26, 2, tzinfo=UTC),
            params=ReleaseParams(), base_dockerfile=b"FROM scratch\n",
            base_inputs={p: f"{p}\n".encode() for p in config.project.base_inputs},
            parent_images={p: f"{p.rsplit(':', 1)[0]}@{PARENT_DIGEST}" for p in parents},
        )

    def client(self) -> OciRegistry:
        return OciRegistry(self.registry.host, scheme="http")

    def env(self, builder: str) -> dict[str, str]:
        return {**self.daemon.env(), "DOCKER_BUILDKIT": "1" if builder == "buildkit" else "0"}

    def build(self, plan: ReleasePlan, *, builder: str = "buildkit", run_id: str = "", target: str = "wheels",
              lines: list[str] | None = None) -> str:
        """``build_stage`` of the wheels stage, as the build operator calls it; the pushed ``repo@digest``."""
        inputs = StageInputs(
            context=self.context, base_dockerfile="Dockerfile", dockerfile="Dockerfile",
            targets={"base": "wheels", "base_wheels": "wheels", "wheels": target, "release": "wheels"},
            network="none", run_id=run_id or f"run-{uuid.uuid4().hex[:8]}", base_digest=BASE_DIGEST,
        )
        with self.client() as registry:
            refs = build_stage(plan=plan, v=plan.variant(VARIANT), stage="wheels", inputs=inputs, registry=registry,
                               env=self.env(builder), log=(lines if lines is not None else []).append)
        return refs["wheels"]

    def docker(self, *args: str, builder: str = "buildkit") -> str:
        proc = subprocess.run([docker_cli(), *args], env=self.env(builder), capture_output=True, text=True,
                              check=False)
        assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr[-3000:]}"
        return proc.stdout


@pytest.fixture(scope="module")
def world(services: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A private daemon, a throwaway registry, and a build context whose /dist holds one real wheel."""
    root = tmp_path_factory.mktemp("wheels-label")
    context = root / "context"
    (context / "dist").mkdir(parents=True)
    wheel = make_wheel(context / "dist", "labelled", "1.0", tag="cp311-cp311-linux_x86_64")
    sums_text = f"{hashlib.sha256(wheel.read_bytes()).hexdigest()}  {wheel.name}\n"
    (context / "dist" / "SHA256SUMS").write_text(sums_text)
    (context / "Dockerfile").write_text(DOCKERFILE)
    with running_registry(root / "registry") as registry, private_dockerd(root, "label") as daemon:
        yield World(root, registry, daemon, context, sums_text)


def digest(ref: str) -> str:
    return ref.split("@", 1)[1]


def layer_blob_reads(requests: list[Request], layers: list[str]) -> list[Request]:
    """The requests that read (GET) one of ``layers``."""
    return [r for r in requests if r.method == "GET" and r.kind == "blob" and r.path.rsplit("/", 1)[-1] in layers]


def summary(requests: list[Request]) -> str:
    return f"{len(requests)} requests, {sum(r.size for r in requests)} bytes answered"


# --------------------------------------------------------------------------- 1. the label, at build time


@pytest.mark.parametrize("builder", ["buildkit", "classic"])
def test_a_built_wheels_image_carries_its_sums_as_a_label_over_the_same_layers(world: World, builder: str) -> None:
    plan = world.plan()
    lines: list[str] = []
    ref = world.build(plan, builder=builder, lines=lines)
    repo = plan.cache_repository

    with world.client() as registry:
        labels = registry.labels(repo, digest(ref))
        config = registry.image_config(repo, digest(ref))
        layers = layer_digests(registry, repo, digest(ref))
    assert labels[LABEL_DIST_SUMS] == world.sums_text  # verbatim, newline and all
    assert labels[LABEL_COMMIT] == COMMIT and labels[LABEL_BASE_DIGEST] == BASE_DIGEST  # the build's labels stay
    assert any(line.startswith("label build: ") for line in lines), lines
    # The same layers as an unlabelled build of the same target on the same daemon: nothing added.
    plain = f"plain-{uuid.uuid4().hex[:8]}"
    world.docker("build", "--target", "wheels", "--tag", plain, str(world.context), builder=builder)
    unlabelled = json.loads(world.docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", plain))
    assert config["rootfs"]["diff_ids"] == unlabelled
    assert len(layers) == len(unlabelled) == 1


def test_a_retry_in_the_same_run_reuses_the_labelled_push(world: World) -> None:
    plan = world.plan()
    run_id = f"retry-{uuid.uuid4().hex[:8]}"
    first = world.build(plan, run_id=run_id)
    lines: list[str] = []
    again = world.build(plan, run_id=run_id, lines=lines)
    assert again == first
    assert any("reusing it (retry)" in line for line in lines)
    assert not any(line.startswith(("building ", "label build: ")) for line in lines), lines


def test_a_wheels_target_without_sha256sums_fails_the_build_fatally_and_pushes_nothing(world: World) -> None:
    plan = world.plan()
    with pytest.raises(MissingDistSums, match="/dist/SHA256SUMS") as failed:
        world.build(plan, target="no-sums")
    assert isinstance(failed.value, FatalError)
    with world.client() as registry:
        assert not registry.lookup(plan.cache_repository, plan.variant(VARIANT).cache_tags.wheels).present


# --------------------------------------------------------------------------- 2. the sensor reads no layer


def test_the_sensor_on_a_built_wheels_image_reads_no_layer_blob(world: World) -> None:
    plan = world.plan()
    v = plan.variant(VARIANT)
    ref = world.build(plan)
    with world.client() as registry:
        layers = layer_digests(registry, plan.cache_repository, digest(ref))
        log = RequestLog(world.registry)
        found = observe_wheels_image(registry, plan, v)
        sensor = log.close()
        log = RequestLog(world.registry)  # what the sensor did before issue #13: look-up, labels, /dist read
        registry.labels(plan.cache_repository, registry.lookup(plan.cache_repository, v.cache_tags.wheels).digest or "")
        read_dist(registry, plan.cache_repository, digest(ref))
        before = log.close()

    assert found.present and found.digest == digest(ref), found.reason
    assert "layers present (HEAD)" in found.reason and "labelled-1.0-cp311" in found.reason
    assert layer_blob_reads(sensor, layers) == [], sensor
    heads = sorted(r.path.rsplit("/", 1)[-1] for r in sensor if r.method == "HEAD" and r.kind == "blob")
    assert heads == sorted(layers)
    assert len(layer_blob_reads(before, layers)) == len(layers)  # the old way read every layer
    assert sum(r.size for r in sensor) < 64 << 10  # manifests and the config: no wheel bytes
    print(f"\nwheels sensor, labelled image: {summary(sensor)}; reading /dist as before: {summary(before)}")


# --------------------------------------------------------------------------- 3.-5. hand-made images


def dist_layer(files: dict[str, bytes]) -> bytes:
    """A tar.gz layer holding ``dist/<name>`` for each file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"dist/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def wheels_dist(folder: Path, name: str) -> tuple[bytes, str]:
    """A /dist layer with one real wheel and its SHA256SUMS; (layer, SHA256SUMS text)."""
    wheel = make_wheel(folder, name, "1.0", tag="cp311-cp311-linux_x86_64")
    sums = f"{hashlib.sha256(wheel.read_bytes()).hexdigest()}  {wheel.name}\n"
    return dist_layer({wheel.name: wheel.read_bytes(), "SHA256SUMS": sums.encode()}), sums


def image_labels(v: VariantPlan, *, commit: bool, sums: str | None, base: str = BASE_DIGEST) -> dict[str, str]:
    labels = {LABEL_SCHEMA: str(SCHEMA_VERSION), LABEL_BASE_KEY: v.base_key, LABEL_VARIANT: v.name,
              LABEL_BASE_DIGEST: base}
    if commit:
        labels[LABEL_COMMIT] = COMMIT
    if sums is not None:
        labels[LABEL_DIST_SUMS] = sums
    return labels


def push_wheels(world: World, plan: ReleasePlan, tmp_path: Path, *, sums_label: str | None,
                tag: str | None = None) -> tuple[TestImage, str]:
    """The project's wheels image at this commit (one /dist layer), with ``sums_label`` as its label:
    ``"right"`` its SHA256SUMS, ``"other-sha"`` the same names with another sha256, else as given."""
    v = plan.variant(VARIANT)
    layer, sums = wheels_dist(tmp_path / uuid.uuid4().hex[:6], "tinyproj")
    label = {"right": sums, "other-sha": f"{'0' * 64}  {sums.split()[1]}\n"}.get(sums_label or "", sums_label)
    image = make_image(world.registry.url, plan.cache_repository, tag or v.cache_tags.wheels,
                       labels=image_labels(v, commit=True, sums=label), layers=[layer])
    return image, sums


@pytest.mark.parametrize("label", ["agrees", "disagrees"])
def test_the_sensor_trusts_digests_and_the_publisher_verifies_bytes(world: World, tmp_path: Path,
                                                                    label: str) -> None:
    plan = world.plan()
    v = plan.variant(VARIANT)
    wheels, _ = push_wheels(world, plan, tmp_path, sums_label="right" if label == "agrees" else "other-sha")
    base_layer, base_sums = wheels_dist(tmp_path / "base", "tinybase")
    base_wheels = make_image(world.registry.url, plan.cache_repository, v.cache_tags.base_wheels,
                             labels=image_labels(v, commit=False, sums=base_sums), layers=[base_layer])
    refs = {"wheels": plan.cache_ref(wheels.digest), "base_wheels": plan.cache_ref(base_wheels.digest)}

    with world.client() as registry:
        assert observe_wheels_image(registry, plan, v).present  # digests and a parsable label: present
    if label == "agrees":
        published = publish_variant_wheels(plan, v, refs, print)
        assert sorted(f.project for f in published) == ["tinybase", "tinyproj"]
    else:
        with pytest.raises(UnverifiedWheels, match=f"label {LABEL_DIST_SUMS} disagrees with /dist/SHA256SUMS"):
            publish_variant_wheels(plan, v, refs, print)


def test_an_image_without_the_label_is_verified_by_reading_dist(world: World, tmp_path: Path) -> None:
    plan = world.plan()
    image, _ = push_wheels(world, plan, tmp_path, sums_label=None)
    with world.client() as registry:
        log = RequestLog(world.registry)
        found = observe_wheels_image(registry, plan, plan.variant(VARIANT))
        requests = log.close()
    assert found.present and found.digest == image.digest
    assert found.reason.startswith(f"verified by reading /dist (no {LABEL_DIST_SUMS} label")
    assert len(layer_blob_reads(requests, [d for d, _ in image.layers])) == 1


def test_a_label_that_does_not_parse_makes_the_image_absent(world: World, tmp_path: Path) -> None:
    plan = world.plan()
    image, _ = push_wheels(world, plan, tmp_path, sums_label="not sha256sum output\n")
    with world.client() as registry:
        found = observe_wheels_image(registry, plan, plan.variant(VARIANT))
    assert not found.present
    assert found.reason.startswith(f"wheels image {image.digest} does not verify") and LABEL_DIST_SUMS in found.reason


def test_a_layer_blob_missing_behind_a_present_manifest_makes_the_image_absent(world: World, tmp_path: Path) -> None:
    plan = world.plan()
    v = plan.variant(VARIANT)
    image, _ = push_wheels(world, plan, tmp_path, sums_label="right")
    (layer, _size), = image.layers
    with world.client() as registry:
        assert observe_wheels_image(registry, plan, v).present
        gone = httpx.delete(f"{world.registry.url}/v2/{plan.cache_repository}/blobs/{layer}")
        assert gone.status_code == 202, gone.text
        found = observe_wheels_image(registry, plan, v)
    assert not found.present and found.digest is None
    assert found.reason == (f"wheels image {image.digest}: its manifest names layers the registry does not hold: "
                            f"{layer}")


def test_a_base_wheels_layer_missing_makes_the_base_unit_absent(world: World, tmp_path: Path) -> None:
    plan = world.plan()
    v = plan.variant(VARIANT)
    base = make_image(world.registry.url, plan.cache_repository, v.cache_tags.base,
                      labels={LABEL_SCHEMA: str(SCHEMA_VERSION), LABEL_BASE_KEY: v.base_key, LABEL_VARIANT: v.name})
    layer, sums = wheels_dist(tmp_path / "base", "tinybase")
    wheels = make_image(world.registry.url, plan.cache_repository, v.cache_tags.base_wheels,
                        labels=image_labels(v, commit=False, sums=sums, base=base.digest), layers=[layer])
    with world.client() as registry:
        log = RequestLog(world.registry)
        found = observe_base(registry, plan, v)
        requests = log.close()
        assert found.present and "layers present (HEAD)" in found.reason, found.reason
        assert layer_blob_reads(requests, [digest_of(layer)]) == []
        httpx.delete(f"{world.registry.url}/v2/{plan.cache_repository}/blobs/{digest_of(layer)}").raise_for_status()
        found = observe_base(registry, plan, v)
    assert not found.present
    assert found.reason.startswith(f"base wheels image {wheels.digest}: its manifest names layers")


def test_a_layer_stored_with_another_size_is_an_error_never_absent(world: World, tmp_path: Path) -> None:
    plan = world.plan()
    v = plan.variant(VARIANT)
    image, _ = push_wheels(world, plan, tmp_path, sums_label="right", tag=f"scratch-{uuid.uuid4().hex[:8]}")
    manifest = json.loads(image.raw)
    manifest["layers"][0]["size"] += 1  # the manifest now says one byte more than the registry holds
    raw = json.dumps(manifest).encode()
    raw_put_manifest(world.registry.url, plan.cache_repository, v.cache_tags.wheels, raw, image.media_type)
    with world.client() as registry, pytest.raises(StoredLayerMismatch, match="holds .* bytes, the manifest says"):
        observe_wheels_image(registry, plan, v)
