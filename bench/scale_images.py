"""The images a build would push, made without docker: blobs + config + manifest through the registry API.

Per variant, as ``adapters/docker_build.build_stage`` pushes them: the base
image and its base wheels image (stage ``base``), the project's wheels image
(stage ``wheels``) and the release image (stage ``release``), under the plan's
cache tags (``VariantPlan.cache_tags``) and with the labels a build sets
(``core.build_commands.image_labels``) — what the sensors check. The wheels
images are ``FROM scratch``-shaped: one layer with ``/dist/*.whl`` and
``/dist/SHA256SUMS``, and the label ``dev.rocm-nightly.dist-sha256sums`` (the
SHA256SUMS text). Base and release images are small (one 1 MiB layer).

Pushes go through the project's OCI client (``OciRegistry.push_blob``,
streaming from the layer's file; a blob the repository has is not sent again,
as buildx does). Layer files are made once per run and kept in a scratch folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

from scale_wheels import FIXED_MTIME, MIB, DistLayer, HashingWriter, WheelSpec, keystream, make_dist_layer

from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.core import plan as plan_module
from rocm_release.core.build_commands import image_labels
from rocm_release.core.names import OCI_MANIFEST
from rocm_release.core.plan import ImageKind, ReleasePlan, VariantPlan

LABEL_DIST_SHA256SUMS = getattr(plan_module, "LABEL_DIST_SHA256SUMS", "dev.rocm-nightly.dist-sha256sums")
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
STAGE_KINDS: dict[str, tuple[ImageKind, ...]] = {"base": ("base", "base_wheels"), "wheels": ("wheels",),
                                                 "release": ("release",)}


def _small_layer(path: Path, seed: str) -> DistLayer:
    """A 1 MiB tar layer of seeded incompressible bytes (a stand-in for a base or release image's files)."""
    data = keystream(seed).encryptor().update(bytes(MIB))
    with path.open("wb") as raw:
        writer = HashingWriter(raw)
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            info = tarfile.TarInfo("opt/bench/filler.bin")
            info.size, info.mtime = len(data), FIXED_MTIME
            tar.addfile(info, io.BytesIO(data))
    return DistLayer(path, "sha256:" + writer.digest.hexdigest(), writer.size, "", {})


class ImageFactory:
    """Makes (once per run) and pushes the four images of a variant for the builds a decision chose."""

    def __init__(self, registry: OciRegistry, scratch: Path,
                 wheels_for: Callable[[ReleasePlan, VariantPlan, ImageKind], tuple[list[WheelSpec], str]]) -> None:
        self.registry = registry
        self.scratch = scratch
        self.wheels_for = wheels_for
        self.layers: dict[str, DistLayer] = {}
        self.pushed_bytes = 0

    def layer(self, plan: ReleasePlan, v: VariantPlan, kind: ImageKind) -> DistLayer:
        """The layer of one image: the /dist layer of a wheels image, a small one otherwise (made once)."""
        if kind in ("base_wheels", "wheels"):
            specs, seed = self.wheels_for(plan, v, kind)
            key = f"{seed}/{kind}/{v.name}"
        else:
            specs, seed = [], f"{kind}/{v.base_key if kind == 'base' else plan.commit}/{v.name}"
            key = seed
        if key not in self.layers:
            path = self.scratch / f"layer-{len(self.layers)}.tar"
            if specs:
                work = self.scratch / "wheels"
                work.mkdir(exist_ok=True)
                self.layers[key] = make_dist_layer(work, path, specs, seed)
            else:
                self.layers[key] = _small_layer(path, seed)
        return self.layers[key]

    def build(self, plan: ReleasePlan, v: VariantPlan, stage: str, base_ref: str | None) -> dict[str, str]:
        """What ``build_stage`` returns for ``stage``: kind → ``host/repo@sha256:…``, each image pushed."""
        base_digest = base_ref.partition("@")[2] if base_ref else None
        refs: dict[str, str] = {}
        for kind in STAGE_KINDS[stage]:
            layer = self.layer(plan, v, kind)
            labels = image_labels(plan, v, kind, base_digest=None if kind == "base" else base_digest)
            if layer.sums:
                labels[LABEL_DIST_SHA256SUMS] = layer.sums
            digest = self.push(plan.cache_repository, str(getattr(v.cache_tags, kind)), layer, labels)
            if kind == "base":
                base_digest = digest
            refs[kind] = plan.cache_ref(digest)
        return refs

    def push(self, repo: str, tag: str, layer: DistLayer, labels: dict[str, str]) -> str:
        """Layer (unless there), config, manifest under ``tag``; the manifest's digest."""
        if not self.registry.has_blob(repo, layer.digest):
            with layer.path.open("rb") as source:
                self.pushed_bytes += self.registry.push_blob(repo, layer.digest, source, size=layer.size)
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "created": "2026-11-01T12:00:00Z",
            "config": {"Labels": labels}, "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        }, sort_keys=True).encode()
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        if not self.registry.has_blob(repo, config_digest):
            self.pushed_bytes += self.registry.push_blob(repo, config_digest, config, size=len(config))
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": LAYER_TYPE, "digest": layer.digest, "size": layer.size}],
        }, sort_keys=True).encode()
        return self.registry.put_manifest(repo, tag, manifest, OCI_MANIFEST)

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.scratch.rglob("*") if p.is_file())
