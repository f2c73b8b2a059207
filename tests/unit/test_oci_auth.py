"""The bearer-challenge parsing of adapters/registry/oci_auth.py.

The token flow itself (401, token fetch, retry, cache) is tested through OciRegistry in
tests/unit/test_registry_oci.py (FakeHub) and against a token-auth registry in tests/integration.
"""

from __future__ import annotations

from rocm_release.adapters.registry.oci_auth import parse_challenge


def test_parse_challenge_reads_quoted_and_multi_scope_parameters() -> None:
    challenge = parse_challenge(
        'Bearer realm="https://a/token",service="reg",scope="repository:a:pull repository:b:pull"')
    assert challenge is not None and challenge.scheme == "bearer"
    assert challenge.params == {"realm": "https://a/token", "service": "reg",
                                "scope": "repository:a:pull repository:b:pull"}
