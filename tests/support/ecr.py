"""ECR scenes on moto: hand-made images pushed with PutImage, and the labels' config blobs.

Moto stores manifests but has no blob store, and it does not implement GetDownloadUrlForLayer
(it answers HTTP 500). ``stub_download_url`` answers that one operation through botocore's
``before-call`` event with the URL of a ``BlobServer``: a real HTTP server on 127.0.0.1 holding
the config blobs, where ECR's pre-signed S3 URLs would point. Every other call is moto's.
"""

from __future__ import annotations

import json
from typing import Any

from rocm_release.core.names import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST
from tests.support.net import HttpServer, QuietHandler
from tests.support.registries import digest_of

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class BlobServer(HttpServer):
    """Serves ``blobs`` (digest → bytes) at ``/<digest>``; ``status`` is the answer for a known blob;
    ``requests`` lists the paths asked for."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.status = 200
        self.requests: list[str] = []
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                body = server.blobs.get(self.path.split("?")[0].lstrip("/"))
                self.send_response(server.status if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

        super().__init__(Handler)

    def add(self, blob: bytes) -> str:
        """Serve ``blob``; its digest."""
        digest = digest_of(blob)
        self.blobs[digest] = blob
        return digest


def stub_download_url(registry: Any, blob_server: BlobServer) -> None:
    """Stub of the AWS service for GetDownloadUrlForLayer only (moto does not implement it): the
    ``EcrRegistry``'s client gets a URL on ``blob_server``."""
    from botocore.awsrequest import AWSResponse

    def answer(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        digest = json.loads(params["body"])["layerDigest"]
        url = f"{blob_server.url}/{digest}?X-Amz-Signature=not-a-secret"
        return AWSResponse(url, 200, {}, None), {"downloadUrl": url, "layerDigest": digest}

    registry.client.meta.events.register("before-call.ecr.GetDownloadUrlForLayer", answer)


def record_calls(registry: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every ECR operation the registry's real client makes, with its parameters (observation only)."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def seen(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, dict(params)))

    registry.client.meta.events.register("before-parameter-build.ecr", seen)
    return calls


def ecr_image(seed: str, labels: dict[str, str] | None = None, docker: bool = False) -> tuple[bytes, bytes, str]:
    """(manifest bytes, config blob, manifest media type) of a one-layer linux/amd64 image."""
    layer = f"layer {seed}".encode()
    config: dict[str, Any] = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}
    config["config"] = {"Labels": labels} if labels is not None else {}
    blob = json.dumps(config, sort_keys=True).encode()
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG, "digest": digest_of(blob),
                   "size": len(blob)},
        "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(layer), "size": 8}],
    }
    # indent=3: bytes no serializer would choose, so a re-serialized manifest would show
    return json.dumps(manifest, indent=3).encode(), blob, media_type


def ecr_index(children: dict[str, bytes], docker: bool = False) -> tuple[bytes, str]:
    """An index over ``{"os/arch": manifest}`` plus a BuildKit-style attestation entry."""
    media_type = DOCKER_MANIFEST_LIST if docker else OCI_INDEX
    entries = [
        {
            "mediaType": OCI_MANIFEST,
            "digest": digest_of(raw),
            "size": len(raw),
            "platform": {"os": platform.split("/")[0], "architecture": platform.split("/")[1]},
        }
        for platform, raw in children.items()
    ]
    entries.append(
        {
            "mediaType": OCI_MANIFEST,
            "digest": digest_of(b"attestation"),
            "size": 11,
            "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
        }
    )
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries}).encode(), media_type


def put_image(admin: Any, raw: bytes, media_type: str, tag: str | None, repo: str, real_digest: bool = True) -> str:
    """PutImage as a build would; ``imageDigest`` makes moto store ECR's digest (sha256 of the manifest
    bytes; moto's own is sha256 of the concatenated layer digests)."""
    kwargs: dict[str, Any] = {"imageTag": tag} if tag else {}
    if real_digest:
        kwargs["imageDigest"] = digest_of(raw)
    answer = admin.put_image(
        repositoryName=repo, imageManifest=raw.decode(), imageManifestMediaType=media_type, **kwargs
    )
    return str(answer["image"]["imageId"]["imageDigest"])
