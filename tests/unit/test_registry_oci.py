"""OciRegistry's mapping of HTTP answers to present / absent / Transient / Fatal.

The ``remote`` in these tests is an ``httpx.MockTransport``: a stand-in for the remote
registry's HTTP answers (statuses, headers, bodies a real distribution server never
sends on demand), not a mock of our code — every byte goes through OciRegistry's real
request, auth and parsing path. The same behaviours against a real ``docker-registry``
are in tests/integration/test_registry_oci.py. One test here uses a real closed port.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from rocm_release.adapters.registry.image_copy import copy_image
from rocm_release.adapters.registry.oci import OciRegistry, from_connection, from_login
from rocm_release.adapters.registry.oci_session import ReferenceNotFound
from rocm_release.core.names import DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, check_reference, check_tag
from rocm_release.core.registry import FatalRegistryError, ImageRegistry, TransientRegistryError
from tests.support.net import closed_port

HOST = "registry.test:5000"

Handler = Callable[[httpx.Request], httpx.Response]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def registry(handler: Handler, **kwargs: object) -> OciRegistry:
    kwargs.setdefault("connection_id", "conn_x")
    return OciRegistry(HOST, transport=httpx.MockTransport(handler), **kwargs)  # type: ignore[arg-type]


def errors(*codes: str) -> bytes:
    return json.dumps({"errors": [{"code": c, "message": c.lower()} for c in codes]}).encode()


CONFIG = json.dumps({"created": "2026-11-03T04:05:06Z", "config": {"Labels": {"k": "v"}}}).encode()
MANIFEST = json.dumps({
    "schemaVersion": 2, "mediaType": OCI_MANIFEST,
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(CONFIG),
               "size": len(CONFIG)},
    "layers": [],
}).encode()
MANIFEST_DIGEST = digest_of(MANIFEST)


def manifest_answer(body: bytes = MANIFEST, media_type: str | None = OCI_MANIFEST,
                    digest: str | None = None) -> httpx.Response:
    headers = {"Docker-Content-Digest": digest or digest_of(body)}
    if media_type:
        headers["Content-Type"] = media_type
    return httpx.Response(200, headers=headers, content=body)


# --------------------------------------------------------------------------------------------
# HTTP status mapping


@pytest.mark.parametrize(
    ("status", "body"),
    [(404, b""), (404, errors("MANIFEST_UNKNOWN")), (404, errors("NAME_UNKNOWN")), (400, errors("NAME_UNKNOWN"))],
)
def test_http_status_mapping_404_and_unknown_codes_are_absent(status: int, body: bytes) -> None:
    reg = registry(lambda r: httpx.Response(status, content=body))
    found = reg.lookup("rocm/vllm", "t")
    assert not found.present and found.digest is None
    with pytest.raises(ReferenceNotFound):
        reg.manifest("rocm/vllm", "t")
    assert not reg.has_blob("rocm/vllm", MANIFEST_DIGEST)


@pytest.mark.parametrize("status", [401, 403])
def test_http_status_mapping_401_403_are_fatal_never_absent(status: int) -> None:
    reg = registry(lambda r: httpx.Response(status, content=errors("UNAUTHORIZED")))
    with pytest.raises(FatalRegistryError, match=f"HTTP {status}") as err:
        reg.lookup("rocm/vllm", "t")
    assert (err.value.registry, err.value.repository, err.value.connection_id) == (HOST, "rocm/vllm", "conn_x")
    assert f"{HOST}/rocm/vllm (connection 'conn_x')" in str(err.value)


def test_http_status_mapping_401_is_fatal_with_one_request_when_basic_is_refused() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="registry"'})

    reg = registry(handler, username="u", password="wrong")
    with pytest.raises(FatalRegistryError, match="credentials missing or refused"):
        reg.lookup("rocm/vllm", "t")
    assert len(seen) == 1
    assert seen[0].headers["Authorization"] == "Basic " + base64.b64encode(b"u:wrong").decode()


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_http_status_mapping_throttling_and_5xx_are_transient(status: int) -> None:
    reg = registry(lambda r: httpx.Response(status, content=errors("TOOMANYREQUESTS")))
    for call in (lambda: reg.lookup("rocm/vllm", "t"), lambda: reg.manifest("rocm/vllm", "t"),
                 lambda: reg.has_blob("rocm/vllm", MANIFEST_DIGEST), lambda: list(reg.list_tags("rocm/vllm"))):
        with pytest.raises(TransientRegistryError, match=f"HTTP {status}"):
            call()


@pytest.mark.parametrize("status", [400, 405, 409, 302])
def test_http_status_mapping_other_answers_are_fatal(status: int) -> None:
    reg = registry(lambda r: httpx.Response(status, content=errors("UNSUPPORTED")))
    with pytest.raises(FatalRegistryError):
        reg.lookup("rocm/vllm", "t")


@pytest.mark.parametrize("exc", [httpx.ConnectTimeout("t"), httpx.ReadTimeout("t"), httpx.ConnectError("refused"),
                                 httpx.RemoteProtocolError("server disconnected")])
def test_http_status_mapping_timeouts_and_dropped_connections_are_transient(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(TransientRegistryError):
        registry(handler).lookup("rocm/vllm", "t")


def test_refused_connection_on_a_closed_local_port_is_transient() -> None:
    port = closed_port()  # nothing listens
    with OciRegistry(f"127.0.0.1:{port}", scheme="http", connection_id="closed", timeout=5) as reg:
        with pytest.raises(TransientRegistryError, match="ConnectError") as err:
            reg.lookup("rocm/vllm", "t")
    assert err.value.connection_id == "closed" and err.value.registry == f"127.0.0.1:{port}"


def test_a_certificate_failure_is_fatal_not_an_outage() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")

    with pytest.raises(FatalRegistryError, match="TLS"):
        registry(handler).lookup("rocm/vllm", "t")


# --------------------------------------------------------------------------------------------
# malformed answers


def test_present_answer_carries_the_header_digest() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert OCI_INDEX in request.headers["Accept"] and DOCKER_MANIFEST_LIST in request.headers["Accept"]
        return manifest_answer(b"" if request.method == "HEAD" else MANIFEST, digest=MANIFEST_DIGEST)

    reg = registry(handler)
    assert reg.lookup("rocm/vllm", "t").digest == MANIFEST_DIGEST
    assert reg.manifest("rocm/vllm", "t").digest == MANIFEST_DIGEST


def test_lookup_without_digest_header_hashes_the_manifest_bytes() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": OCI_MANIFEST},
                              content=b"" if request.method == "HEAD" else MANIFEST)

    assert registry(handler).lookup("rocm/vllm", "t").digest == MANIFEST_DIGEST


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (manifest_answer(b"{not json", digest=digest_of(b"{not json")), "not JSON"),
        (manifest_answer(digest="sha256:" + "0" * 64), "bytes hash to"),
        (manifest_answer(digest="md5:abc"), "not a sha256 digest"),
        (manifest_answer(media_type=None), "no Content-Type"),
        (manifest_answer(media_type="application/vnd.docker.distribution.manifest.v1+prettyjws"), "media type"),
        (manifest_answer(media_type=OCI_INDEX), "does not match its Content-Type"),
    ],
)
def test_malformed_manifest_answers_are_fatal(answer: httpx.Response, match: str) -> None:
    with pytest.raises(FatalRegistryError, match=match):
        registry(lambda r: answer).manifest("rocm/vllm", "t")


def test_a_manifest_fetched_by_digest_must_hash_to_that_digest() -> None:
    other = MANIFEST.replace(b'"layers": []', b'"layers": [] ')
    reg = registry(lambda r: manifest_answer(other, digest=None))
    with pytest.raises(FatalRegistryError, match="bytes hash to"):
        reg.manifest("rocm/vllm", MANIFEST_DIGEST)


def test_a_blob_that_does_not_verify_is_fatal() -> None:
    reg = registry(lambda r: httpx.Response(200, content=b"tampered"))
    with pytest.raises(FatalRegistryError, match="does not verify"):
        reg.read_blob("rocm/vllm", digest_of(b"original"))
    with pytest.raises(FatalRegistryError, match="has 8 bytes"):
        reg.read_blob("rocm/vllm", digest_of(b"tampered"), size=9)


def test_labels_that_are_not_strings_are_fatal() -> None:
    config = json.dumps({"config": {"Labels": {"k": 1}}}).encode()
    manifest = MANIFEST.replace(digest_of(CONFIG).encode(), digest_of(config).encode()).replace(
        f'"size": {len(CONFIG)}'.encode(), f'"size": {len(config)}'.encode())

    def handler(request: httpx.Request) -> httpx.Response:
        return manifest_answer(manifest) if "/manifests/" in request.url.path else httpx.Response(200, content=config)

    with pytest.raises(FatalRegistryError, match="not a map of strings"):
        registry(handler).labels("rocm/vllm", "t")


def test_names_that_do_not_fit_the_grammar_never_reach_a_url() -> None:
    reg = registry(lambda r: pytest.fail("no request expected"))
    for repo, ref in [("Rocm/VLLM", "t"), ("rocm/../x", "t"), ("rocm/vllm", "a/b"), ("rocm/vllm", "sha256:xyz")]:
        with pytest.raises(ValueError):
            reg.lookup(repo, ref)


@pytest.mark.parametrize(("repository", "tag"), [("rocm/vllm\n", "nightly"), ("rocm/vllm", "nightly\n")])
def test_a_trailing_newline_is_no_name(repository: str, tag: str) -> None:
    from rocm_release.core.names import check_repository, check_tag

    with pytest.raises(ValueError):
        check_repository(repository)
        check_tag(tag)


@pytest.mark.parametrize("tag", ["ñightly", "nightly-rocm٧", "ｎightly", "nightly-ǅ"])
def test_tag_check_is_ascii_only(tag: str) -> None:
    """The OCI grammar is ASCII: the client's old ``\\w`` tag pattern accepted each of these."""
    assert re.fullmatch(r"\w[\w.-]*", tag)  # what a \w pattern lets through
    with pytest.raises(ValueError, match="is not valid"):
        check_tag(tag)
    with pytest.raises(ValueError, match="neither a tag"):
        check_reference(tag)
    reg = registry(lambda r: pytest.fail("no request expected"))
    with pytest.raises(ValueError):
        reg.lookup("rocm/vllm", tag)
    with pytest.raises(ValueError):
        reg.tag("rocm/vllm", MANIFEST_DIGEST, tag)
    with pytest.raises(ValueError):
        reg.delete_tags("rocm/vllm", [tag])


# --------------------------------------------------------------------------------------------
# bearer tokens (the Docker Hub flow)


@dataclass
class FakeHub:
    """Answers like Docker Hub: 401 + Bearer challenge unless the request carries a token for its scope."""

    expires_in: int = 300
    grant: bool = True
    token_status: int = 200
    registry_requests: list[httpx.Request] = field(default_factory=list)
    token_requests: list[httpx.Request] = field(default_factory=list)

    def scope_for(self, request: httpx.Request) -> str:
        repo = request.url.path.split("/v2/", 1)[1].rsplit("/manifests/", 1)[0].rsplit("/blobs/", 1)[0]
        if request.method == "GET" or request.method == "HEAD":
            return f"repository:{repo}:pull"
        scope = f"repository:{repo}:pull,push"
        if "from" in request.url.params:
            scope += f" repository:{request.url.params['from']}:pull"
        return scope

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.registry.test":
            self.token_requests.append(request)
            if self.token_status != 200:
                return httpx.Response(self.token_status)
            scopes = request.url.params.get_list("scope")
            token = "tok:" + " ".join(scopes) if self.grant else "tok:"
            return httpx.Response(200, json={"token": token, "expires_in": self.expires_in})
        self.registry_requests.append(request)
        needed = self.scope_for(request)
        have = request.headers.get("Authorization", "")
        if all(s in have for s in needed.split()) and have.startswith("Bearer tok:"):
            if request.method == "POST":
                return httpx.Response(201, headers={"Docker-Content-Digest": request.url.params["mount"]})
            return manifest_answer(b"" if request.method == "HEAD" else MANIFEST, digest=MANIFEST_DIGEST)
        challenge = f'Bearer realm="https://auth.registry.test/token",service="registry.test",scope="{needed}"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge}, content=errors("UNAUTHORIZED"))


def test_bearer_challenge_fetches_a_token_with_basic_credentials_and_retries_once() -> None:
    hub = FakeHub()
    reg = registry(hub, username="bot", password="pw")
    assert reg.lookup("library/vllm", "nightly").digest == MANIFEST_DIGEST
    assert [r.headers.get("Authorization", "")[:6] for r in hub.registry_requests] == ["Basic ", "Bearer"]
    (token_request,) = hub.token_requests
    assert token_request.url.params["service"] == "registry.test"
    assert token_request.url.params.get_list("scope") == ["repository:library/vllm:pull"]
    assert token_request.headers["Authorization"] == "Basic " + base64.b64encode(b"bot:pw").decode()


def test_bearer_tokens_are_cached_per_scope_and_new_scopes_skip_the_401() -> None:
    hub = FakeHub()
    reg = registry(hub)
    reg.lookup("library/vllm", "a")
    reg.lookup("library/vllm", "b")
    assert len(hub.token_requests) == 1 and len(hub.registry_requests) == 3  # 401, retry, cached
    reg.lookup("library/other", "a")
    assert len(hub.token_requests) == 2 and len(hub.registry_requests) == 4  # token fetched up front


def test_an_expired_token_is_fetched_again() -> None:
    hub = FakeHub(expires_in=0)  # below the spec's 60 s minimum: treated as 60 s, minus margin
    reg = registry(hub)
    reg.lookup("library/vllm", "a")
    reg._http.auth._tokens = {k: type(v)(v.value, 0.0) for k, v in reg._http.auth._tokens.items()}  # as if 60 s passed
    reg.lookup("library/vllm", "a")
    assert len(hub.token_requests) == 2


def test_a_mount_asks_for_both_repositories_in_the_token_scope() -> None:
    hub = FakeHub()
    reg = registry(hub)
    assert reg.mount_blob("library/public", MANIFEST_DIGEST, "library/cache")
    assert hub.token_requests[-1].url.params.get_list("scope") == [
        "repository:library/public:pull,push", "repository:library/cache:pull"]


def test_a_token_without_access_is_fatal_after_exactly_one_retry() -> None:
    hub = FakeHub(grant=False)
    with pytest.raises(FatalRegistryError, match="HTTP 401"):
        registry(hub).lookup("library/vllm", "t")
    assert len(hub.registry_requests) == 2 and len(hub.token_requests) == 1


@pytest.mark.parametrize(("status", "error"), [(401, FatalRegistryError), (403, FatalRegistryError),
                                               (503, TransientRegistryError), (429, TransientRegistryError)])
def test_token_server_answers_map_like_registry_answers(status: int, error: type[Exception]) -> None:
    with pytest.raises(error, match="token server"):
        registry(FakeHub(token_status=status), username="u", password="p").lookup("library/vllm", "t")


def test_credentials_are_never_sent_to_a_plain_http_realm_of_an_https_registry() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "registry.test"
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="http://auth.test/token"'})

    with pytest.raises(FatalRegistryError, match="plain http"):
        registry(handler, username="u", password="p").lookup("library/vllm", "t")


# --------------------------------------------------------------------------------------------
# tag pagination (distribution 2.8 ignores ?n=, so this needs a server that paginates)


def paginating_server(tags: list[str], seen: list[httpx.Request], absolute: bool = False) -> Handler:
    """Tag lists the way Docker Hub and distribution 3 page them: ?n= and ?last=, Link: rel="next"."""

    def handler(request: httpx.Request) -> httpx.Response:
        if "/manifests/" in request.url.path:
            return manifest_answer(b"")
        seen.append(request)
        n = int(request.url.params["n"])
        last = request.url.params.get("last")
        start = tags.index(last) + 1 if last else 0
        page = tags[start:start + n]
        headers = {}
        if start + n < len(tags):
            query = urllib.parse.urlencode({"n": n, "last": page[-1]})
            prefix = f"https://{HOST}" if absolute else ""
            headers["Link"] = f'<{prefix}/v2/rocm/vllm/tags/list?{query}>; rel="next"'
        return httpx.Response(200, headers=headers, json={"name": "rocm/vllm", "tags": page})

    return handler


@pytest.mark.parametrize("absolute", [False, True])
def test_tag_listing_follows_link_pages(absolute: bool) -> None:
    seen: list[httpx.Request] = []
    tags = ["t1", "t2", "t3", "t4", "t5"]
    reg = registry(paginating_server(tags, seen, absolute), page_size=2)
    listed = list(reg.list_tags("rocm/vllm"))
    assert [t.tag for t in listed] == tags
    assert all(t.digest == digest_of(b"") and t.pushed_at is None for t in listed)
    assert [(r.url.params.get("n"), r.url.params.get("last")) for r in seen] == [
        ("2", None), ("2", "t2"), ("2", "t4")]


def test_tag_listing_refuses_a_next_page_on_another_host() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Link": '<https://evil.test/v2/x/tags/list>; rel="next"'},
                              json={"tags": ["a"]})

    with pytest.raises(FatalRegistryError, match="another host"):
        list(registry(handler).tag_names("rocm/vllm"))


def test_tag_listing_with_push_times_reads_config_created_once_per_config() -> None:
    requests: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(f"{request.method} {request.url.path.rsplit('/', 2)[-2]}")
        if request.url.path.endswith("/tags/list"):
            return httpx.Response(200, json={"tags": ["a", "b"]})
        if "/manifests/" in request.url.path:
            return manifest_answer()
        return httpx.Response(200, content=CONFIG)

    listed = list(registry(handler).list_tags("rocm/vllm", with_push_times=True))
    assert [(t.tag, t.pushed_at and t.pushed_at.isoformat()) for t in listed] == [
        ("a", "2026-11-03T04:05:06+00:00"), ("b", "2026-11-03T04:05:06+00:00")]
    assert requests.count("GET blobs") == 1


# --------------------------------------------------------------------------------------------
# the rest of the surface


def test_oci_registry_satisfies_the_protocol_and_gives_login_credentials() -> None:
    reg = OciRegistry("registry.test", username="bot", password="pw")
    assert isinstance(reg, ImageRegistry)
    creds = reg.login_credentials()
    assert (creds.registry, creds.username, creds.password) == ("registry.test", "bot", "pw")
    assert "pw" not in repr(creds)
    with pytest.raises(FatalRegistryError, match="no credentials"):
        OciRegistry("registry.test").login_credentials()


@dataclass
class Conn:
    conn_id: str | None = "oci_public"
    host: str | None = "127.0.0.1"
    port: int | None = 5102
    schema: str | None = "http"
    login: str | None = None
    password: str | None = None
    extra: str | None = None


def test_from_connection_reads_host_port_scheme_credentials_and_extra() -> None:
    reg = from_connection(Conn(login="bot", password="pw", extra='{"page_size": 7, "timeout": 3}'))
    assert (reg.name, reg.endpoint, reg.connection_id, reg.page_size) == (
        "127.0.0.1:5102", "http://127.0.0.1:5102", "oci_public", 7)
    assert reg.login_credentials().password == "pw"
    hub = from_connection(Conn(host="https://registry-1.docker.io/", port=None, schema=None))
    assert (hub.endpoint, hub.requires_login) == ("https://registry-1.docker.io", False)
    with pytest.raises(ValueError, match="no host"):
        from_connection(Conn(host=None))


def test_from_login_uses_the_credentials_registry_as_host() -> None:
    from rocm_release.core.registry import LoginCredentials

    reg = from_login(LoginCredentials("https://123.dkr.ecr.us-east-1.amazonaws.com", "AWS", "tok"),
                     connection_id="aws_default")
    assert (reg.endpoint, reg.username, reg.connection_id) == (
        "https://123.dkr.ecr.us-east-1.amazonaws.com", "AWS", "aws_default")


def test_delete_by_digest_is_refused_when_another_tag_shares_it_and_nothing_is_deleted() -> None:
    methods: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        methods.append(request.method)
        if request.url.path.endswith("/tags/list"):
            return httpx.Response(200, json={"tags": ["abc-rocm710", "nightly-rocm710"]})
        return manifest_answer(b"", digest=MANIFEST_DIGEST)

    with pytest.raises(FatalRegistryError, match="'nightly-rocm710' also points to"):
        registry(handler).delete_tags("rocm/vllm", ["abc-rocm710"])
    assert "DELETE" not in methods


def test_delete_needs_deletes_enabled_on_the_registry() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/tags/list"):
            return httpx.Response(200, json={"tags": ["old"]})
        if request.method == "DELETE":
            return httpx.Response(405, content=errors("UNSUPPORTED"))
        return manifest_answer(b"")

    with pytest.raises(FatalRegistryError, match="405"):
        registry(handler).delete_tags("rocm/vllm", ["old"])


def test_copy_refuses_to_tag_when_the_target_stores_other_bytes() -> None:
    def src(request: httpx.Request) -> httpx.Response:
        if "/manifests/" in request.url.path:
            return manifest_answer()
        return httpx.Response(200, content=CONFIG)

    def dst(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(404)
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": "/v2/x/blobs/uploads/1"})
        if "/blobs/uploads/" in request.url.path:
            return httpx.Response(201, headers={"Docker-Content-Digest": request.url.params["digest"]})
        return httpx.Response(201, headers={"Docker-Content-Digest": "sha256:" + "f" * 64})

    with pytest.raises(FatalRegistryError, match="registry stored it as"):
        copy_image(registry(src), "rocm/vllm", "t", OciRegistry("public.test", transport=httpx.MockTransport(dst)),
                   "x", ["t"])
