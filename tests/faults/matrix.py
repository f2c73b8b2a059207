"""The fault matrix's world, its one checker of truth, and the recovery clock (no tests here).

* ``make_repo`` — a real git repository with two commits on ``main`` (the release branch), holding the
  Dockerfiles the build fault builds;
* ``world_config``/``plan_for`` — the demo config narrowed to one variant, pointed at throwaway
  registries, a store and the repository of one test; the real ``make_plan`` of one commit;
* ``push_night`` — the four images of a night in the cache registry, as a build leaves them (labels,
  ``/dist`` layers with real wheels and ``SHA256SUMS``), returned as the digest-pinned refs the
  build tasks hand on;
* ``store_lies``/``registry_lies`` — **the checker**: every index page of a store (commit folders and
  ``nightly/``) links only files present with the linked sha256 and every project its root lists has
  a page; every tag of a repository resolves to a manifest whose blobs are all there and hash to their
  digests. Both read with their own clients (fsspec, httpx), never through the code under test;
* ``recovered`` — the clock from "fault removed" to "converged", printed and appended to
  ``.state/faults/recovery.jsonl`` (the README's table is made from it).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import re
import subprocess
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag

import httpx
import jwt
from packaging.utils import canonicalize_name

from rocm_release.adapters.config_file import REPO_ROOT, load_config
from rocm_release.adapters.steps import promote_variant, publish_variant_wheels, push_variant_images
from rocm_release.adapters.store import observe_published, store_root
from rocm_release.adapters.wheels_alias import alias_commit
from rocm_release.core.config import ReleaseConfig
from rocm_release.core.index import IndexPageError, parse_project_list, parse_project_page
from rocm_release.core.names import DOCKER_MANIFEST_LIST, MANIFEST_MEDIA_TYPES, OCI_INDEX
from rocm_release.core.params import ReleaseParams
from rocm_release.core.plan import (
    LABEL_BASE_DIGEST,
    LABEL_BASE_KEY,
    LABEL_COMMIT,
    LABEL_DIST_SUMS,
    LABEL_SCHEMA,
    LABEL_VARIANT,
    SCHEMA_VERSION,
    ReleasePlan,
    VariantPlan,
    make_plan,
)
from tests.support.registries import TestImage, TokenServer, make_image
from tests.support.services import STATE
from tests.support.wheels import fake_elf, make_wheel

VARIANT = "rocm710"
PARENT = "127.0.0.1:5101/rocm-nightly/debian:bookworm"
PARENT_DIGEST = "sha256:" + "ab" * 32
AS_OF = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
RECORD = STATE / "faults" / "recovery.jsonl"
ARCH = "x86_64"
Log = Callable[[str], None]

BASE_DOCKERFILE = """\
# The fault matrix's base: no pulls (FROM scratch). SLOW_URL is fetched by the daemon itself (ADD of a
# URL), so a test can hold the build in the middle of a step for as long as it likes.
FROM scratch AS base
ARG SLOW_URL
ADD ${SLOW_URL} /slow.txt

FROM scratch AS base-wheels
COPY dist/ /dist/
"""
DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS wheels
FROM ${BASE_IMAGE} AS release
"""


def quiet(_: str) -> None:
    """A log that drops messages."""


# --------------------------------------------------------------------------- git


GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}


def git(repo: Path, *args: str, when: str | None = None) -> str:
    env = dict(GIT_ENV)
    if when:
        env.update(GIT_AUTHOR_DATE=when, GIT_COMMITTER_DATE=when)
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def make_repo(path: Path) -> list[str]:
    """A repository on ``main`` with two commits, older first; each holds the Dockerfiles above."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "docker").mkdir()
    (path / "docker" / "Dockerfile.base").write_text(BASE_DOCKERFILE)
    (path / "docker" / "Dockerfile").write_text(DOCKERFILE)
    dist = path / "dist"
    wheel = make_wheel(dist, "rocmtorch", "2.9.0", requires_python=">=3.9")
    (dist / "SHA256SUMS").write_text(f"{hashlib.sha256(wheel.read_bytes()).hexdigest()}  {wheel.name}\n")
    commits = []
    for number, when in enumerate(("2026-11-29T10:00:00Z", "2026-11-30T10:00:00Z")):
        (path / "VERSION").write_text(f"0.1.{number}\n")
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", f"commit {number}", when=when)
        commits.append(git(path, "rev-parse", "HEAD"))
    return commits


# --------------------------------------------------------------------------- config and plan


def world_config(*, cache: str, public: str, store_url: str, git_url: str, store_conn: str | None = None,
                 cache_conn: str | None = None, public_conn: str | None = None, git_conn: str | None = None,
                 repository: str = "rocm-nightly/tinyllm", build_args: Mapping[str, str] | None = None,
                 parent: str = PARENT, retry_window: int = 0) -> ReleaseConfig:
    """include/config/demo.yaml with one variant, these registries (plain http), store and git URL.

    The in-task retry window is 0 by default: each fault here outlasts it, so a test sees what the task's
    try does when the fault is still there at the window's end (test_registry_outages.py shows the
    default window absorbing a 60-s registry outage in whole nights)."""
    doc: dict[str, Any] = load_config(REPO_ROOT / "include" / "config" / "demo.yaml").model_dump(mode="json")
    doc["variants"] = [v for v in doc["variants"] if v["name"] == VARIANT]
    doc["project"].update(git_url=git_url, git_conn_id=git_conn, base_dockerfile="docker/Dockerfile.base",
                          dockerfile="docker/Dockerfile", base_inputs=[], parent_image=parent,
                          build_args=dict(build_args or {}))
    doc["cache_registry"].update(host=cache, scheme="http", repository=repository, connection_id=cache_conn)
    doc["public_registry"].update(host=public, scheme="http", repository=f"{repository}-rocm",
                                  connection_id=public_conn)
    doc["wheel_store"].update(url=store_url, connection_id=store_conn, public_url=None)
    doc["retry"]["window_seconds"] = retry_window
    return ReleaseConfig.model_validate(doc)


def plan_for(config: ReleaseConfig, commit: str, *, run_kind: str = "scheduled", **params: Any) -> ReleasePlan:
    """The real ``make_plan`` of ``commit``: a scheduled night unless told otherwise."""
    return make_plan(
        config, commit=commit, run_kind=run_kind, as_of=AS_OF,  # type: ignore[arg-type]
        params=ReleaseParams.model_validate(params), base_dockerfile=BASE_DOCKERFILE.encode(), base_inputs={},
        parent_images={PARENT: f"{PARENT}@{PARENT_DIGEST}"},
    )


# --------------------------------------------------------------------------- images a build leaves


def dist_layer(wheels: Sequence[Path], *, mtime: int = 0) -> bytes:
    """A ``/dist`` layer (tar.gz): the wheels and their ``SHA256SUMS``; ``mtime`` changes its digest."""
    files = {w.name: w.read_bytes() for w in wheels}
    files["SHA256SUMS"] = dist_sums(wheels).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"dist/{name}")
            info.size, info.mtime = len(data), mtime
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def dist_sums(wheels: Sequence[Path]) -> str:
    """``sha256sum`` of the wheels: a /dist layer's SHA256SUMS, and its image's ``LABEL_DIST_SUMS``."""
    return "".join(f"{hashlib.sha256(w.read_bytes()).hexdigest()}  {w.name}\n" for w in wheels)


def night_wheels(folder: Path, commit: str, payload: int = 0) -> tuple[list[Path], list[Path]]:
    """(the project's wheels, the base's wheels) as the builds leave them in ``/dist`` (linux tags);
    ``payload`` random bytes (stored, not compressed) make the project's binary wheel that much bigger."""
    modules = None
    if payload:
        modules = {"tinyllm/__init__.py": b"VERSION = 1\n", "tinyllm/_native.so": fake_elf(os.urandom(payload))}
    project = [make_wheel(folder / "wheels", "tinyllm", f"0.1.0+g{commit[:8]}", tag=f"py3-none-linux_{ARCH}",
                          requires=["rocmtorch>=2.9"], modules=modules, compress_type=zipfile.ZIP_STORED),
               make_wheel(folder / "wheels", "tinyllm-extras", f"0.1.0+g{commit[:8]}")]
    base = [make_wheel(folder / "base", "rocmtorch", "2.9.0+rocm7.1.0", tag=f"py3-none-linux_{ARCH}")]
    return project, base


@dataclass(frozen=True)
class Night:
    """The four images of one night in the cache registry: kind → TestImage, and the refs tasks hand on."""

    images: dict[str, TestImage]
    refs: dict[str, str]
    wheel_layer: str  # digest of the project wheels image's /dist layer
    wheel_layer_bytes: bytes

    @property
    def digests(self) -> dict[str, str]:
        return {kind: image.digest for kind, image in self.images.items()}


def labels(v: VariantPlan, **extra: str) -> dict[str, str]:
    return {LABEL_SCHEMA: str(SCHEMA_VERSION), LABEL_BASE_KEY: v.base_key, LABEL_VARIANT: v.name, **extra}


def push_night(registry_url: str, plan: ReleasePlan, folder: Path, *, mtime: int = 0, payload: int = 0) -> Night:
    """Base, base wheels, wheels and release images of ``plan``'s commit, tagged and labelled as the builds
    tag and label them (the wheels images with their SHA256SUMS as ``LABEL_DIST_SUMS``)."""
    v = plan.variant(VARIANT)
    repo = plan.cache_repository
    project, base_wheels = night_wheels(folder / plan.commit[:8], plan.commit, payload)
    base = make_image(registry_url, repo, v.cache_tags.base, labels=labels(v))
    on_base = {LABEL_BASE_DIGEST: base.digest}
    wheels_layer = dist_layer(project, mtime=mtime)
    images = {
        "base": base,
        "base_wheels": make_image(registry_url, repo, v.cache_tags.base_wheels,
                                  labels=labels(v, **on_base, **{LABEL_DIST_SUMS: dist_sums(base_wheels)}),
                                  layers=[dist_layer(base_wheels)]),
        "wheels": make_image(registry_url, repo, v.cache_tags.wheels,
                             labels=labels(v, **on_base, **{LABEL_COMMIT: plan.commit,
                                                            LABEL_DIST_SUMS: dist_sums(project)}),
                             layers=[wheels_layer]),
        "release": make_image(registry_url, repo, v.cache_tags.release,
                              labels=labels(v, **on_base, **{LABEL_COMMIT: plan.commit})),
    }
    refs = {kind: plan.cache_ref(image.digest) for kind, image in images.items()}
    return Night(images=images, refs=refs, wheel_layer="sha256:" + hashlib.sha256(wheels_layer).hexdigest(),
                 wheel_layer_bytes=wheels_layer)


def blob_file(storage: Path, digest: str) -> Path:
    """Where ``docker-registry``'s filesystem driver keeps a blob's bytes under its storage root."""
    hexa = digest.removeprefix("sha256:")
    return storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexa[:2] / hexa / "data"


# --------------------------------------------------------------------------- the checker


def store_lies(base_url: str, conn_id: str | None = None) -> list[str]:
    """What a reader of the store would be misled by: every ``index.html`` under ``base_url`` (commit
    folders and ``nightly/``) is checked; a root page must list only projects with a page, a project page
    must link only files that exist with the linked sha256. Read through fsspec, listing afresh."""
    root = store_root(base_url.rstrip("/") + "/", conn_id)
    fs = root.fs  # type: ignore[attr-defined]
    fs.invalidate_cache()
    base = str(root.path).rstrip("/")  # type: ignore[attr-defined]
    files = {str(p) for p in fs.find(base)}
    lies = [f"{p}: a temporary file is visible" for p in sorted(files) if p.endswith(".part")]
    for page in sorted(p for p in files if p.endswith("/index.html")):
        depth = len(page[len(base) + 1:].split("/"))
        folder = posixpath.dirname(page)
        text = fs.cat_file(page).decode()
        try:
            if depth == 3:  # <commit or nightly>/<variant>/index.html: the project list
                for project in parse_project_list(text):
                    if f"{folder}/{canonicalize_name(project)}/index.html" not in files:
                        lies.append(f"{page} lists {project}, whose page is missing")
                continue
            for link in parse_project_page(text):
                target = posixpath.normpath(posixpath.join(folder, unquote(urldefrag(link.href).url)))
                if target not in files:
                    lies.append(f"{page} links {link.filename}, which is missing ({target})")
                    continue
                actual = hashlib.sha256(fs.cat_file(target)).hexdigest()
                if actual != link.sha256:
                    lies.append(f"{page} links {link.filename} with sha256 {link.sha256}, the file has {actual}")
        except IndexPageError as exc:
            lies.append(f"{page}: unreadable ({exc})")
    return lies


def reader(url: str, repository: str, login: tuple[str, str] | None = None) -> httpx.Client:
    """A plain client for ``url``; with ``login``, it carries a pull token for ``repository`` from the
    registry's token issuer (the Bearer flow, done by hand: independent of the code under test)."""
    client = httpx.Client(base_url=url, timeout=30, trust_env=False)
    if login is None:
        return client
    challenge = client.get("/v2/").headers.get("www-authenticate", "")
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    token = httpx.get(params["realm"], params={"service": params["service"], "scope": f"repository:{repository}:pull"},
                      auth=login, timeout=10, trust_env=False).json()["token"]
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def registry_lies(url: str, repository: str, login: tuple[str, str] | None = None) -> list[str]:
    """Every tag of ``repository`` at ``url`` must resolve to a manifest (its bytes hashing to its digest)
    whose config and layers (and an index's manifests) are all there and hash to their digests."""
    lies: list[str] = []
    with contextlib.closing(reader(url, repository, login)) as client:
        listing = client.get(f"/v2/{repository}/tags/list")
        if listing.status_code == 404:
            return []
        tags = listing.json().get("tags") or []
        for tag in tags:
            _check_manifest(client, repository, tag, f"{repository}:{tag}", lies)
    return lies


def _check_manifest(client: httpx.Client, repository: str, reference: str, what: str, lies: list[str]) -> None:
    answer = client.get(f"/v2/{repository}/manifests/{reference}", headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)})
    if answer.status_code != 200:
        lies.append(f"{what}: manifest answers HTTP {answer.status_code}")
        return
    digest = "sha256:" + hashlib.sha256(answer.content).hexdigest()
    if answer.headers.get("docker-content-digest", digest) != digest or reference.startswith("sha256:") and \
            reference != digest:
        lies.append(f"{what}: manifest bytes hash to {digest}")
    doc = answer.json()
    if doc.get("mediaType") in (OCI_INDEX, DOCKER_MANIFEST_LIST):
        for child in doc.get("manifests", []):
            _check_manifest(client, repository, child["digest"], f"{what} → {child['digest']}", lies)
        return
    for blob in [doc.get("config", {}), *doc.get("layers", [])]:
        got = client.get(f"/v2/{repository}/blobs/{blob['digest']}", follow_redirects=True)
        if got.status_code != 200:
            lies.append(f"{what}: blob {blob['digest']} answers HTTP {got.status_code}")
        elif "sha256:" + hashlib.sha256(got.content).hexdigest() != blob["digest"]:
            lies.append(f"{what}: blob {blob['digest']} does not hash to its digest")


def tag_digest(url: str, repository: str, tag: str, login: tuple[str, str] | None = None) -> str | None:
    """The digest a tag points to now (None: no such tag), read with a plain HEAD."""
    with contextlib.closing(reader(url, repository, login)) as client:
        answer = client.head(f"/v2/{repository}/manifests/{tag}", headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)})
    if answer.status_code not in (200, 404):
        raise AssertionError(f"HEAD {url}/v2/{repository}/manifests/{tag}: HTTP {answer.status_code}")
    return answer.headers["docker-content-digest"] if answer.status_code == 200 else None


# --------------------------------------------------------------------------- the recovery clock


@dataclass
class Clock:
    fault: str
    stage: str
    seconds: float = 0.0


@contextlib.contextmanager
def recovered(fault: str, stage: str) -> Iterator[Clock]:
    """Time the block (fault removed → converged and checked); print and record it when it succeeds."""
    clock = Clock(fault, stage)
    started = time.monotonic()
    yield clock
    clock.seconds = time.monotonic() - started
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    with RECORD.open("a") as out:
        out.write(json.dumps({"fault": fault, "stage": stage, "seconds": round(clock.seconds, 3),
                              "at": datetime.now(UTC).isoformat(timespec="seconds"), "pid": os.getpid()}) + "\n")
    print(f"\nrecovered: {fault} ({stage}) in {clock.seconds:.2f} s")


# --------------------------------------------------------------------------- a whole night, and its end state


def publish_night(plan: ReleasePlan, night: Night, log: Log = quiet) -> dict[str, Any]:
    """What the publishing tasks of one variant run, in order: push_images, publish_wheels, promote_nightly."""
    v = plan.variant(VARIANT)
    pushed = push_variant_images(plan, v, night.refs, log)
    publish_variant_wheels(plan, v, night.refs, log)
    return promote_variant(plan, v, pushed.digests, log)


def assert_converged(plan: ReleasePlan, night: Night, *, cache_url: str, public_url: str,
                     promoted: bool = True, public_login: tuple[str, str] | None = None) -> None:
    """The night's end state: the commit's wheels published and verified, the nightly index and the
    public tags on this commit (when ``promoted``), and nothing anywhere that misleads a reader."""
    v = plan.variant(VARIANT)
    conn = plan.config.wheel_store.connection_id
    published = observe_published(store_root(v.wheels_url, conn), v.wheels_url)
    assert published.present, published.reason
    if promoted:
        assert alias_commit(store_root(v.nightly_wheels_url, conn), v.nightly_wheels_url) == plan.commit
        for tag, kind in ((v.public_tags.nightly, "release"), (v.public_tags.base_nightly, "base")):
            assert tag_digest(public_url, plan.public_repository, tag, public_login) == night.digests[kind]
    for tag, kind in ((v.public_tags.nightly_commit, "release"), (v.public_tags.base_nightly_commit, "base")):
        assert tag_digest(public_url, plan.public_repository, tag, public_login) == night.digests[kind]
    assert_truthful(plan, cache_url=cache_url, public_url=public_url, public_login=public_login)


def assert_truthful(plan: ReleasePlan, *, cache_url: str | None, public_url: str | None,
                    public_login: tuple[str, str] | None = None) -> None:
    """(a) of every fault: no page or alias names anything missing or unverified."""
    assert store_lies(plan.store_url, plan.config.wheel_store.connection_id) == []
    if public_url:
        assert registry_lies(public_url, plan.public_repository, public_login) == []
    if cache_url:
        assert registry_lies(cache_url, plan.cache_repository) == []


# --------------------------------------------------------------------------- credentials


class ExpiringTokens(TokenServer):
    """A token issuer that, while ``expired`` is set, issues tokens that expired a minute ago (a wrong
    clock, a misconfigured issuer): the registry refuses them with ``error="invalid_token"``."""

    expired = False

    def issue(self, user: str | None, scopes: list[str]) -> str:
        token = super().issue(user, scopes)
        if not self.expired:
            return token
        claims = jwt.decode(token, options={"verify_signature": False})
        now = int(time.time())
        claims.update(exp=now - 60, nbf=now - 120, iat=now - 120)
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"x5c": [self.x5c]})


def set_registry_connection(setenv: Callable[[str, str], object], conn_id: str, login: str, password: str) -> None:
    """The Airflow connection (``AIRFLOW_CONN_<ID>``) a registry's credentials come from."""
    setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "generic", "login": login,
                                                          "password": password}))
