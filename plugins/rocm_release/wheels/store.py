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

from rocm_release.decision import Observation
from rocm_release.wheels.index import IndexPageError, parse_project_list, parse_project_page


class StoreError(Exception):
    """A store call without a definitive answer; names the path."""


class TransientStoreError(StoreError):
    """Outage, timeout, throttling: ask again later."""


class FatalStoreError(StoreError):
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


def classify(exc: BaseException, where: str) -> StoreError:
    """Map a filesystem/S3 exception to transient or fatal (missing files are handled by the caller)."""
    if isinstance(exc, PermissionError):
        return FatalStoreError(f"{where}: access denied ({exc})")
    text = f"{type(exc).__name__}: {exc}"
    fatal_codes = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "403")
    if any(code in text for code in fatal_codes):
        return FatalStoreError(f"{where}: credentials refused ({text})")
    return TransientStoreError(f"{where}: {text}")


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
    """Is ``folder`` (``<store>/<commit>/<variant>/``) a complete, verified publication?"""
    root = read_text_or_none(folder / "index.html", f"{where}index.html")
    if root is None:
        return Observation(present=False, reason=f"{where}index.html does not exist")
    files = []
    for project in parse_project_list(root):
        name = canonicalize_name(project)
        page = read_text_or_none(folder / name / "index.html", f"{where}{name}/index.html")
        if page is None:
            return Observation(present=False, reason=f"{where}{name}/index.html is missing")
        try:
            links = parse_project_page(page)
        except IndexPageError as exc:
            return Observation(present=False, reason=f"{where}{name}/index.html: {exc}")
        for link in links:
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
