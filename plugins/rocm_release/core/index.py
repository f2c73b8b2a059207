"""PEP 503 "simple" index pages: writing them, and reading them back to check a publication.

Layout of one published folder ``<store>/<commit>/<variant>/``::

    index.html                 the project list
    <normalized-name>/index.html   one page per project, links ``../<wheel>#sha256=<hex>``
    <wheel files>, each with ``<wheel file>.metadata`` (its METADATA, PEP 658) next to it

What a link carries (every attribute HTML-escaped):

* ``#sha256=<hex>`` always: pip and uv check the downloaded bytes against it (PEP 503);
* ``data-requires-python`` when the wheel declares it (PEP 503);
* ``data-core-metadata="sha256=<hex>"`` and its older spelling ``data-dist-info-metadata`` when
  the wheel's METADATA is published next to it as ``<file>.metadata`` (PEP 658, renamed by PEP 714,
  which asks indexes to write both with the same value: pip 22.x reads only the old name):
  resolvers read those kilobytes instead of downloading a wheel they may not choose;
* ``data-upload-time="2026-12-02T11:40:00Z"`` (ISO 8601, UTC, ``Z``, optional fraction of a
  second) when known. This attribute is **ours**: PEP 700 defines ``upload-time`` for the JSON
  API only, and the HTML form has no such attribute. pip and uv ignore attributes they do not
  know, so it costs them nothing; it tells a person (or ``read_published``) when a file landed.

Reading a page back is strict where writing is: a metadata attribute that is not
``sha256=<64 hex>`` (also ``true``, which PEP 658 allows but which verifies nothing), the two
metadata attributes disagreeing, or an upload time that is not that ISO 8601 form raise
IndexPageError. A link's file name (its last path segment, URL-decoded) is a
plain file name and a project is a plain project name, when written and when
read: a page can never lead a reader out of its folder (``..%2F``, ``%5C``, ``%00``, a dot file) (issue #11, defect 8).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser
from urllib.parse import quote, unquote, urldefrag

from packaging.utils import canonicalize_name

from rocm_release.core.errors import FatalError

SHA_FRAGMENT = re.compile(r"^sha256=(?P<sha>[0-9a-f]{64})$")
# One path segment: no separator (/ or \), no control character (NUL…), no leading dot ("..", ".x.part"); matched whole.
PLAIN_FILE_NAME = re.compile(r"[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]{0,254}")
# PEP 508 project names (matched whole).
PROJECT_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
# The value of data-core-metadata / data-dist-info-metadata we write and accept (matched whole).
METADATA_HASH = re.compile(r"sha256=(?P<sha>[0-9a-f]{64})")
# data-upload-time: ISO 8601 in UTC, as PEP 700's JSON upload-time (matched whole; the date is checked too).
UPLOAD_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z")
METADATA_ATTRIBUTES = ("data-core-metadata", "data-dist-info-metadata")  # PEP 714's name, then PEP 658's


@dataclass(frozen=True)
class IndexLink:
    """One file link on a project page."""

    href: str
    filename: str
    sha256: str
    requires_python: str | None = None
    metadata_sha256: str | None = None  # of ``<file>.metadata`` (PEP 658), when published
    upload_time: str | None = None  # ISO 8601 UTC (``2026-12-02T11:40:00Z``), when known


def project_list(names: list[str]) -> str:
    """The root page: one link per normalized project name."""
    links = "\n".join(
        f'    <a href="{quote(n)}/">{html.escape(n)}</a><br/>' for n in sorted({canonicalize_name(x) for x in names})
    )
    return _page("Simple index", links)


def project_page(name: str, links: list[IndexLink]) -> str:
    """One project's page; hrefs are relative to the page and URL-quoted (``+`` → ``%2B``)."""
    rows = []
    for link in sorted(links, key=lambda x: x.filename):
        attrs = f'href="{html.escape(link.href)}#sha256={link.sha256}"'
        if link.requires_python:
            attrs += f' data-requires-python="{html.escape(link.requires_python)}"'
        if link.metadata_sha256 is not None:
            value = f"sha256={link.metadata_sha256}"
            if not METADATA_HASH.fullmatch(value):
                raise IndexPageError(f"{link.filename}: metadata sha256 {link.metadata_sha256[:80]!r} is not 64 hex")
            attrs += "".join(f' {name}="{value}"' for name in METADATA_ATTRIBUTES)
        if link.upload_time is not None:
            attrs += f' data-upload-time="{html.escape(check_upload_time(link.upload_time))}"'
        rows.append(f"    <a {attrs}>{html.escape(link.filename)}</a><br/>")
    return _page(f"Links for {canonicalize_name(name)}", "\n".join(rows))


def wheel_href(prefix_to_file: str, filename: str) -> str:
    """A relative href to a wheel file, quoted as pip expects; IndexPageError unless a plain file name."""
    return prefix_to_file + quote(check_file_name(filename), safe="")


def check_file_name(name: str) -> str:
    """``name`` if it is one plain file name (it cannot leave its folder); IndexPageError otherwise."""
    if not PLAIN_FILE_NAME.fullmatch(name):
        raise IndexPageError(f"{name[:80]!r} is not a plain file name")
    return name


def check_upload_time(value: str) -> str:
    """``value`` if it is an ISO 8601 UTC time as we write it (``2026-12-02T11:40:00Z``); IndexPageError otherwise."""
    valid = UPLOAD_TIME.fullmatch(value) is not None
    if valid:
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:  # 2026-13-02T…, 2026-02-30T…
            valid = False
    if not valid:
        raise IndexPageError(f"upload time {value[:80]!r} is not ISO 8601 UTC (like 2026-12-02T11:40:00Z)")
    return value


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.0">\n'
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"    <h1>{html.escape(title)}</h1>\n{body}\n  </body>\n</html>\n"
    )


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.anchors.append(dict(attrs))


class IndexPageError(ValueError, FatalError):
    """A page that is not a valid index page for our purposes (a link without sha256, …)."""


def parse_project_list(text: str) -> list[str]:
    """Project names linked from the root page; IndexPageError for a link that is not a project name."""
    parser = _Anchors()
    parser.feed(text)
    names = [unquote(str(a.get("href") or "")).rstrip("/") for a in parser.anchors if a.get("href")]
    for name in names:
        if not PROJECT_NAME.fullmatch(name):
            raise IndexPageError(f"project link {name[:80]!r} is not a project name")
    return names


def parse_project_page(text: str) -> list[IndexLink]:
    """The file links of a project page; every link must carry a sha256 fragment and name a plain file."""
    parser = _Anchors()
    parser.feed(text)
    links = []
    for anchor in parser.anchors:
        href = str(anchor.get("href") or "")
        url, fragment = urldefrag(href)
        match = SHA_FRAGMENT.match(fragment)
        if not match:
            raise IndexPageError(f"link {href!r} has no #sha256=<hex> fragment")
        links.append(
            IndexLink(
                href=url,
                filename=check_file_name(unquote(url.rsplit("/", 1)[-1])),
                sha256=match["sha"],
                requires_python=anchor.get("data-requires-python"),
                metadata_sha256=_metadata_sha256(anchor, href),
                upload_time=_upload_time(anchor),
            )
        )
    return links


def _metadata_sha256(anchor: dict[str, str | None], href: str) -> str | None:
    """The sha256 of the link's PEP 658 metadata file, from either attribute; IndexPageError when malformed."""
    values = {anchor[name] for name in METADATA_ATTRIBUTES if name in anchor}
    if not values:
        return None
    if len(values) > 1:
        raise IndexPageError(f"link {href!r}: data-core-metadata and data-dist-info-metadata disagree")
    value = values.pop() or ""
    match = METADATA_HASH.fullmatch(value)
    if not match:
        raise IndexPageError(f"link {href!r}: metadata attribute {value[:80]!r} is not sha256=<64 hex>")
    return match["sha"]


def _upload_time(anchor: dict[str, str | None]) -> str | None:
    value = anchor.get("data-upload-time")
    return None if value is None else check_upload_time(value)
