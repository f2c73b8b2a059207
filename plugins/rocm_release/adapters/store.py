"""The wheel store: an ``ObjectStoragePath`` (``s3://`` through an Airflow connection, or ``file://``).

A variant is *published* for a commit when its index page exists and every
wheel it links to exists with the sha256 in its link. Reading errors are
classified like registry errors: missing is "absent", an outage is transient,
refused credentials are fatal — never "absent".

Checking a file never reads its bytes (issue #13): its sha256 and upload time are recorded when it is
written (``store_write.write_atomic``) and read back with one HEAD-class request (``stat_or_none``):

* ``s3://``: user metadata of the object itself (``x-amz-meta-sha256``, ``x-amz-meta-uploaded``), written by
  the same PUT or multipart upload as the bytes (each part checksummed by S3), so object and record
  appear together or not at all. ``stat_or_none`` is one ``HeadObject``.
* ``file://``: a record file beside it (``.<name>.stored.json``: sha256, size, upload time and the file's
  modification time), written after the file is renamed into place and removed before a file is replaced.
  A missing record, or one whose size or modification time disagrees with the file (it was written since),
  means "not recorded": the caller hashes the file (a store written before records existed, a write
  interrupted between file and record, bytes changed behind the publisher's back).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, NamedTuple, Protocol

from packaging.utils import canonicalize_name

from rocm_release.core.decision import Observation
from rocm_release.core.errors import FatalError, TransientError
from rocm_release.core.index import PLAIN_FILE_NAME as PLAIN_NAME
from rocm_release.core.index import IndexLink, IndexPageError, parse_project_list, parse_project_page
from rocm_release.core.plan import BASE_FOLDER


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


S3_PROTOCOLS = frozenset({"s3", "s3a"})
RECORD_SUFFIX = ".stored.json"
METADATA_SUFFIX = ".metadata"  # PEP 658: the wheel's METADATA beside it
_HEX64 = re.compile(r"[0-9a-f]{64}")


class StoredFile(NamedTuple):
    """A file in the store as one HEAD-class request sees it; ``sha256``/``uploaded`` as recorded at upload
    (None: not recorded)."""

    size: int
    sha256: str | None
    uploaded: str | None


def record_name(filename: str) -> str:
    """The name of a ``file://`` file's record (a dot file: no index link can name it)."""
    return f".{filename}{RECORD_SUFFIX}"


def is_s3(path: object) -> bool:
    """True for an ``s3://`` ObjectStoragePath."""
    return str(getattr(path, "protocol", "")) in S3_PROTOCOLS


def stat_or_none(folder: StorePath, name: str, where: str) -> StoredFile | None:
    """Size, recorded sha256 and upload time of the file ``name`` in ``folder`` without reading it; None when
    absent. ``where``: the file's URL, for messages."""
    target: Any = folder / name
    try:
        if is_s3(target):
            bucket, key, _ = target.fs.split_path(target.path)
            head = target.fs.call_s3("head_object", Bucket=bucket, Key=key)
            meta = {str(k).lower(): str(v) for k, v in (head.get("Metadata") or {}).items()}
            sha = meta.get("sha256")
            return StoredFile(int(head["ContentLength"]), sha if sha and _HEX64.fullmatch(sha) else None,
                              meta.get("uploaded"))
        stat = target.stat()
        size, mtime = int(stat.st_size), stat.st_mtime
        record_text = read_text_or_none(folder / record_name(name), where + RECORD_SUFFIX)
    except FileNotFoundError:
        return None
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - see read_text_or_none
        raise classify(exc, where) from exc
    record = _record(record_text)
    if record is None or record[0].size != size or record[1] != mtime:  # written since it was recorded
        return StoredFile(size, None, None)
    return record[0]


def _record(text: str | None) -> tuple[StoredFile, float] | None:
    """A ``file://`` record's content and the file's modification time it was made for (None: missing or not
    one of ours)."""
    try:
        found = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(found, dict) or not _HEX64.fullmatch(str(found.get("sha256"))):
        return None
    size = found.get("size")
    if not isinstance(size, int) or isinstance(size, bool):
        return None
    uploaded, mtime = found.get("uploaded"), found.get("mtime")
    if not isinstance(mtime, int | float) or isinstance(mtime, bool):
        return None
    return StoredFile(size, str(found["sha256"]), uploaded if isinstance(uploaded, str) else None), float(mtime)


def verified_sha256(folder: StorePath, name: str, where: str) -> tuple[StoredFile, str] | None:
    """(what HEAD says, the sha256 of ``folder/name``): the recorded one, else — not recorded — hashed by
    reading it. None when the file does not exist."""
    stored = stat_or_none(folder, name, where)
    if stored is None:
        return None
    if stored.sha256 is not None:
        return stored, stored.sha256
    actual = sha256_or_none(folder / name, where)
    return (stored, actual) if actual is not None else None


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

    Only links ``../<plain file name>`` (a file of the folder) and
    ``../../../base/<plain folder name>/<plain file name>`` (a file of a shared base-wheels folder,
    ``core.plan.base_wheels_prefix``) count: a page naming anything else (``..%2F..%2Fx.whl`` decodes to a
    path outside the folder) makes the folder "not published", and no file is checked. Each linked file is
    checked with one HEAD-class request against the sha256 recorded at upload (``stat_or_none``); only a
    file without a record is read and hashed.
    """
    root = read_text_or_none(folder / "index.html", f"{where}index.html")
    if root is None:
        return Observation(present=False, reason=f"{where}index.html does not exist")
    links, problem = _project_links(folder, root, where)
    if problem:
        return Observation(present=False, reason=problem)
    files = []
    for name, link in links:
        target = linked_file(folder, where, link)
        if target is None:
            return Observation(present=False, reason=f"{where}{name}/: unexpected link {link.href!r}")
        path, url = target
        found = verified_sha256(path, link.filename, url)
        if found is None:
            return Observation(present=False, reason=f"{url} is linked but missing")
        if found[1] != link.sha256:
            return Observation(present=False, reason=f"{url}: sha256 {found[1]} != link's")
        problem = _metadata_problem(path, url, link)
        if problem:
            return Observation(present=False, reason=problem)
        files.append(link.filename)
    if not files:
        return Observation(present=False, reason=f"{where}index.html links no wheel")
    return Observation(present=True, reason=f"published and verified: {', '.join(sorted(files))}")


def _metadata_problem(folder: StorePath, url: str, link: IndexLink) -> str | None:
    """Why the PEP 658 metadata file a link promises (``<file>.metadata``, ``data-core-metadata``) is not there as
    promised; None when it is, or when the link promises none."""
    if link.metadata_sha256 is None:
        return None
    found = verified_sha256(folder, link.filename + METADATA_SUFFIX, url + METADATA_SUFFIX)
    if found is None:
        return f"{url}{METADATA_SUFFIX} is linked but missing"
    if found[1] != link.metadata_sha256:
        return f"{url}{METADATA_SUFFIX}: sha256 {found[1]} != link's"
    return None


def linked_file(folder: StorePath, where: str, link: IndexLink) -> tuple[StorePath, str] | None:
    """The folder holding the file a project page's link leads to, and the file's URL; None for a link we
    never write. A base link is resolved from ``folder`` = ``<store>/<commit>/<variant>/``."""
    parts = link.href.split("/")
    if len(parts) == 2 and parts[0] == "..":
        return folder, f"{where}{link.filename}"
    base = base_folder_of(link.href)
    if base is not None:
        up: Any = folder
        store_url = where.rstrip("/").rsplit("/", 2)[0]
        return up.parent.parent / BASE_FOLDER / base, f"{store_url}/{BASE_FOLDER}/{base}/{link.filename}"
    return None


def base_folder_of(href: str) -> str | None:
    """The base-wheels folder a commit page's link ``../../../base/<name>/<file>`` leads into (None: another
    link)."""
    parts = href.split("/")
    if len(parts) == 6 and parts[:4] == ["..", "..", "..", BASE_FOLDER] and PLAIN_NAME.fullmatch(parts[4]):
        return parts[4]
    return None


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
