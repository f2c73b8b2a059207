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
``list_tags`` and ``list_untagged`` one DescribeImages per 1,000 images; ``delete_tags`` and
``delete_digests`` one BatchDeleteImage per 100 tags or images.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from rocm_release.adapters.registry.ecr_answers import (
    config_descriptor,
    config_labels,
    digest_field,
    image_id,
    platform_child,
    required_str,
    stored_manifest,
)
from rocm_release.adapters.registry.ecr_blob import fetch_blob
from rocm_release.adapters.registry.ecr_errors import (
    ABSENT_CODES,
    ABSENT_FAILURES,
    TRANSIENT_FAILURES,
    EcrImageNotFoundError,
    MalformedAnswer,
    classify_exception,
    error_code,
)
from rocm_release.core.names import DIGEST_RE, INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES
from rocm_release.core.registry import (
    MAX_LIST_PAGES,
    FatalRegistryError,
    LoginCredentials,
    Lookup,
    Manifest,
    RegistryError,
    TagInfo,
    TransientRegistryError,
    UntaggedImage,
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
        except MalformedAnswer as exc:
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
                    repositoryName=repository, imageIds=[image_id(tag)], **self._ids()
                )
            except ClientError as exc:
                code = error_code(exc)
                if code in ABSENT_CODES:
                    log.debug("%s/%s:%s absent (%s)", self._host, repository, tag, code)
                    return Lookup(present=False, reason=f"{code}: {exc}")
                raise
            details = answer.get("imageDetails")
            if not isinstance(details, list) or len(details) != 1:
                raise MalformedAnswer(f"DescribeImages returned {details!r} for one imageId")
            digest = digest_field(details[0], "imageDigest", "DescribeImages imageDetails")
            if DIGEST_RE.match(tag):
                if digest != tag:
                    raise MalformedAnswer(f"asked for {tag}, got {digest}")
            elif tag not in (details[0].get("imageTags") or []):
                raise MalformedAnswer(f"the image returned for tag {tag!r} does not carry it")
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
                    imageIds=[image_id(reference)],
                    acceptedMediaTypes=list(MANIFEST_MEDIA_TYPES),
                    **self._ids(),
                )
            except ClientError as exc:
                if error_code(exc) in ABSENT_CODES:
                    raise self._absent(repository, reference, str(error_code(exc))) from exc
                raise
            failures = answer.get("failures") or []
            images = answer.get("images") or []
            if failures:
                self._raise_failures(repository, reference, failures, images)
            return stored_manifest(reference, images)

    def _raise_failures(self, repository: str, reference: str, failures: list[Any], images: list[Any]) -> NoReturn:
        """BatchGetImage ``failures``: absent when they all say so (and no image came), else an error."""
        codes = sorted({str(f.get("failureCode")) for f in failures if isinstance(f, dict)})
        detail = "; ".join(f"{f.get('failureCode')}: {f.get('failureReason')}" for f in failures)
        if not images and set(codes) <= ABSENT_FAILURES:
            raise self._absent(repository, reference, detail)
        kind = TransientRegistryError if set(codes) <= TRANSIENT_FAILURES else FatalRegistryError
        raise kind(self._host, repository, f"BatchGetImage {reference!r}: {detail}", self._connection_id())

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
            config_digest, limit = config_descriptor(found.raw, MAX_CONFIG_BYTES)
            answer = self.client.get_download_url_for_layer(
                repositoryName=repository, layerDigest=config_digest, **self._ids()
            )
            url = required_str(answer, "downloadUrl", "GetDownloadUrlForLayer")
            blob = fetch_blob(url, limit, self._host, repository, self._connection_id())
            return config_labels(blob, config_digest)

    def _platform_child(self, repository: str, reference: str, index: Manifest) -> str:
        """The digest of the index entry for ``platform`` (attestation entries never match)."""
        with self._translated(repository, f"pick the {self._platform} image of {reference!r}"):
            return platform_child(index.raw, self._platform)

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
            tagged = digest_field(answer.get("image", {}).get("imageId"), "imageDigest", "PutImage imageId")
            if tagged != digest:
                raise MalformedAnswer(f"PutImage tagged {tagged}, not {digest}")
            log.info("%s/%s:%s -> %s", self._host, repository, new_tag, digest)

    def list_tags(self, repository: str, *, with_push_times: bool = False) -> Iterator[TagInfo]:
        """Every tag, all pages of DescribeImages (``page_size`` images per call), always with push
        times (``imagePushedAt`` comes free with the listing; ``with_push_times`` changes nothing).

        A repository that does not exist has no tags: that is a definitive, empty answer. A listing
        whose next token comes back, or that goes on past MAX_LIST_PAGES pages, is Fatal.
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
                for page in self._bounded(repository, pages):
                    for detail in page.get("imageDetails") or []:
                        digest = digest_field(detail, "imageDigest", "DescribeImages imageDetails")
                        pushed_at = detail.get("imagePushedAt")
                        if not isinstance(pushed_at, datetime):
                            pushed_at = None
                        media_type = detail.get("imageManifestMediaType")
                        for tag in detail.get("imageTags") or []:
                            yield TagInfo(tag=str(tag), digest=digest, pushed_at=pushed_at, media_type=media_type)
            except ClientError as exc:
                if error_code(exc) != "RepositoryNotFoundException":
                    raise
                log.info("%s/%s does not exist: no tags", self._host, repository)

    def _bounded(self, repository: str, pages: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """``pages``, refusing (Fatal) a next token seen before, and a next page after MAX_LIST_PAGES."""
        tokens: set[str] = set()
        for number, page in enumerate(pages, 1):
            token = page.get("nextToken")
            problem = None
            if token is not None and token in tokens:
                problem = f"pagination loops back to a next token it gave before ({str(token)[:40]!r})"
            elif token is not None and number >= MAX_LIST_PAGES:
                problem = f"more than {MAX_LIST_PAGES} pages: a registry that pages forever?"
            if problem:
                raise FatalRegistryError(self._host, repository, f"DescribeImages: {problem}", self._connection_id())
            if token is not None:
                tokens.add(token)
            yield page

    def delete_tags(self, repository: str, tags: Sequence[str]) -> None:
        """Delete tags, at most 100 per BatchDeleteImage call.

        Tags already gone count as deleted. Every batch is attempted; other failures are then raised
        together (transient only when all of them are upstream throttling/outage).
        """
        self._batch_delete(repository, [{"imageTag": t} for t in dict.fromkeys(tags)], "tags")

    def delete_digests(self, repository: str, digests: Sequence[str]) -> None:
        """Delete images by digest (untagged ones: a digest that still has tags loses them too), at most
        100 per BatchDeleteImage call. ECR refuses an image an index lists (ImageReferencedByManifestList):
        it is kept and logged, not an error."""
        for digest in digests:
            if not DIGEST_RE.match(digest):
                raise ValueError(f"delete_digests() needs sha256 digests, got {digest!r}")
        self._batch_delete(repository, [{"imageDigest": d} for d in dict.fromkeys(digests)], "images",
                           keep_listed=True)

    def _batch_delete(self, repository: str, image_ids: list[dict[str, str]], what: str, *,
                      keep_listed: bool = False) -> None:
        from botocore.exceptions import ClientError

        problems: list[str] = []
        codes: set[str] = set()
        deleted = 0
        with self._translated(repository, f"delete {len(image_ids)} {what}"):
            for start in range(0, len(image_ids), DELETE_BATCH):
                try:
                    answer = self.client.batch_delete_image(
                        repositoryName=repository, imageIds=image_ids[start : start + DELETE_BATCH], **self._ids()
                    )
                except ClientError as exc:
                    if error_code(exc) == "RepositoryNotFoundException":
                        log.info("%s/%s does not exist: nothing to delete", self._host, repository)
                        return
                    raise
                deleted += len(answer.get("imageIds") or [])
                for failure in answer.get("failures") or []:
                    code, image = str(failure.get("failureCode")), failure.get("imageId") or {}
                    name = image.get("imageTag") or image.get("imageDigest")
                    if code == "ImageNotFound":
                        continue
                    if code == "ImageReferencedByManifestList" and keep_listed:
                        log.info("%s/%s@%s: kept, an index lists it", self._host, repository, name)
                        continue
                    codes.add(code)
                    problems.append(f"{name}: {code}: {failure.get('failureReason')}")
        log.info("%s/%s: deleted %d of %d %s", self._host, repository, deleted, len(image_ids), what)
        if problems:
            kind = TransientRegistryError if codes <= TRANSIENT_FAILURES else FatalRegistryError
            shown = "; ".join(problems[:10]) + (f"; … {len(problems) - 10} more" if len(problems) > 10 else "")
            raise kind(self._host, repository, f"{len(problems)} {what} not deleted: {shown}", self._connection_id())

    lists_untagged = True  # DescribeImages filters tagStatus=UNTAGGED

    def list_untagged(self, repository: str) -> Iterator[UntaggedImage]:
        """Every image without a tag (DescribeImages, ``tagStatus=UNTAGGED``, 1,000 per call), with its push
        time, manifest media type and artifact (config) media type. None in a repository that does not exist."""
        from botocore.exceptions import ClientError

        with self._translated(repository, "list untagged images"):
            pages = self.client.get_paginator("describe_images").paginate(
                repositoryName=repository, filter={"tagStatus": "UNTAGGED"},
                PaginationConfig={"PageSize": self._page_size}, **self._ids(),
            )
            try:
                for page in pages:
                    for detail in page.get("imageDetails") or []:
                        if detail.get("imageTags"):  # the filter says untagged; an image with tags is not
                            continue
                        pushed_at = detail.get("imagePushedAt")
                        yield UntaggedImage(digest_field(detail, "imageDigest", "DescribeImages imageDetails"),
                                            pushed_at if isinstance(pushed_at, datetime) else None,
                                            detail.get("imageManifestMediaType"), detail.get("artifactMediaType"))
            except ClientError as exc:
                if error_code(exc) != "RepositoryNotFoundException":
                    raise

    def login_credentials(self) -> LoginCredentials:
        """``docker login`` credentials: a 12-hour token from GetAuthorizationToken (never logged)."""
        with self._translated("", "get an authorization token"):
            client = self.client  # builds the hook too
            if self._hook is not None:
                tokens = self._hook.get_temporary_credentials(registry_ids=self._registry_id)
                if not tokens:
                    raise MalformedAnswer("GetAuthorizationToken returned no authorizationData")
                username, password, endpoint = tokens[0].username, tokens[0].password, tokens[0].registry
            else:
                answer = client.get_authorization_token(
                    **({"registryIds": [self._registry_id]} if self._registry_id else {})
                )
                data = (answer.get("authorizationData") or [None])[0]
                token = base64.b64decode(required_str(data, "authorizationToken", "authorizationData"))
                username, sep, password = token.decode("utf-8").partition(":")
                if not sep or not username or not password:
                    raise MalformedAnswer("authorizationToken is not 'user:password'")
                endpoint = required_str(data, "proxyEndpoint", "authorizationData").removeprefix("https://")
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


def _mask(secret: str) -> None:
    """Register a secret with Airflow's log masker when Airflow is there (tests may run without it)."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:
        return
    mask_secret(secret)
