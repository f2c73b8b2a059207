"""Authorization for the OCI Distribution API: basic credentials, and the bearer-token flow Docker Hub uses.

A registry that wants tokens answers 401 with ``WWW-Authenticate: Bearer realm=…,service=…,scope=…``;
the client GETs a token from the realm (with its basic credentials, if any) and repeats the request
once. Tokens are cached per scope set. Once a registry has shown its realm, tokens for new scopes are
fetched up front instead of paying a 401 round trip each.

Token server answers map like registry answers: 401/403 → Fatal, 408/429/5xx → Transient, anything
else that is not a JSON token → Fatal. A token answer is read streaming, at most MAX_TOKEN_BYTES.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol

import httpx

from rocm_release.core.registry import FatalRegistryError, TransientRegistryError

_CHALLENGE_PARAM_RE = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"([^"]*)"|([^,\s]*))')
# The spec's minimum token lifetime, and how long before expiry a token is refreshed (so that a
# token does not expire between being attached and being checked).
TOKEN_MIN_LIFETIME = 60.0
TOKEN_REFRESH_MARGIN = 10.0
# A token answer is a JWT or two in JSON (a few KiB); anything far bigger is not one.
MAX_TOKEN_BYTES = 1 << 20


def read_capped(resp: httpx.Response, cap: int) -> bytes | None:
    """A streamed answer's body, or None when it is longer than ``cap`` (reads at most cap + one chunk)."""
    parts: list[bytes] = []
    total = 0
    for chunk in resp.iter_bytes():
        parts.append(chunk)
        total += len(chunk)
        if total > cap:
            return None
    return b"".join(parts)


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header: the scheme (lower case) and its parameters."""

    scheme: str
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """``WWW-Authenticate: Bearer realm="…",service="…",scope="…"`` → scheme and parameters."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _CHALLENGE_PARAM_RE.finditer(rest)}
    return Challenge(scheme.lower(), params)


@dataclass
class Token:
    value: str
    expires_at: float  # time.monotonic()


@dataclass(frozen=True)
class Scopes:
    """The token scopes one request needs; also the key of the token cache."""

    scopes: tuple[str, ...]

    @classmethod
    def of(cls, repository: str, actions: str, mount_from: str | None = None) -> Scopes:
        scopes = [f"repository:{repository}:{actions}"]
        if mount_from is not None:
            scopes.append(f"repository:{mount_from}:pull")
        return cls(tuple(scopes))


class Transmit(Protocol):
    """Sends one request as is; a transport failure raises Transient/FatalRegistryError."""

    def __call__(
        self,
        method: str,
        url: httpx.URL,
        repository: str,
        headers: dict[str, str],
        content: bytes | Iterable[bytes] | None,
        *,
        stream: bool,
        follow_redirects: bool,
    ) -> httpx.Response: ...


class OciAuth:
    """The ``Authorization`` header for requests to one registry, and the token cache behind it.

    ``registry`` and ``connection_id`` name the registry in errors; ``scheme`` is the registry's
    (credentials never go to a plain-http realm of an https registry); ``transmit`` sends the
    token request.
    """

    def __init__(
        self,
        registry: str,
        *,
        scheme: str,
        username: str | None,
        password: str | None,
        connection_id: str | None,
        transmit: Transmit,
    ) -> None:
        self.registry = registry
        self.scheme = scheme
        self.username = username
        self._password = password
        self.connection_id = connection_id
        self._transmit = transmit
        self._tokens: dict[Scopes, Token] = {}
        # Learned from the first Bearer challenge; lets later scopes fetch a token up front.
        self._bearer: Challenge | None = None

    def _fatal(self, repository: str, detail: str) -> NoReturn:
        raise FatalRegistryError(self.registry, repository, detail, self.connection_id)

    def _transient(self, repository: str, detail: str) -> NoReturn:
        raise TransientRegistryError(self.registry, repository, detail, self.connection_id)

    def _basic(self) -> str | None:
        if self.username is None or self._password is None:
            return None
        raw = f"{self.username}:{self._password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def authorization(self, scopes: Scopes, repository: str) -> str | None:
        """The header value for a request needing ``scopes``: a cached or new token, basic, or None."""
        token = self._tokens.get(scopes)
        if token is not None and token.expires_at > time.monotonic():
            return f"Bearer {token.value}"
        if self._bearer is not None:
            # The registry uses tokens and we know its realm: fetch one up front
            # instead of paying a 401 round trip for every new scope.
            token = self._fetch_token(self._bearer, scopes.scopes, repository)
            self._tokens[scopes] = token
            return f"Bearer {token.value}"
        return self._basic()

    def answer_challenge(self, challenge: Challenge, scopes: Scopes, repository: str) -> str:
        """After a 401 with a Bearer ``challenge``: remember the realm, fetch a token, return its header."""
        self._bearer = Challenge("bearer", {k: v for k, v in challenge.params.items() if k != "scope"})
        wanted = tuple(challenge.params.get("scope", "").split()) or scopes.scopes
        token = self._fetch_token(challenge, wanted, repository)
        self._tokens[scopes] = token
        return f"Bearer {token.value}"

    def _fetch_token(self, challenge: Challenge, scopes: Sequence[str], repository: str) -> Token:
        url = self._token_url(challenge, scopes, repository)
        basic = self._basic()
        headers = {"Authorization": basic} if basic else {}
        resp = self._transmit("GET", url, repository, headers, None, stream=True, follow_redirects=True)
        where = f"token server {url.host}"
        try:
            self._check_token_status(resp.status_code, where, repository)
            try:
                body = read_capped(resp, MAX_TOKEN_BYTES)
            except httpx.HTTPError as exc:
                self._transient(repository, f"{where}: {type(exc).__name__}: {exc}")
        finally:
            resp.close()
        if body is None:
            self._fatal(repository, f"{where} answered more than {MAX_TOKEN_BYTES} bytes: not a token")
        return self._read_token(body, where, repository)

    def _token_url(self, challenge: Challenge, scopes: Sequence[str], repository: str) -> httpx.URL:
        """The realm with ``service`` and ``scope`` parameters; Fatal when the realm is unusable."""
        realm = challenge.params.get("realm", "")
        realm_url = httpx.URL(realm) if realm else None
        if realm_url is None or realm_url.scheme not in ("http", "https") or not realm_url.host:
            self._fatal(repository, f"Bearer challenge names no usable realm: {realm!r}")
        if realm_url.scheme == "http" and self.scheme == "https" and self.username is not None:
            self._fatal(repository, f"token realm {realm} is plain http; refusing to send credentials there")
        params: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.params.get("service"):
            params.append(("service", challenge.params["service"]))
        params.extend(("scope", s) for s in scopes)
        return realm_url.copy_merge_params(params)

    def _check_token_status(self, status: int, where: str, repository: str) -> None:
        if status in (401, 403):
            self._fatal(repository, f"{where} refused the credentials (HTTP {status})")
        if status in (408, 429) or status >= 500:
            self._transient(repository, f"{where} answered HTTP {status}")
        if status != 200:
            self._fatal(repository, f"{where} answered HTTP {status}")

    def _read_token(self, raw: bytes, where: str, repository: str) -> Token:
        try:
            body = json.loads(raw)
        except ValueError:
            self._fatal(repository, f"{where} answered something that is not JSON")
        value = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            self._fatal(repository, f"{where} answered JSON without a token")
        return Token(value, time.monotonic() + _lifetime(body.get("expires_in", 60)))


def _lifetime(expires_in: object) -> float:
    """Seconds to keep a token: its ``expires_in`` (at least the spec's minimum), minus a margin."""
    if not isinstance(expires_in, int | float) or isinstance(expires_in, bool):
        expires_in = 60
    return max(float(expires_in), TOKEN_MIN_LIFETIME) - TOKEN_REFRESH_MARGIN
