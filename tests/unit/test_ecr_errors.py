"""How ECR errors are classified (adapters/registry/ecr_errors.py): transient or fatal, never absent.

The exceptions are real botocore ones, built here; nothing is sent.
"""

from __future__ import annotations

import pytest

from rocm_release.adapters.registry.ecr_errors import classify_exception
from rocm_release.core.registry import FatalRegistryError, TransientRegistryError


def client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


def _botocore_error(name: str) -> Exception:
    from botocore import exceptions

    kwargs = {
        "EndpointConnectionError": {"endpoint_url": "http://127.0.0.1:9"},
        "ConnectTimeoutError": {"endpoint_url": "http://127.0.0.1:9"},
        "ReadTimeoutError": {"endpoint_url": "http://127.0.0.1:9"},
        "ConnectionClosedError": {"endpoint_url": "http://127.0.0.1:9"},
        "SSLError": {"endpoint_url": "https://x", "error": "certificate verify failed"},
        "NoCredentialsError": {},
        "ParamValidationError": {"report": "bad"},
    }[name]
    return getattr(exceptions, name)(**kwargs)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ThrottlingException", 400),
        ("ServiceUnavailable", 503),
        ("ServerException", 500),
        ("TooManyRequestsException", 429),
        ("500", 500),  # a bare 5xx, e.g. an HTML error page from a proxy
    ],
)
def test_throttling_and_5xx_are_transient(code: str, status: int) -> None:
    assert classify_exception(client_error(code, status)) is TransientRegistryError


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("AccessDeniedException", 400),
        ("UnrecognizedClientException", 400),
        ("ExpiredTokenException", 400),
        ("InvalidSignatureException", 400),
        ("403", 403),
        ("401", 401),
        ("InvalidParameterException", 400),
        ("SomethingNewException", 400),
        ("AccessDeniedException", 503),  # a named credential problem stays fatal whatever the status
    ],
)
def test_refused_credentials_and_unknown_errors_are_fatal(code: str, status: int) -> None:
    assert classify_exception(client_error(code, status)) is FatalRegistryError


@pytest.mark.parametrize(
    "name", ["EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"]
)
def test_network_errors_are_transient(name: str) -> None:
    assert classify_exception(_botocore_error(name)) is TransientRegistryError


@pytest.mark.parametrize("name", ["SSLError", "NoCredentialsError", "ParamValidationError"])
def test_local_misconfiguration_is_fatal(name: str) -> None:
    assert classify_exception(_botocore_error(name)) is FatalRegistryError


def test_unexpected_exceptions_are_fatal() -> None:
    assert classify_exception(KeyError("imageDigest")) is FatalRegistryError
