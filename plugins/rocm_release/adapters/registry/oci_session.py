"""One request to an OCI Distribution (Docker Registry HTTP API v2) registry, and what its answer means.

:class:`OciSession` sends requests with auth (see :mod:`.oci_auth`) and maps every answer strictly
to one of the three outcomes of :mod:`rocm_release.core.registry`:

* 2xx → present; 404 or the registry error codes ``MANIFEST_UNKNOWN``, ``NAME_UNKNOWN``,
  ``BLOB_UNKNOWN`` → absent (a ``Lookup`` with ``present=False``, ``False`` from
  ``has_blob``, :class:`ReferenceNotFound` where a value is needed);
* refused connections, timeouts, 408, 429 and 5xx → :class:`TransientRegistryError`;
* 401/403 after the auth flow, any other status, and malformed answers (bad JSON, a
  digest that does not verify, a missing or unknown content type) → :class:`FatalRegistryError`.

Note that Docker Hub answers 401, not 404, for a repository that does not exist when
the caller may not see it: that is reported as Fatal, never as absent.

No call retries except the one retry that the auth challenge needs; retrying an outage
is the caller's business (a sensor pokes again).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import NoReturn

import httpx

from rocm_release.adapters.registry.oci_auth import OciAuth, Scopes, parse_challenge, read_capped
from rocm_release.core.names import DIGEST_RE
from rocm_release.core.registry import FatalRegistryError, TransientRegistryError

DEFAULT_TIMEOUT = 30.0
MAX_ERROR_BODY = 64 << 10
# What is kept of an answer not read as a stream (HEAD, PUT, PATCH, POST, DELETE): the start of its body.
MAX_UNSTREAMED_BODY = 1 << 20
# Registry error codes that mean "definitively not there".
ABSENT_CODES = frozenset({"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"})

# A host name or bracketed IP address, with an optional port: what goes between "//" and the path.
_HOST_RE = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$")


class ReferenceNotFound(LookupError):
    """The registry said definitively that a manifest or blob is not there (HTTP 404)."""


class OciSession:
    """The connection to one registry: its address, pooled HTTP client, credentials and token cache.

    ``host`` is ``name[:port]`` (no scheme). ``transport`` is for tests that stand in for
    the remote server (``httpx.MockTransport``). Errors name ``host`` and ``connection_id``.
    """

    def __init__(
        self,
        host: str,
        *,
        scheme: str,
        username: str | None,
        password: str | None,
        connection_id: str | None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if scheme not in ("https", "http"):
            raise ValueError(f"scheme {scheme!r} is not 'https' or 'http'")
        if not _HOST_RE.match(host):
            raise ValueError(f"host {host!r} is not 'name[:port]' (no scheme, no path)")
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.host = host
        self.scheme = scheme
        self.connection_id = connection_id
        self.base = httpx.URL(f"{scheme}://{host}")
        self._client = httpx.Client(timeout=timeout, transport=transport, trust_env=False)
        self.auth = OciAuth(host, scheme=scheme, username=username, password=password,
                            connection_id=connection_id, transmit=self._transmit)

    @property
    def endpoint(self) -> str:
        """``scheme://host[:port]``."""
        return str(self.base).rstrip("/")

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    def fatal(self, repository: str, detail: str) -> NoReturn:
        """Raise FatalRegistryError naming this registry, ``repository`` and the connection."""
        raise FatalRegistryError(self.host, repository, detail, self.connection_id)

    def transient(self, repository: str, detail: str) -> NoReturn:
        """Raise TransientRegistryError naming this registry, ``repository`` and the connection."""
        raise TransientRegistryError(self.host, repository, detail, self.connection_id)

    def url(self, path: str) -> httpx.URL:
        """``path`` (or a relative or absolute ``Location``/``Link`` target) resolved against the registry."""
        return self.base.join(path)

    def same_origin(self, url: httpx.URL) -> bool:
        """Whether ``url`` is on this registry (credentials go nowhere else)."""
        return (url.scheme, url.host, url.port) == (self.base.scheme, self.base.host, self.base.port)

    def transport_error(self, repository: str, what: str, exc: Exception) -> NoReturn:
        """Map an httpx exception: configuration mistakes are Fatal, the network is Transient."""
        text = f"{what}: {type(exc).__name__}: {exc}"
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.InvalidURL):
            self.fatal(repository, text)
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "WRONG_VERSION_NUMBER" in str(exc):
            self.fatal(repository, f"{text} (TLS set-up; check the scheme and the CA bundle)")
        if isinstance(exc, httpx.TransportError):
            self.transient(repository, text)
        self.fatal(repository, text)

    def _transmit(
        self,
        method: str,
        url: httpx.URL,
        repository: str,
        headers: dict[str, str],
        content: bytes | Iterable[bytes] | None,
        *,
        stream: bool,
        follow_redirects: bool,
    ) -> httpx.Response:
        request = self._client.build_request(method, url, headers=headers, content=content)
        try:
            resp = self._client.send(request, stream=True, follow_redirects=follow_redirects)
            if stream:
                return resp
            # Not streamed: an answer whose body we use at most for an error message. Keep its
            # first MAX_UNSTREAMED_BODY bytes, never a hostile server's gigabytes.
            try:
                body = b""
                for chunk in resp.iter_bytes():
                    body += chunk[:MAX_UNSTREAMED_BODY - len(body)]
                    if len(body) >= MAX_UNSTREAMED_BODY:
                        break
            finally:
                resp.close()
        except httpx.HTTPError as exc:
            self.transport_error(repository, f"{method} {url.path}", exc)
        return httpx.Response(resp.status_code, headers=resp.headers, content=body, request=request,
                              history=resp.history)

    def send(
        self,
        method: str,
        url: httpx.URL,
        repository: str,
        scopes: Scopes,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | Iterable[bytes] | None = None,
        stream: bool = False,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        """One request with auth. A 401 with a Bearer challenge fetches a token and retries once."""
        hdrs = dict(headers or {})
        if self.same_origin(url):
            auth = self.auth.authorization(scopes, repository)
            if auth:
                hdrs["Authorization"] = auth
        resp = self._transmit(method, url, repository, hdrs, content, stream=stream,
                              follow_redirects=follow_redirects)
        if resp.status_code != 401 or not self.same_origin(url):
            return resp
        challenge = parse_challenge(resp.headers.get("www-authenticate", ""))
        replayable = content is None or isinstance(content, bytes)
        if challenge is None or challenge.scheme != "bearer" or not replayable:
            # Basic: the credentials (if any) were already sent; a 401 is the answer.
            return resp
        resp.close()
        hdrs["Authorization"] = self.auth.answer_challenge(challenge, scopes, repository)
        return self._transmit(method, url, repository, hdrs, content, stream=stream,
                              follow_redirects=follow_redirects)

    # The body of a streamed answer, or None when longer than ``cap`` (see oci_auth.read_capped).
    read_capped = staticmethod(read_capped)

    def _error_text(self, resp: httpx.Response) -> tuple[frozenset[str], str]:
        """Registry error codes and a short text from an error answer."""
        try:
            body = self.read_capped(resp, MAX_ERROR_BODY) or b""
        except httpx.HTTPError:
            body = b""
        codes: set[str] = set()
        messages: list[str] = []
        try:
            doc = json.loads(body) if body else None
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("errors"), list):
            for err in doc["errors"]:
                if isinstance(err, dict) and isinstance(err.get("code"), str):
                    codes.add(err["code"])
                    messages.append(f"{err['code']}: {err.get('message', '')}")
        text = "; ".join(messages) or body[:200].decode("utf-8", "replace").strip()
        return frozenset(codes), text

    def outcome(self, resp: httpx.Response, repository: str, what: str) -> tuple[bool, str]:
        """(True, "") for 2xx, (False, reason) for a definitive absence; raises otherwise."""
        status = resp.status_code
        if 200 <= status < 300:
            return True, ""
        try:
            codes, text = self._error_text(resp)
        finally:
            resp.close()
        detail = f"{what}: HTTP {status}" + (f" ({text})" if text else "")
        if status in (401, 403):
            challenge = resp.headers.get("www-authenticate", "")
            hint = f"; challenge: {challenge}" if challenge else ""
            self.fatal(repository, f"{detail}: credentials missing or refused{hint}")
        if status in (408, 429) or status >= 500:
            self.transient(repository, detail)
        if status == 404 or codes & ABSENT_CODES:
            return False, ", ".join(sorted(codes)) or f"HTTP {status}"
        self.fatal(repository, detail)

    def require_ok(self, resp: httpx.Response, repository: str, what: str) -> None:
        """A write: anything but 2xx is an error (a 404 here is not 'absent', it is a failure)."""
        present, reason = self.outcome(resp, repository, what)
        if not present:
            self.fatal(repository, f"{what}: registry answered {reason}")

    def checked_digest(self, header: str | None, repository: str, what: str) -> str | None:
        """A ``Docker-Content-Digest`` header: None when missing, Fatal when not a sha256 digest."""
        if header is None:
            return None
        if not DIGEST_RE.match(header):
            self.fatal(repository, f"{what}: Docker-Content-Digest {header!r} is not a sha256 digest")
        return header

    @staticmethod
    def media_type(resp: httpx.Response) -> str | None:
        """The answer's Content-Type without parameters; None when missing."""
        value = resp.headers.get("content-type")
        return value.split(";", 1)[0].strip() if value else None
