"""How ECR's errors read: absent, transient (ask again later) or fatal (a person must act).

``botocore`` is imported inside :func:`classify_exception` only, so importing this module loads no
AWS SDK. Absent is decided by the caller from :data:`ABSENT_CODES` / :data:`ABSENT_FAILURES`, never
by :func:`classify_exception`.
"""

from __future__ import annotations

from rocm_release.core.registry import FatalRegistryError, RegistryError, TransientRegistryError

# AWS error codes (of a ClientError) that mean "definitively not there".
ABSENT_CODES = frozenset({"ImageNotFoundException", "RepositoryNotFoundException"})
# ``failureCode``s of BatchGetImage / BatchDeleteImage: absent, and upstream trouble (pull-through caches).
ABSENT_FAILURES = frozenset({"ImageNotFound", "ImageTagDoesNotMatchDigest"})
TRANSIENT_FAILURES = frozenset({"UpstreamTooManyRequests", "UpstreamUnavailable"})
# AWS error codes of throttling, outages and timeouts.
TRANSIENT_CODES = frozenset(
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
FATAL_CODES = frozenset(
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


class MalformedAnswer(Exception):
    """ECR answered, but not with something we can read."""


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError`` (None for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code is not None else None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a botocore ``ClientError`` (None for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def classify_exception(exc: BaseException) -> type[RegistryError]:
    """Transient or fatal, for any exception a botocore call (or our parsing of it) can raise.

    Unknown means fatal: a wrong "try again" only delays a page, a wrong "absent" rebuilds for hours,
    so absent is never decided here (callers check :data:`ABSENT_CODES` first).
    """
    from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError, SSLError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, ClientError):
        code = error_code(exc) or ""
        status = http_status(exc)
        if code in FATAL_CODES or status in (401, 403):
            return FatalRegistryError
        if code in TRANSIENT_CODES or status == 429 or (status is not None and status >= 500):
            return TransientRegistryError
        return FatalRegistryError
    if isinstance(exc, SSLError):  # a certificate problem does not fix itself
        return FatalRegistryError
    if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
        # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError, ...
        return TransientRegistryError
    return FatalRegistryError
