"""Amazon ECR through the Amazon provider: :class:`EcrRegistry` implements :class:`ImageRegistry`.

The boto3 client comes from ``EcrHook(aws_conn_id=...)``, so the Airflow connection decides
credentials, region and endpoint (``endpoint_url`` in its extra can point at a moto server).
It is built on first use, never at import: boto3/botocore are imported inside functions only.

Every call ends present, absent, or raises (see :mod:`rocm_release.core.registry`). Only
``ImageNotFoundException``/``RepositoryNotFoundException`` (and the matching ``BatchGetImage``
failures) mean absent; throttling, 5xx and network errors are transient; refused credentials and
anything we cannot read are fatal. botocore retries at most once (standard mode, two attempts):
the sensors own the waiting, and a sensor poke that hangs in botocore's back-off holds a slot.

Cost of each call, in ECR API requests: ``lookup`` 1 (DescribeImages); ``manifest`` 1
(BatchGetImage); ``labels`` 2 (BatchGetImage + GetDownloadUrlForLayer) plus one HTTPS GET of the
config blob, or 3 + 1 when the reference is an index; ``tag`` 2 (BatchGetImage + PutImage);
``list_tags`` one DescribeImages per 1,000 images; ``delete_tags`` one BatchDeleteImage per 100 tags.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from rocm_release.core.names import DIGEST_RE, INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES
from rocm_release.core.registry import (
    FatalRegistryError,
    LoginCredentials,
    Lookup,
    Manifest,
    RegistryError,
    TagInfo,
    TransientRegistryError,
)

if TYPE_CHECKING:
    from rocm_release.core.config import Registry as RegistryConfig

log = logging.getLogger(__name__)

# ``<account>.dkr.ecr.<region>.amazonaws.com`` (and ``.amazonaws.com.cn``): the host names the
# registry. A connection in another region would ask a different registry and hear "absent".
ECR_HOST_RE = re.compile(
    r"^(?P<account>[0-9]{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$"
)

DELETE_BATCH = 100  # BatchDeleteImage accepts at most 100 imageIds per call.
DESCRIBE_PAGE = 1000  # DescribeImages returns at most 1,000 images per page.
MAX_CONFIG_BYTES = 32 * 1024 * 1024  # an image config is JSON metadata; anything bigger is not one

# botocore's own retries stay small (two attempts in all: botocore's ``max_attempts`` would count
# retries only); the sensors poke again later instead.
_BOTOCORE_DEFAULTS: dict[str, Any] = {
    "retries": {"mode": "standard", "total_max_attempts": 2},
    "connect_timeout": 10,
    "read_timeout": 30,
}

_ABSENT_CODES = frozenset({"ImageNotFoundException", "RepositoryNotFoundException"})
_ABSENT_FAILURES = frozenset({"ImageNotFound", "ImageTagDoesNotMatchDigest"})
_TRANSIENT_FAILURES = frozenset({"UpstreamTooManyRequests", "UpstreamUnavailable"})
_TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "ServerException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
    }
)
# Named so that a 5xx wrapper around one of them (some proxies do that) still reads as fatal.
_FATAL_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "RequestExpired",
        "RequestTimeTooSkewed",
    }
)


class EcrImageNotFoundError(LookupError):
    """The registry said definitively that the repository or the image is not there."""


class _MalformedAnswer(Exception):
    """ECR answered, but not with something we can read."""


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError`` (None for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code is not None else None


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def classify_exception(exc: BaseException) -> type[RegistryError]:
    """Transient or fatal, for any exception a botocore call (or our parsing of it) can raise.

    Unknown means fatal: a wrong "try again" only delays a page, a wrong "absent" rebuilds for hours,
    so absent is never decided here (callers check :data:`_ABSENT_CODES` first).
    """
    from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError, SSLError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, ClientError):
        code = error_code(exc) or ""
        status = _http_status(exc)
        if code in _FATAL_CODES or status in (401, 403):
            return FatalRegistryError
        if code in _TRANSIENT_CODES or status == 429 or (status is not None and status >= 500):
            return TransientRegistryError
        return FatalRegistryError
    if isinstance(exc, SSLError):  # a certificate problem does not fix itself
        return FatalRegistryError
    if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
        # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError, ...
        return TransientRegistryError
    return FatalRegistryError


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _image_id(reference: str) -> dict[str, str]:
    return {"imageDigest": reference} if DIGEST_RE.match(reference) else {"imageTag": reference}


def _required_str(data: Any, key: str, where: str) -> str:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise _MalformedAnswer(f"{where} has no {key!r}")
    return value


def _digest(data: Any, key: str, where: str) -> str:
    value = _required_str(data, key, where)
    if not DIGEST_RE.match(value):
        raise _MalformedAnswer(f"{where} has {key}={value!r}, not a sha256 digest")
    return value


class EcrRegistry:
    """An Amazon ECR registry (one account and region), reached through an Airflow AWS connection.

    ``registry_host`` is what image references use (``<account>.dkr.ecr.<region>.amazonaws.com``);
    when it has that shape, its account becomes the ``registryId`` of every call and its region
    the client's region, whatever the connection says. ``client`` injects a ready boto3 ECR client
    (tests); then no Airflow connection is read.
    """

    def __init__(
        self,
        registry_host: str,
        *,
        aws_conn_id: str | None = "aws_default",
        registry_id: str | None = None,
        client: Any = None,
        page_size: int = DESCRIBE_PAGE,
        platform: str = "linux/amd64",
    ) -> None:
        if not registry_host or "/" in registry_host:
            raise ValueError(f"registry_host must be a host name (with optional port), got {registry_host!r}")
        if not 1 <= page_size <= DESCRIBE_PAGE:
            raise ValueError(f"page_size must be 1..{DESCRIBE_PAGE}, got {page_size}")
        match = ECR_HOST_RE.match(registry_host)
        self._host = registry_host
        self._region = match["region"] if match else None
        self._registry_id = registry_id or (match["account"] if match else None)
        self._aws_conn_id = aws_conn_id
        self._page_size = page_size
        self._platform = platform
        self._hook: Any = None
        self._client: Any = client
        self._injected = client is not None
        if self._injected and self._region and client.meta.region_name != self._region:
            raise ValueError(
                f"the injected client is for region {client.meta.region_name!r}, "
                f"but {registry_host} is in {self._region!r}"
            )

    @classmethod
    def from_config(cls, registry: RegistryConfig) -> EcrRegistry:
        """The registry a config ``cache_registry``/``public_registry`` entry of kind ``ecr`` names."""
        if registry.kind != "ecr":
            raise ValueError(f"registry {registry.host} is of kind {registry.kind!r}, not 'ecr'")
        return cls(registry.host, aws_conn_id=registry.connection_id or "aws_default")

    def __repr__(self) -> str:
        return f"EcrRegistry({self._host!r}, aws_conn_id={self._aws_conn_id!r})"

    deletes_by_digest = False  # BatchDeleteImage removes tags; an image goes with its last tag

    @property
    def name(self) -> str:
        """Host of the registry, for messages and image references."""
        return self._host

    @property
    def client(self) -> Any:
        """The boto3 ECR client, built from the connection on first use."""
        if self._client is None:
            self._client = self._build_client()
        return self._client

    def _connection_id(self) -> str | None:
        return None if self._injected else self._aws_conn_id

    def _build_client(self) -> Any:
        from airflow.providers.amazon.aws.hooks.ecr import EcrHook
        from botocore.config import Config

        try:
            hook = EcrHook(aws_conn_id=self._aws_conn_id, region_name=self._region)  # type: ignore[no-untyped-call]
            wrapper = hook.conn_config  # reads the connection, once
            config = Config(**_BOTOCORE_DEFAULTS)
            if wrapper.botocore_config is not None:  # the connection's config_kwargs win over our defaults
                config = config.merge(wrapper.botocore_config)
            # The hook builds its client from conn_config.botocore_config. Passing ``config=`` to the
            # hook instead would drop the connection's config_kwargs, or cost a second lookup.
            wrapper.botocore_config = config
            self._hook = hook
            return self._hook.conn
        except Exception as exc:  # a missing connection, bad extras, an STS outage while assuming a role
            kind = classify_exception(exc)
            raise kind(self._host, "", f"cannot build the ECR client: {exc}", self._connection_id()) from exc

    def _ids(self) -> dict[str, str]:
        return {"registryId": self._registry_id} if self._registry_id else {}

    def _raise(self, kind: type[RegistryError], repository: str, detail: str, cause: BaseException) -> NoReturn:
        raise kind(self._host, repository, detail, self._connection_id()) from cause

    @contextmanager
    def _translated(self, repository: str, action: str) -> Iterator[None]:
        """Turn whatever a call raises into Transient/FatalRegistryError naming where it happened."""
        try:
            yield
        except (RegistryError, EcrImageNotFoundError):
            raise
        except _MalformedAnswer as exc:
            self._raise(FatalRegistryError, repository, f"{action}: unreadable answer: {exc}", exc)
        except Exception as exc:
            kind = classify_exception(exc)
            self._raise(kind, repository, f"{action}: {type(exc).__name__}: {exc}", exc)

    def _absent(self, repository: str, reference: str, why: str) -> EcrImageNotFoundError:
        return EcrImageNotFoundError(f"{self._host}/{repository}:{reference} is absent: {why}")

    # -- the protocol -------------------------------------------------------------------------

    def lookup(self, repository: str, tag: str) -> Lookup:
        """Present with digest, or absent. One DescribeImages call."""
        from botocore.exceptions import ClientError

        with self._translated(repository, f"look up {tag!r}"):
            try:
                answer = self.client.describe_images(
                    repositoryName=repository, imageIds=[_image_id(tag)], **self._ids()
                )
            except ClientError as exc:
                code = error_code(exc)
                if code in _ABSENT_CODES:
                    log.debug("%s/%s:%s absent (%s)", self._host, repository, tag, code)
                    return Lookup(present=False, reason=f"{code}: {exc}")
                raise
            details = answer.get("imageDetails")
            if not isinstance(details, list) or len(details) != 1:
                raise _MalformedAnswer(f"DescribeImages returned {details!r} for one imageId")
            digest = _digest(details[0], "imageDigest", "DescribeImages imageDetails")
            if DIGEST_RE.match(tag):
                if digest != tag:
                    raise _MalformedAnswer(f"asked for {tag}, got {digest}")
            elif tag not in (details[0].get("imageTags") or []):
                raise _MalformedAnswer(f"the image returned for tag {tag!r} does not carry it")
            return Lookup(present=True, digest=digest)

    def manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest of a tag or digest, byte for byte. One BatchGetImage call.

        Raises :class:`EcrImageNotFoundError` (a ``LookupError``) when absent. The bytes must hash to
        the digest ECR reports (that is how ECR computes it); if not, the answer is fatal.
        """
        from botocore.exceptions import ClientError

        with self._translated(repository, f"get the manifest of {reference!r}"):
            try:
                answer = self.client.batch_get_image(
                    repositoryName=repository,
                    imageIds=[_image_id(reference)],
                    acceptedMediaTypes=list(MANIFEST_MEDIA_TYPES),
                    **self._ids(),
                )
            except ClientError as exc:
                if error_code(exc) in _ABSENT_CODES:
                    raise self._absent(repository, reference, str(error_code(exc))) from exc
                raise
            failures = answer.get("failures") or []
            images = answer.get("images") or []
            if failures:
                codes = sorted({str(f.get("failureCode")) for f in failures if isinstance(f, dict)})
                detail = "; ".join(f"{f.get('failureCode')}: {f.get('failureReason')}" for f in failures)
                if not images and set(codes) <= _ABSENT_FAILURES:
                    raise self._absent(repository, reference, detail)
                kind = TransientRegistryError if set(codes) <= _TRANSIENT_FAILURES else FatalRegistryError
                raise kind(self._host, repository, f"BatchGetImage {reference!r}: {detail}", self._connection_id())
            if not images:
                raise _MalformedAnswer("BatchGetImage returned neither images nor failures")
            image = images[0]
            text = _required_str(image, "imageManifest", "BatchGetImage image")
            raw = text.encode("utf-8")
            digest = _digest(image.get("imageId"), "imageDigest", "BatchGetImage imageId")
            if any(_digest(i.get("imageId"), "imageDigest", "BatchGetImage imageId") != digest for i in images):
                raise _MalformedAnswer(f"BatchGetImage returned several digests for {reference!r}")
            if DIGEST_RE.match(reference) and digest != reference:
                raise _MalformedAnswer(f"asked for {reference}, got {digest}")
            if _sha256(raw) != digest:
                raise _MalformedAnswer(f"manifest bytes hash to {_sha256(raw)}, ECR says {digest}")
            media_type = image.get("imageManifestMediaType") or _json_object(raw, "manifest").get("mediaType")
            if media_type not in MANIFEST_MEDIA_TYPES:
                raise _MalformedAnswer(f"manifest media type {media_type!r} is not one of {MANIFEST_MEDIA_TYPES}")
            return Manifest(raw=raw, media_type=str(media_type), digest=digest)

    def labels(self, repository: str, reference: str) -> dict[str, str]:
        """The image config's ``Labels`` ({} when it has none).

        BatchGetImage for the manifest (and once more for the ``platform`` child of an index),
        GetDownloadUrlForLayer for the config blob, then one GET of that pre-signed URL; the blob
        must hash to the config digest the manifest names.
        """
        found = self.manifest(repository, reference)
        if found.media_type in INDEX_MEDIA_TYPES:
            child = self._platform_child(repository, reference, found)
            found = self.manifest(repository, child)
        with self._translated(repository, f"read the labels of {reference!r}"):
            document = _json_object(found.raw, "manifest")
            config = document.get("config")
            config_digest = _digest(config, "digest", "manifest config")
            declared = config.get("size") if isinstance(config, dict) else None
            limit = declared if isinstance(declared, int) and 0 <= declared <= MAX_CONFIG_BYTES else MAX_CONFIG_BYTES
            answer = self.client.get_download_url_for_layer(
                repositoryName=repository, layerDigest=config_digest, **self._ids()
            )
            url = _required_str(answer, "downloadUrl", "GetDownloadUrlForLayer")
            blob = self._fetch_blob(repository, url, limit)
            if _sha256(blob) != config_digest:
                raise _MalformedAnswer(f"config blob hashes to {_sha256(blob)}, the manifest names {config_digest}")
            image_config = _json_object(blob, "image config").get("config") or {}
            if not isinstance(image_config, dict):
                raise _MalformedAnswer("image config 'config' is not an object")
            labels = image_config.get("Labels") or {}
            if not isinstance(labels, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
            ):
                raise _MalformedAnswer(f"image config Labels is not a string map: {labels!r}")
            return dict(labels)

    def _platform_child(self, repository: str, reference: str, index: Manifest) -> str:
        """The digest of the index entry for ``platform`` (attestation entries never match)."""
        with self._translated(repository, f"pick the {self._platform} image of {reference!r}"):
            entries = _json_object(index.raw, "index").get("manifests")
            if not isinstance(entries, list):
                raise _MalformedAnswer("index has no 'manifests' list")
            os_name, _, arch = self._platform.partition("/")
            seen = []
            for entry in entries:
                platform = entry.get("platform") if isinstance(entry, dict) else None
                if not isinstance(platform, dict):
                    continue
                seen.append(f"{platform.get('os')}/{platform.get('architecture')}")
                if platform.get("os") == os_name and platform.get("architecture") == arch:
                    return _digest(entry, "digest", "index entry")
            raise _MalformedAnswer(f"index has no {self._platform} image (it has {seen})")

    def _fetch_blob(self, repository: str, url: str, limit: int) -> bytes:
        """GET a pre-signed blob URL, at most ``limit`` bytes. Network trouble and 5xx are transient."""
        import httpx

        if not url.startswith(("https://", "http://")):
            raise _MalformedAnswer(f"download URL is not http(s): {url.split('?')[0]!r}")
        where = url.split("?", 1)[0]  # the query string is the signature: keep it out of messages
        try:
            with httpx.stream("GET", url, timeout=30.0, follow_redirects=True) as response:
                if response.status_code == 429 or response.status_code >= 500:
                    raise TransientRegistryError(
                        self._host, repository, f"GET {where}: HTTP {response.status_code}", self._connection_id()
                    )
                if response.status_code != 200:
                    raise FatalRegistryError(
                        self._host, repository, f"GET {where}: HTTP {response.status_code}", self._connection_id()
                    )
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise _MalformedAnswer(f"GET {where}: more than {limit} bytes")
                return bytes(body)
        except httpx.TransportError as exc:
            raise TransientRegistryError(
                self._host, repository, f"GET {where}: {type(exc).__name__}: {exc}", self._connection_id()
            ) from exc

    def tag(self, repository: str, digest: str, new_tag: str) -> None:
        """Point ``new_tag`` at ``digest``: PutImage of the stored manifest bytes, no layer moves.

        Idempotent: ``ImageAlreadyExistsException`` (this tag already on this manifest) is success.
        """
        from botocore.exceptions import ClientError

        if not DIGEST_RE.match(digest):
            raise ValueError(f"tag() needs a sha256 digest, got {digest!r}")
        stored = self.manifest(repository, digest)
        with self._translated(repository, f"tag {digest} as {new_tag!r}"):
            try:
                answer = self.client.put_image(
                    repositoryName=repository,
                    imageManifest=stored.raw.decode("utf-8"),
                    imageManifestMediaType=stored.media_type,
                    imageTag=new_tag,
                    imageDigest=digest,
                    **self._ids(),
                )
            except ClientError as exc:
                code = error_code(exc)
                if code == "ImageAlreadyExistsException":
                    log.info("%s/%s:%s already points at %s", self._host, repository, new_tag, digest)
                    return
                if code == "ImageTagAlreadyExistsException":  # an immutable repository
                    current = self.lookup(repository, new_tag)
                    if current.digest == digest:
                        return
                    raise FatalRegistryError(
                        self._host,
                        repository,
                        f"tag {new_tag!r} is immutable here and points at {current.digest}, not {digest}",
                        self._connection_id(),
                    ) from exc
                raise
            tagged = _digest(answer.get("image", {}).get("imageId"), "imageDigest", "PutImage imageId")
            if tagged != digest:
                raise _MalformedAnswer(f"PutImage tagged {tagged}, not {digest}")
            log.info("%s/%s:%s -> %s", self._host, repository, new_tag, digest)

    def list_tags(self, repository: str, *, with_push_times: bool = False) -> Iterator[TagInfo]:
        """Every tag, all pages of DescribeImages (``page_size`` images per call), always with push
        times (``imagePushedAt`` comes free with the listing; ``with_push_times`` changes nothing).

        A repository that does not exist has no tags: that is a definitive, empty answer.
        """
        from botocore.exceptions import ClientError

        with self._translated(repository, "list tags"):
            pages = self.client.get_paginator("describe_images").paginate(
                repositoryName=repository,
                filter={"tagStatus": "TAGGED"},
                PaginationConfig={"PageSize": self._page_size},
                **self._ids(),
            )
            try:
                for page in pages:
                    for detail in page.get("imageDetails") or []:
                        digest = _digest(detail, "imageDigest", "DescribeImages imageDetails")
                        pushed_at = detail.get("imagePushedAt")
                        if not isinstance(pushed_at, datetime):
                            pushed_at = None
                        for tag in detail.get("imageTags") or []:
                            yield TagInfo(tag=str(tag), digest=digest, pushed_at=pushed_at)
            except ClientError as exc:
                if error_code(exc) != "RepositoryNotFoundException":
                    raise
                log.info("%s/%s does not exist: no tags", self._host, repository)

    def delete_tags(self, repository: str, tags: Sequence[str]) -> None:
        """Delete tags, at most 100 per BatchDeleteImage call.

        Tags already gone count as deleted. Every batch is attempted; other failures are then raised
        together (transient only when all of them are upstream throttling/outage).
        """
        from botocore.exceptions import ClientError

        wanted = list(dict.fromkeys(tags))
        problems: list[str] = []
        codes: set[str] = set()
        deleted = 0
        with self._translated(repository, f"delete {len(wanted)} tags"):
            for start in range(0, len(wanted), DELETE_BATCH):
                batch = wanted[start : start + DELETE_BATCH]
                try:
                    answer = self.client.batch_delete_image(
                        repositoryName=repository, imageIds=[{"imageTag": t} for t in batch], **self._ids()
                    )
                except ClientError as exc:
                    if error_code(exc) == "RepositoryNotFoundException":
                        log.info("%s/%s does not exist: nothing to delete", self._host, repository)
                        return
                    raise
                deleted += len(answer.get("imageIds") or [])
                for failure in answer.get("failures") or []:
                    code = str(failure.get("failureCode"))
                    if code == "ImageNotFound":
                        continue
                    codes.add(code)
                    tag = (failure.get("imageId") or {}).get("imageTag")
                    problems.append(f"{tag}: {code}: {failure.get('failureReason')}")
        log.info("%s/%s: deleted %d of %d tags", self._host, repository, deleted, len(wanted))
        if problems:
            kind = TransientRegistryError if codes <= _TRANSIENT_FAILURES else FatalRegistryError
            shown = "; ".join(problems[:10]) + (f"; … {len(problems) - 10} more" if len(problems) > 10 else "")
            raise kind(self._host, repository, f"{len(problems)} tags not deleted: {shown}", self._connection_id())

    def login_credentials(self) -> LoginCredentials:
        """``docker login`` credentials: a 12-hour token from GetAuthorizationToken (never logged)."""
        with self._translated("", "get an authorization token"):
            client = self.client  # builds the hook too
            if self._hook is not None:
                tokens = self._hook.get_temporary_credentials(registry_ids=self._registry_id)
                if not tokens:
                    raise _MalformedAnswer("GetAuthorizationToken returned no authorizationData")
                username, password, endpoint = tokens[0].username, tokens[0].password, tokens[0].registry
            else:
                answer = client.get_authorization_token(
                    **({"registryIds": [self._registry_id]} if self._registry_id else {})
                )
                data = (answer.get("authorizationData") or [None])[0]
                token = base64.b64decode(_required_str(data, "authorizationToken", "authorizationData"))
                username, sep, password = token.decode("utf-8").partition(":")
                if not sep or not username or not password:
                    raise _MalformedAnswer("authorizationToken is not 'user:password'")
                endpoint = _required_str(data, "proxyEndpoint", "authorizationData").removeprefix("https://")
                _mask(password)
        if endpoint != self._host:
            log.warning("ECR names its endpoint %s; the credentials are for the configured %s", endpoint, self._host)
        return LoginCredentials(registry=self._host, username=username, password=password)

    def ensure_repository(self, repository: str) -> bool:
        """Create the repository (mutable tags) unless it exists. True when it was created."""
        from botocore.exceptions import ClientError

        with self._translated(repository, "create the repository"):
            try:
                self.client.create_repository(repositoryName=repository, imageTagMutability="MUTABLE", **self._ids())
            except ClientError as exc:
                if error_code(exc) == "RepositoryAlreadyExistsException":
                    return False
                raise
        log.info("created %s/%s", self._host, repository)
        return True


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _MalformedAnswer(f"{what} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise _MalformedAnswer(f"{what} is not a JSON object")
    return document


def _mask(secret: str) -> None:
    """Register a secret with Airflow's log masker when Airflow is there (tests may run without it)."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:
        return
    mask_secret(secret)
