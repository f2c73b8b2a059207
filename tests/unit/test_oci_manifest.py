"""Parsing what a manifest points to (adapters/registry/oci_manifest.py): pure, no registry."""

from __future__ import annotations

import json

import pytest

from rocm_release.adapters.registry.oci_manifest import MalformedManifest, manifest_references, sha256_digest
from rocm_release.core.names import OCI_MANIFEST
from rocm_release.core.registry import Manifest


def test_manifest_references_rejects_descriptors_without_digest() -> None:
    bad = json.dumps({"mediaType": OCI_MANIFEST, "config": {"mediaType": "x", "size": 1}, "layers": []}).encode()
    with pytest.raises(MalformedManifest, match="config.digest"):
        manifest_references(Manifest(bad, OCI_MANIFEST, sha256_digest(bad)))
