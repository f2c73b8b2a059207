"""EcrRegistry answers that moto cannot produce: throttling, 5xx, ECR's own error codes, many pages.

The real-service contract runs against a moto server in ``tests/integration/test_registry_ecr.py``.
Here the ECR service is a **stub** (botocore's ``Stubber`` on a real boto3 client, nothing is sent),
used only for answers moto never gives: ``ThrottlingException``, 503, ``AccessDeniedException`` in
ECR's JSON form, ``ImageTagDoesNotMatchDigest``, ``nextToken`` paging, malformed answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from rocm_release.adapters.registry.ecr import EcrRegistry
from rocm_release.core.names import OCI_MANIFEST
from rocm_release.core.registry import FatalRegistryError, TransientRegistryError
from tests.support.moto import MOTO_ECR_HOST, admin_client
from tests.support.registries import digest_of as sha256

HOST = MOTO_ECR_HOST
REPO = "rocm-nightly/tinyllm"
DIGEST = sha256(b"manifest")


@pytest.fixture
def stubbed() -> Iterator[tuple[EcrRegistry, Any]]:
    """An EcrRegistry on a real boto3 client whose ECR service is a Stubber (a stub of AWS)."""
    from botocore.stub import Stubber

    client = admin_client("ecr", "http://127.0.0.1:9")  # never contacted: the Stubber answers first
    with Stubber(client) as stub:
        yield EcrRegistry(HOST, client=client), stub
        stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("ThrottlingException", 400, TransientRegistryError),
        ("ServiceUnavailableException", 503, TransientRegistryError),
        ("AccessDeniedException", 400, FatalRegistryError),
        ("ExpiredTokenException", 400, FatalRegistryError),
    ],
)
def test_lookup_error_is_raised_never_absent(
    stubbed: tuple[EcrRegistry, Any], code: str, status: int, kind: type[Exception]
) -> None:
    registry, stub = stubbed
    stub.add_client_error("describe_images", code, "m", status)
    with pytest.raises(kind, match=rf"{HOST}/{REPO}.*{code}"):
        registry.lookup(REPO, "abc123-rocm710")


@pytest.mark.parametrize(
    "details",
    [
        [],
        [{"imageDigest": "md5:abc", "imageTags": ["t"]}],
        [{"imageTags": ["t"]}],
        [{"imageDigest": DIGEST, "imageTags": ["other"]}],
    ],
    ids=["no-details", "bad-digest", "no-digest", "wrong-tag"],
)
def test_lookup_malformed_answer_is_fatal(stubbed: tuple[EcrRegistry, Any], details: list[dict[str, Any]]) -> None:
    registry, stub = stubbed
    stub.add_response("describe_images", {"imageDetails": details})
    with pytest.raises(FatalRegistryError, match="unreadable answer"):
        registry.lookup(REPO, "t")


def test_list_tags_follows_next_token_over_pages(stubbed: tuple[EcrRegistry, Any]) -> None:
    registry, stub = stubbed
    pushed = datetime(2025, 1, 2, tzinfo=UTC)
    base = {"repositoryName": REPO, "registryId": "123456789012", "filter": {"tagStatus": "TAGGED"}}
    for page in range(3):
        expected = {**base, "maxResults": 1000, **({"nextToken": f"t{page}"} if page else {})}
        answer: dict[str, Any] = {
            "imageDetails": [
                {"imageDigest": sha256(f"{page}-{i}".encode()), "imageTags": [f"p{page}i{i}"], "imagePushedAt": pushed}
                for i in range(2)
            ]
        }
        if page < 2:
            answer["nextToken"] = f"t{page + 1}"
        stub.add_response("describe_images", answer, expected)

    tags = list(registry.list_tags(REPO))

    assert [t.tag for t in tags] == ["p0i0", "p0i1", "p1i0", "p1i1", "p2i0", "p2i1"]
    assert all(t.pushed_at == pushed for t in tags)


def test_list_tags_throttled_on_a_later_page_is_transient(stubbed: tuple[EcrRegistry, Any]) -> None:
    registry, stub = stubbed
    stub.add_response("describe_images", {"imageDetails": [], "nextToken": "t1"})
    stub.add_client_error("describe_images", "ThrottlingException", "slow down", 400)
    with pytest.raises(TransientRegistryError):
        list(registry.list_tags(REPO))


def _image(raw: bytes, digest: str | None = None) -> dict[str, Any]:
    return {
        "imageId": {"imageDigest": digest or sha256(raw), "imageTag": "t"},
        "imageManifest": raw.decode(),
        "imageManifestMediaType": OCI_MANIFEST,
    }


@pytest.mark.parametrize("code", ["ImageNotFound", "ImageTagDoesNotMatchDigest"])
def test_manifest_failures_that_mean_absent(stubbed: tuple[EcrRegistry, Any], code: str) -> None:
    registry, stub = stubbed
    stub.add_response("batch_get_image", {"images": [], "failures": [{"failureCode": code, "failureReason": "r"}]})
    with pytest.raises(LookupError, match=code):
        registry.manifest(REPO, "t")


@pytest.mark.parametrize(
    ("code", "kind"),
    [("UpstreamUnavailable", TransientRegistryError), ("KmsError", FatalRegistryError)],
)
def test_manifest_failures_that_are_errors(stubbed: tuple[EcrRegistry, Any], code: str, kind: type[Exception]) -> None:
    registry, stub = stubbed
    stub.add_response("batch_get_image", {"images": [], "failures": [{"failureCode": code, "failureReason": "r"}]})
    with pytest.raises(kind, match=code):
        registry.manifest(REPO, "t")


def test_manifest_of_an_unaccepted_media_type_is_fatal(stubbed: tuple[EcrRegistry, Any]) -> None:
    registry, stub = stubbed
    raw = b'{"schemaVersion": 1}'
    image = {**_image(raw), "imageManifestMediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"}
    stub.add_response("batch_get_image", {"images": [image], "failures": []})
    with pytest.raises(FatalRegistryError, match="media type"):
        registry.manifest(REPO, "t")


def test_tag_on_an_immutable_tag_elsewhere_is_fatal(stubbed: tuple[EcrRegistry, Any]) -> None:
    registry, stub = stubbed
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()
    stub.add_response("batch_get_image", {"images": [_image(raw)], "failures": []})
    stub.add_client_error("put_image", "ImageTagAlreadyExistsException", "immutable", 400)
    stub.add_response("describe_images", {"imageDetails": [{"imageDigest": DIGEST, "imageTags": ["nightly"]}]})
    with pytest.raises(FatalRegistryError, match="immutable"):
        registry.tag(REPO, sha256(raw), "nightly")


def test_tag_on_an_immutable_tag_already_there_is_success(stubbed: tuple[EcrRegistry, Any]) -> None:
    registry, stub = stubbed
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()
    stub.add_response("batch_get_image", {"images": [_image(raw)], "failures": []})
    stub.add_client_error("put_image", "ImageTagAlreadyExistsException", "immutable", 400)
    stub.add_response("describe_images", {"imageDetails": [{"imageDigest": sha256(raw), "imageTags": ["nightly"]}]})
    registry.tag(REPO, sha256(raw), "nightly")


def test_delete_tags_tries_every_batch_then_reports_failures(stubbed: tuple[EcrRegistry, Any]) -> None:
    registry, stub = stubbed
    tags = [f"t{i}" for i in range(150)]
    failure = {"imageId": {"imageTag": "t3"}, "failureCode": "ImageReferencedByManifestList", "failureReason": "r"}
    gone = {"imageId": {"imageTag": "t4"}, "failureCode": "ImageNotFound", "failureReason": "r"}
    deleted = {"imageIds": [{"imageTag": "t0", "imageDigest": DIGEST}]}
    stub.add_response("batch_delete_image", {**deleted, "failures": [failure, gone]})
    stub.add_response("batch_delete_image", {**deleted, "failures": []})
    with pytest.raises(FatalRegistryError, match=r"1 tags not deleted: t3: ImageReferencedByManifestList"):
        registry.delete_tags(REPO, tags)


def test_login_credentials_from_an_injected_client(stubbed: tuple[EcrRegistry, Any]) -> None:
    import base64

    registry, stub = stubbed
    token = base64.b64encode(b"AWS:s3cret-token").decode()
    stub.add_response(
        "get_authorization_token",
        {
            "authorizationData": [
                {"authorizationToken": token, "proxyEndpoint": f"https://{HOST}", "expiresAt": datetime.now(UTC)}
            ]
        },
        {"registryIds": ["123456789012"]},
    )
    creds = registry.login_credentials()
    assert (creds.registry, creds.username, creds.password) == (HOST, "AWS", "s3cret-token")
    assert "s3cret" not in repr(creds)


def test_importing_the_module_loads_no_aws_sdk() -> None:
    code = (
        "import sys, rocm_release.adapters.registry.ecr as m; "
        "m.EcrRegistry('123456789012.dkr.ecr.us-east-1.amazonaws.com'); "
        "bad = [n for n in ('boto3', 'botocore', 'airflow') if n in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
