"""The one plain HTTP request of the ECR client: a GET of the pre-signed URL GetDownloadUrlForLayer gives.

httpx is imported inside :func:`fetch_blob`; network trouble, 429 and 5xx are transient, any other
non-200 answer fatal, and a body over the limit malformed (the caller reports it as fatal).
"""

from __future__ import annotations

from rocm_release.adapters.registry.ecr_errors import MalformedAnswer
from rocm_release.core.registry import FatalRegistryError, TransientRegistryError


def fetch_blob(url: str, limit: int, host: str, repository: str, connection_id: str | None) -> bytes:
    """GET a pre-signed blob URL, at most ``limit`` bytes; errors name ``host``/``repository``, never the
    URL's query string (the signature)."""
    import httpx

    if not url.startswith(("https://", "http://")):
        raise MalformedAnswer(f"download URL is not http(s): {url.split('?')[0]!r}")
    where = url.split("?", 1)[0]
    try:
        with httpx.stream("GET", url, timeout=30.0, follow_redirects=True) as response:
            if response.status_code == 429 or response.status_code >= 500:
                raise TransientRegistryError(host, repository, f"GET {where}: HTTP {response.status_code}",
                                             connection_id)
            if response.status_code != 200:
                raise FatalRegistryError(host, repository, f"GET {where}: HTTP {response.status_code}", connection_id)
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise MalformedAnswer(f"GET {where}: more than {limit} bytes")
            return bytes(body)
    except httpx.TransportError as exc:
        raise TransientRegistryError(host, repository, f"GET {where}: {type(exc).__name__}: {exc}",
                                     connection_id) from exc
