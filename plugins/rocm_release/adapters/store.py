"""The wheel store: an ``ObjectStoragePath`` (``s3://`` through an Airflow connection, or ``file://``).

A variant is *published* for a commit when its index page exists and every
wheel it links to exists with the sha256 in its link. Reading errors are
classified like registry errors: missing is "absent", an outage is transient,
refused credentials are fatal — never "absent".
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from packaging.utils import canonicalize_name

from rocm_release.core.decision import Observation
from rocm_release.core.errors import FatalError, TransientError
from rocm_release.core.index import IndexLink, IndexPageError, parse_project_list, parse_project_page


class StoreError(Exception):
    """A store call without a definitive answer; names the path."""


class TransientStoreError(StoreError, TransientError):
    """Outage, timeout, throttling: ask again later."""


class FatalStoreError(StoreError, FatalError):
    """Access denied or an unreadable answer: a person must act."""


class StorePath(Protocol):
    """What we use of ObjectStoragePath (pathlib.Path has it too)."""

    def __truediv__(self, other: str) -> StorePath: ...

    def exists(self) -> bool: ...

    def read_text(self) -> str: ...

    def open(self, mode: str = "r") -> Any: ...


def store_root(url: str, conn_id: str | None = None) -> StorePath:
    """The store's root as an ObjectStoragePath (the connection supplies s3 endpoint and keys)."""
    from airflow.sdk import ObjectStoragePath

    path: StorePath = ObjectStoragePath(url, conn_id=conn_id) if conn_id else ObjectStoragePath(url)
    return path


FATAL_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "AllAccessDisabled", "AccountProblem", "NoSuchBucket",
})


def _error_code(exc: BaseException) -> tuple[str | None, int | None]:
    """The AWS error code and HTTP status in ``exc`` or the exceptions it was raised from."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            error = response.get("Error") or {}
            meta = response.get("ResponseMetadata") or {}
            return error.get("Code"), meta.get("HTTPStatusCode")
        seen = seen.__cause__ or seen.__context__
    return None, None


def classify(exc: BaseException, where: str) -> StoreError:
    """Map a filesystem/S3 exception to transient or fatal (missing files are handled by the caller).

    Fatal: access refused (PermissionError, which s3fs raises for 403) and the
    AWS error codes that asking again cannot fix. Everything else — refused
    connections, timeouts, throttling, 5xx — is transient.
    """
    if isinstance(exc, PermissionError):
        return FatalStoreError(f"{where}: access denied ({exc})")
    code, status = _error_code(exc)
    if code in FATAL_CODES or status in (401, 403):
        return FatalStoreError(f"{where}: refused ({code or status}: {exc})")
    return TransientStoreError(f"{where}: {type(exc).__name__}: {exc}")


def read_text_or_none(path: StorePath, where: str) -> str | None:
    """The text at ``path``, None when it definitively does not exist."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - every other failure is classified, none is "absent"
        raise classify(exc, where) from exc


def sha256_or_none(path: StorePath, where: str) -> str | None:
    """The sha256 of the file at ``path``, streaming; None when it does not exist."""
    try:
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - see read_text_or_none
        raise classify(exc, where) from exc


def observe_published(folder: StorePath, where: str) -> Observation:
    """Is ``folder`` (``<store>/<commit>/<variant>/``) a complete, verified publication?

    Only links ``../<plain file name>`` count: a page naming anything else (``..%2F..%2Fx.whl``
    decodes to a path outside the folder) makes the folder "not published", and no file is read.
    """
    root = read_text_or_none(folder / "index.html", f"{where}index.html")
    if root is None:
        return Observation(present=False, reason=f"{where}index.html does not exist")
    links, problem = _project_links(folder, root, where)
    if problem:
        return Observation(present=False, reason=problem)
    files = []
    for name, link in links:
        if not link.href.startswith("../") or "/" in link.href[3:]:
            return Observation(present=False, reason=f"{where}{name}/: unexpected link {link.href!r}")
        actual = sha256_or_none(folder / link.filename, f"{where}{link.filename}")
        if actual is None:
            return Observation(present=False, reason=f"{where}{link.filename} is linked but missing")
        if actual != link.sha256:
            return Observation(present=False, reason=f"{where}{link.filename}: sha256 {actual} != link's")
        files.append(link.filename)
    if not files:
        return Observation(present=False, reason=f"{where}index.html links no wheel")
    return Observation(present=True, reason=f"published and verified: {', '.join(sorted(files))}")


def _project_links(folder: StorePath, root: str, where: str) -> tuple[list[tuple[str, IndexLink]], str | None]:
    """(project, link) for every link of every page the root lists, or why the folder is not published."""
    try:
        projects = [canonicalize_name(p) for p in parse_project_list(root)]
    except IndexPageError as exc:
        return [], f"{where}index.html: {exc}"
    links: list[tuple[str, IndexLink]] = []
    for name in projects:
        page = read_text_or_none(folder / name / "index.html", f"{where}{name}/index.html")
        if page is None:
            return [], f"{where}{name}/index.html is missing"
        try:
            links += [(name, link) for link in parse_project_page(page)]
        except IndexPageError as exc:
            return [], f"{where}{name}/index.html: {exc}"
    return links, None
