"""Store errors: an outage is transient whatever its message says; refused credentials are fatal."""

from __future__ import annotations

from botocore.exceptions import ClientError

from rocm_release.adapters.store import FatalStoreError, TransientStoreError, classify


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


def test_outage_with_403_in_its_path_stays_transient() -> None:
    assert isinstance(classify(OSError("reset reading /wheels/3f1c403a/x.whl"), "w"), TransientStoreError)


def test_refused_credentials_are_fatal() -> None:
    assert isinstance(classify(PermissionError("denied"), "w"), FatalStoreError)
    assert isinstance(classify(_client_error("InvalidAccessKeyId", 403), "w"), FatalStoreError)
    wrapped = OSError("s3fs said no")
    wrapped.__cause__ = _client_error("SignatureDoesNotMatch", 403)
    assert isinstance(classify(wrapped, "w"), FatalStoreError)


def test_throttling_and_5xx_are_transient() -> None:
    assert isinstance(classify(_client_error("SlowDown", 503), "w"), TransientStoreError)
    assert isinstance(classify(_client_error("InternalError", 500), "w"), TransientStoreError)
