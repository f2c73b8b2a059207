"""Publishing wheels behind a PEP 503 index, and pointing the nightly alias at a publication.

The rule every step keeps: **a reader never sees an index page that links a
missing file, or a file whose bytes differ from the sha256 in its link.**

* Wheels go up first, each written atomically where the store allows it
  (``file://``: a temporary name in the same folder, then a rename; ``s3://``:
  one PUT, or a multipart upload, is atomic — the object appears whole or
  not at all). A wheel already there with the same sha256 is not uploaded
  again; re-tagging is deterministic, so a re-run uploads nothing.
* A wheel there with *different* bytes is only overwritten after the pages
  that could link it are deleted (the root ``index.html`` first): for a
  moment the folder reads as "not published", never as inconsistent.
* Each wheel's METADATA goes up next to it as ``<wheel>.metadata`` (PEP 658),
  written and read back the same way, and its link carries
  ``data-core-metadata="sha256=…"``: pip and uv resolve from those kilobytes.
* Pages are written only after every uploaded file has been read back and
  its sha256 checked: project pages first, the root ``index.html`` last.
* Every read, upload (with its read-back), page write and delete is one
  idempotent operation, retried through store outages as the ``retrying``
  policy says (``core.retrying``); a fatal error (access denied, a file that
  reads back with other bytes) is not.

The nightly alias (``<store>/nightly/<variant>/``) holds pages only. Its links
point at the per-commit files (relative ``../../../<commit>/<variant>/<file>``,
or absolute under a public URL); no wheel bytes are copied, and the link's
href + ``.metadata`` is the per-commit metadata file. Its root page
names the commit and variant in ``<meta name="rocm-nightly:…">`` tags, which
``read_published`` parses back (promotion only moves forwards).
"""

from __future__ import annotations

import hashlib
import html
import posixpath
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

from packaging.utils import canonicalize_name

from rocm_release.adapters.store import (
    METADATA_SUFFIX,
    FatalStoreError,
    StoredFile,
    StorePath,
    observe_published,
    read_text_or_none,
    stat_or_none,
    verified_sha256,
)
from rocm_release.adapters.store_write import (
    WritableStorePath,
    chunks,
    record_local,
    unlink,
    writable,
    write_atomic,
)
from rocm_release.adapters.wheel_retag import core_metadata, wheel_metadata
from rocm_release.core.errors import FatalError
from rocm_release.core.frozen import Frozen
from rocm_release.core.index import (
    IndexLink,
    IndexPageError,
    parse_project_list,
    parse_project_page,
    project_list,
    project_page,
    wheel_href,
)
from rocm_release.core.retrying import ONCE, Retrying

Log = Callable[[str], None]

INDEX = "index.html"
META_PREFIX = "rocm-nightly:"


class UploadMismatch(FatalStoreError):
    """A file read back after upload does not have the bytes we sent (another writer, or corruption)."""


class NotPublished(RuntimeError, FatalError):
    """Promotion was asked to point at a folder that is not a complete, verified publication."""


class PublishedFile(Frozen):
    """One wheel of a publication, as the index offers it."""

    filename: str
    sha256: str
    size: int
    project: str
    version: str
    requires_python: str | None
    uploaded: bool


class PublishedLink(Frozen):
    """One link of a published folder's index, as a reader finds it."""

    project: str
    filename: str
    sha256: str
    href: str
    requires_python: str | None = None
    metadata_sha256: str | None = None  # of ``<href>.metadata`` (PEP 658)
    upload_time: str | None = None


class Publication(Frozen):
    """What a folder's index links; ``commit``/``variant``/``source`` are set on alias pages."""

    projects: tuple[str, ...]
    links: tuple[PublishedLink, ...]
    commit: str | None = None
    variant: str | None = None
    source: str | None = None
    meta: dict[str, str] = {}  # every ``rocm-nightly:`` meta tag of the root page


# --------------------------------------------------------------------------- publishing


def publish_wheels(wheels: Sequence[Path], folder: StorePath, where: str, log: Log,
                   retrying: Retrying = ONCE, *, before_replace: Callable[[], None] = lambda: None,
                   linked: Sequence[PublishedLink] = (), root_meta: Mapping[str, str] | None = None
                   ) -> list[PublishedFile]:
    """Upload ``wheels`` to ``folder`` (skipping those already there) and write its PEP 503 index last.

    ``where`` names the folder in messages (its URL). Returns one PublishedFile
    per wheel, in input order, ``uploaded`` telling whether bytes moved. Store
    errors are raised classified (TransientStoreError/FatalStoreError); a file
    that reads back with other bytes than sent raises UploadMismatch. An
    interrupted call leaves the folder either as it was, or reading as not
    published; calling again completes it. Bad input (no wheels, one file name
    twice, a wheel whose metadata disagrees with its name) raises ValueError
    before anything is written. Each store call is retried as ``retrying`` says.
    ``before_replace`` runs before the bytes of a file already there change
    (other pages linking it: ``wheels_alias``). ``linked``: files published elsewhere that the pages
    link too (the base wheels, ``hrefs`` relative to a project page of this folder), already verified.
    ``root_meta``: ``rocm-nightly:<key>`` meta tags for the root page (``read_published`` gives them back).
    """
    where = _slash(where)
    store = writable(folder, where)
    local = _wheels_to_publish(wheels, where)
    upload, changed, times = _compare_with_store(store, local, where, log, retrying)
    if changed:
        before_replace()
        _withdraw_pages(store, where, {w.project for w in changed}, log, retrying)
    # Every uploaded file is checked (HEAD: the size and sha256 the store recorded) before any page links it.
    for wheel in upload:
        times[wheel.filename] = retrying(f"upload of {where}{wheel.filename}", partial(
            _put_verified, store, wheel.filename, partial(_file_chunks, wheel.path), wheel.sha256, wheel.size,
            where, log))
    for wheel in local:  # kilobytes each: checked (HEAD) for every wheel, written when missing or different
        name = wheel.filename + METADATA_SUFFIX
        retrying(f"upload of {where}{name}", partial(_put_small, store, name, wheel.metadata, where, log))
    by_project = _index_links(local, times)
    for link in linked:
        by_project.setdefault(link.project, []).append(IndexLink(
            href=link.href, filename=link.filename, sha256=link.sha256, requires_python=link.requires_python,
            metadata_sha256=link.metadata_sha256, upload_time=link.upload_time))
    root = project_list(sorted(by_project))
    _write_pages(store, where, by_project, _with_meta(root, dict(root_meta)) if root_meta else root, log, retrying)
    uploaded = {w.filename for w in upload}
    return [PublishedFile(filename=w.filename, sha256=w.sha256, size=w.size, project=w.project, version=w.version,
                          requires_python=w.requires_python, uploaded=w.filename in uploaded) for w in local]


def _wheels_to_publish(wheels: Sequence[Path], where: str) -> list[_LocalWheel]:
    """Each wheel's name, sha256 and metadata; ValueError for none at all or one file name twice."""
    local = [_describe(path) for path in wheels]
    if not local:
        raise ValueError(f"{where}: no wheels to publish")
    names = [w.filename for w in local]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{where}: the wheels to publish name {duplicates} more than once")
    return local


def _compare_with_store(store: WritableStorePath, local: Sequence[_LocalWheel], where: str, log: Log,
                        retrying: Retrying) -> tuple[list[_LocalWheel], list[_LocalWheel], dict[str, str | None]]:
    """(what to upload: missing or different, in input order; the different ones; the recorded upload time of
    each one already there). Same sha256: skipped, checked with one HEAD-class request."""
    upload: list[_LocalWheel] = []
    changed: list[_LocalWheel] = []
    times: dict[str, str | None] = {}
    for wheel in local:
        name = where + wheel.filename
        found = retrying(f"check of {name}", partial(_found, store, wheel.filename, wheel.size, name))
        there = found[1] if found else None
        if there == wheel.sha256:
            log(f"{where}{wheel.filename}: already there with sha256 {wheel.sha256}, not uploaded")
            times[wheel.filename] = found[0].uploaded if found else None
            continue
        if there is not None:
            log(f"{where}{wheel.filename}: there with sha256 {there}, ours is {wheel.sha256}: replacing it")
            changed.append(wheel)
        upload.append(wheel)
    return upload, changed, times


def _found(store: WritableStorePath, name: str, size: int, where: str) -> tuple[StoredFile, str] | None:
    """``verified_sha256``; a file:// file found without its record (hashed instead) gets it back."""
    found = verified_sha256(store, name, where)
    if found and found[0].sha256 is None and found[0].size == size:
        record_local(store, name, found[1], size, where)
    return found


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        yield from chunks(source)


def _put_verified(store: WritableStorePath, name: str, pieces: Callable[[], Iterable[bytes]], sha256: str, size: int,
                  where: str, log: Log) -> str | None:
    """Upload one file (atomically, its sha256 recorded with it), then check it with one HEAD-class request:
    UploadMismatch unless the store holds our size and sha256 (another writer's upload records its own).
    Returns the recorded upload time."""
    write_atomic(store, (name,), pieces(), where, sha256=sha256)
    stored = stat_or_none(store, name, where + name)
    actual = stored.sha256 if stored and stored.size == size else None
    if actual is None and stored is not None and stored.sha256 is None:  # a store that records nothing
        actual = (verified_sha256(store, name, where + name) or (None, None))[1]
    if actual != sha256:
        raise UploadMismatch(f"{where}{name}: reads back as {actual or 'missing'} after upload, sent {sha256}; "
                             "is another task publishing this folder?")
    log(f"{where}{name}: uploaded ({size} bytes, sha256 {sha256})")
    return stored.uploaded if stored else None


def _put_small(store: WritableStorePath, name: str, data: bytes, where: str, log: Log) -> None:
    """Make ``name`` hold ``data`` (a small file): kept when already so (HEAD), else written and checked."""
    expected = hashlib.sha256(data).hexdigest()
    found = _found(store, name, len(data), where + name)
    if found is None or found[1] != expected:
        _put_verified(store, name, lambda: [data], expected, len(data), where, log)


def _index_links(local: Sequence[_LocalWheel], times: Mapping[str, str | None]) -> dict[str, list[IndexLink]]:
    """Project → the links of its page (``../<file>``), in input order, with each file's recorded upload time."""
    by_project: dict[str, list[IndexLink]] = {}
    for wheel in local:
        by_project.setdefault(wheel.project, []).append(IndexLink(
            href=wheel_href("../", wheel.filename), filename=wheel.filename, sha256=wheel.sha256,
            requires_python=wheel.requires_python, metadata_sha256=wheel.metadata_sha256,
            upload_time=times.get(wheel.filename)))
    return by_project


def promote_index(
    source_folder: StorePath,
    source_url: str,
    alias_folder: StorePath,
    alias_url: str,
    *,
    commit: str,
    variant: str,
    log: Log,
    source_public_url: str | None = None,
    retrying: Retrying = ONCE,
) -> Publication:
    """Point the alias folder (``<store>/nightly/<variant>/``) at the publication in ``source_folder``.

    Writes pages only: project pages first, the root (naming ``commit`` and
    ``variant``) last, then deletes alias pages of projects the new root no
    longer lists. Links are relative from the alias page to the source file,
    computed from the two URLs (same store), or ``source_public_url`` +
    file name when given. Raises NotPublished unless the source is a
    complete, verified publication (``observe_published``).

    Deciding *whether* to move the alias (only forwards) is the caller's job;
    ``read_published(alias)`` tells which commit it points at now. Each store call is retried as
    ``retrying`` says.
    """
    source_url, alias_url = _slash(source_url), _slash(alias_url)
    alias = writable(alias_folder, alias_url)
    observed = retrying(f"check of {source_url}", partial(observe_published, source_folder, source_url))
    if not observed.present:
        raise NotPublished(f"refusing to point {alias_url} at {source_url}: {observed.reason}")
    source = retrying(f"read of {source_url}", partial(read_published, source_folder, source_url))
    if source is None:  # published a moment ago, gone now: someone deletes it
        raise NotPublished(f"refusing to point {alias_url} at {source_url}: its index vanished")
    # Which pages to delete afterwards: the projects the current root lists (pages are not needed).
    previous_root = retrying(f"read of {alias_url}{INDEX}", partial(read_text_or_none, alias / INDEX,
                                                                      alias_url + INDEX))
    previous = {canonicalize_name(p) for p in parse_project_list(previous_root or "")}

    by_project: dict[str, list[IndexLink]] = {project: [] for project in source.projects}
    for link in source.links:
        prefix = _prefix_from(alias_url, link, source_url, source_public_url)
        by_project.setdefault(link.project, []).append(
            IndexLink(
                href=wheel_href(prefix, link.filename),
                filename=link.filename,
                sha256=link.sha256,
                requires_python=link.requires_python,
                metadata_sha256=link.metadata_sha256,
                upload_time=link.upload_time,
            )
        )
    root = _with_meta(
        project_list(sorted(by_project)), {"commit": commit, "variant": variant, "source": source_url}
    )
    _write_pages(alias, alias_url, by_project, root, log, retrying)
    stale = sorted(previous - set(by_project))
    for project in stale:
        page = f"{alias_url}{project}/{INDEX}"
        retrying(f"delete of {page}", partial(unlink, alias / project / INDEX, page))
        log(f"{page}: deleted (no longer in {source_url})")
    log(f"{alias_url} now points at {source_url} (commit {commit}, variant {variant})")
    result = retrying(f"read of {alias_url}", partial(read_published, alias, alias_url))
    assert result is not None  # just written
    return result


def read_published(folder: StorePath, where: str) -> Publication | None:
    """What the index in ``folder`` links (None when it has no root index.html).

    Reads pages only, never wheel bytes; whether the files are there is
    ``observe_published``'s question. Raises IndexPageError when the root
    lists a project whose page is missing or malformed.
    """
    where = _slash(where)
    root = read_text_or_none(folder / INDEX, where + INDEX)
    if root is None:
        return None
    projects = tuple(sorted({canonicalize_name(p) for p in parse_project_list(root)}))
    links: list[PublishedLink] = []
    for project in projects:
        page = read_text_or_none(folder / project / INDEX, f"{where}{project}/{INDEX}")
        if page is None:
            raise IndexPageError(f"{where}{INDEX} lists {project!r}, but {where}{project}/{INDEX} is missing")
        for link in parse_project_page(page):
            links.append(
                PublishedLink(
                    project=project,
                    filename=link.filename,
                    sha256=link.sha256,
                    href=link.href,
                    requires_python=link.requires_python,
                    metadata_sha256=link.metadata_sha256,
                    upload_time=link.upload_time,
                )
            )
    meta = _read_meta(root)
    return Publication(
        projects=projects,
        links=tuple(links),
        commit=meta.get("commit"),
        variant=meta.get("variant"),
        source=meta.get("source"),
        meta=meta,
    )


# --------------------------------------------------------------------------- internals


class _LocalWheel(Frozen):
    path: Path
    filename: str
    sha256: str
    size: int
    project: str
    version: str
    requires_python: str | None
    metadata: bytes  # the wheel's METADATA, published as <filename>.metadata
    metadata_sha256: str


def _describe(path: Path) -> _LocalWheel:
    meta = wheel_metadata(path)  # also refuses a wheel whose metadata disagrees with its name
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as stream:
        for chunk in chunks(stream):
            digest.update(chunk)
            size += len(chunk)
    metadata = core_metadata(path)
    return _LocalWheel(
        path=path,
        filename=path.name,
        sha256=digest.hexdigest(),
        size=size,
        project=canonicalize_name(meta.name),
        version=meta.version,
        requires_python=meta.requires_python,
        metadata=metadata,
        metadata_sha256=hashlib.sha256(metadata).hexdigest(),
    )


def _slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _write_pages(store: WritableStorePath, where: str, by_project: dict[str, list[IndexLink]], root: str, log: Log,
                 retrying: Retrying) -> None:
    """Project pages first, the root last; a page already holding the same text is not rewritten."""
    pages = [((project, INDEX), project_page(project, by_project[project])) for project in sorted(by_project)]
    for parts, text in [*pages, ((INDEX,), root)]:
        retrying(f"write of {where}{'/'.join(parts)}",
                 partial(_write_text_if_changed, store, parts, text, where, log))


def _write_text_if_changed(store: WritableStorePath, parts: tuple[str, ...], text: str, where: str, log: Log) -> None:
    name = "/".join(parts)
    target = store
    for part in parts:
        target = target / part
    if read_text_or_none(target, where + name) == text:
        return
    write_atomic(store, parts, [text.encode("utf-8")], where, page=True)
    log(f"{where}{name}: written")


def _withdraw_pages(store: WritableStorePath, where: str, projects: set[str], log: Log, retrying: Retrying) -> None:
    """Delete the root page, then the pages of ``projects``, before their files' bytes change."""
    for parts in [(INDEX,), *((project, INDEX) for project in sorted(projects))]:
        target = store
        for part in parts:
            target = target / part
        name = "/".join(parts)
        retrying(f"delete of {where}{name}", partial(unlink, target, where + name))
        log(f"{where}{name}: deleted before replacing changed files")


def _prefix_from(alias_url: str, link: PublishedLink, source_url: str, public_url: str | None) -> str:
    """The href prefix from the alias page of ``link.project`` to the folder holding the file ``link`` (read from
    a page of ``source_url``) leads to: relative in the same store, absolute under ``public_url`` when given."""
    source = urlsplit(source_url)
    page_dir = posixpath.join(source.path, link.project)
    target_dir = posixpath.normpath(posixpath.join(page_dir, posixpath.dirname(link.href)))
    if public_url:
        public = urlsplit(public_url)
        relative = posixpath.relpath(target_dir, source.path.rstrip("/") or "/")
        path = posixpath.normpath(posixpath.join(public.path or "/", relative))
        return public._replace(path=path.rstrip("/") + "/").geturl()
    target = source._replace(path=target_dir + "/").geturl()
    return relative_prefix(target, posixpath.join(alias_url, link.project))


def relative_prefix(source_url: str, page_dir_url: str) -> str:
    """The relative href prefix from a page in ``page_dir_url`` to files in ``source_url``."""
    source, page = urlsplit(source_url), urlsplit(page_dir_url)
    if (source.scheme, source.netloc) != (page.scheme, page.netloc):
        raise ValueError(
            f"{source_url} and {page_dir_url} are not in the same store: give source_public_url for absolute links"
        )
    relative = posixpath.relpath(source.path.rstrip("/") or "/", page.path.rstrip("/") or "/")
    return relative.rstrip("/") + "/"


def _with_meta(page: str, meta: dict[str, str]) -> str:
    """Add ``<meta name="rocm-nightly:<key>" content="…">`` tags at the end of a page's head."""
    if page.count("</head>") != 1:
        raise ValueError("index page without exactly one </head>")
    tags = "".join(
        f'    <meta name="{META_PREFIX}{html.escape(key)}" content="{html.escape(value)}">\n'
        for key, value in meta.items()
    )
    head_end = page.index("</head>")
    line_start = page.rindex("\n", 0, head_end) + 1  # keep the page's indentation of </head>
    return page[:line_start] + tags + page[line_start:]


class _MetaTags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        name, content = values.get("name"), values.get("content")
        if tag == "meta" and name and name.startswith(META_PREFIX) and content is not None:
            self.meta[name[len(META_PREFIX):]] = content


def _read_meta(page: str) -> dict[str, str]:
    parser = _MetaTags()
    parser.feed(page)
    return parser.meta
