"""The nightly wheel index (``<store>/nightly/<variant>/``) kept true while the files it links change.

Two rules on top of ``wheels_publish``:

* **Moving it is compare-and-swap.** ``move_nightly_index`` moves the alias only if it still names
  the commit it named when the move was decided, and reads it again afterwards (the store has no
  conditional write we can use through ``ObjectStoragePath``; publishing tasks are also serialized
  by the ``rocm_publishing`` pool). Either check failing raises ``AliasMoved``: nothing is left
  half-moved, and the task's retry decides again.
* **Every page that links a replaced file is rewritten in the same task.** When ``publish_wheels``
  is about to replace a per-commit file with other bytes (the wheels of that commit were rebuilt),
  ``withdraw_aliases_of`` first takes down each alias whose pages link the folder (its root page, then
  its project pages; a ``.withdrawn.json`` marker remembers commit and variant), and ``restore_aliases_of`` points it at
  the folder again once its pages are written. A reader sees the alias "not published" for that
  moment, never a link whose ``#sha256=`` differs from the file. An interrupted task leaves the
  marker, and its retry (or the next promotion) restores the alias from it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from packaging.utils import canonicalize_name

from rocm_release.adapters.store import StorePath, read_text_or_none
from rocm_release.adapters.store_write import unlink, writable, write_atomic
from rocm_release.adapters.wheels_publish import INDEX, Publication, _read_meta, _slash, promote_index, read_published
from rocm_release.core.index import parse_project_list
from rocm_release.core.promotion import AliasMoved

Log = Callable[[str], None]
MARKER = ".withdrawn.json"
Alias = tuple[StorePath, str]  # the alias folder and its URL


def _marker(alias: StorePath, url: str) -> dict[str, str] | None:
    text = read_text_or_none(alias / MARKER, url + MARKER)
    if text is None:
        return None
    found = json.loads(text)
    return found if isinstance(found, dict) and {"commit", "variant", "source"} <= set(found) else None


def _root(alias: StorePath, url: str) -> tuple[dict[str, str], tuple[str, ...]] | None:
    """The alias root page's ``rocm-nightly:`` meta tags and the projects it lists (None: no root page).
    Reads the root only: a missing project page must not stop the move or withdrawal that rewrites it."""
    root = read_text_or_none(alias / INDEX, url + INDEX)
    if root is None:
        return None
    return _read_meta(root), tuple(sorted({canonicalize_name(p) for p in parse_project_list(root)}))


def alias_commit(alias: StorePath, url: str) -> str | None:
    """The commit the alias names: its root page's, else a withdrawal marker's (None: no alias yet)."""
    url = _slash(url)
    root = _root(alias, url)
    if root is not None:
        return root[0].get("commit")
    marker = _marker(alias, url)
    return marker["commit"] if marker else None


def move_nightly_index(source: StorePath, source_url: str, alias: StorePath, alias_url: str, *,
                       expected_commit: str | None, commit: str, variant: str, log: Log) -> Publication:
    """``promote_index`` if the alias still names ``expected_commit``; AliasMoved otherwise, or when it
    does not name ``commit`` right after the move."""
    alias_url = _slash(alias_url)
    now = alias_commit(alias, alias_url)
    if now not in (expected_commit, commit):  # ours already: a retry after the move, re-asserted
        raise AliasMoved(f"{alias_url} names {now or 'nothing'} since the decision (it named "
                         f"{expected_commit or 'nothing'}); nothing changed, the retry decides again")
    moved = promote_index(source, source_url, alias, alias_url, commit=commit, variant=variant, log=log)
    after = read_published(alias, alias_url)
    if after is None or after.commit != commit:
        raise AliasMoved(f"{alias_url} names {after.commit if after else 'nothing'} right after we pointed it "
                         f"at {commit}: another writer moved it")
    unlink(writable(alias, alias_url) / MARKER, alias_url + MARKER)
    return moved


def withdraw_aliases_of(source_url: str, aliases: Sequence[Alias], log: Log) -> None:
    """Before files of ``source_url`` change: take down every alias whose pages link that folder."""
    source_url = _slash(source_url)
    for alias, url in aliases:
        url = _slash(url)
        root = _root(alias, url)
        if root is None or _slash(root[0].get("source", "")) != source_url:
            continue
        meta, projects = root
        marker = {"commit": meta.get("commit", ""), "variant": meta.get("variant", ""), "source": source_url}
        folder = writable(alias, url)
        write_atomic(folder, (MARKER,), [json.dumps(marker).encode()], url)
        # The root first (the alias reads "not published"), then every project page (pip reads those alone).
        for parts in [(INDEX,), *((project, INDEX) for project in projects)]:
            target = folder
            for part in parts:
                target = target / part
            unlink(target, url + "/".join(parts))
        log(f"{url}: withdrawn while files of {source_url} it links are replaced")


def restore_aliases_of(source: StorePath, source_url: str, aliases: Sequence[Alias], log: Log) -> None:
    """After ``source_url``'s pages are written: point every alias withdrawn from it back at it."""
    source_url = _slash(source_url)
    for alias, url in aliases:
        url = _slash(url)
        marker = _marker(alias, url)
        if marker is None or marker["source"] != source_url:
            continue
        if read_text_or_none(alias / INDEX, url + INDEX) is None:
            promote_index(source, source_url, alias, url, commit=marker["commit"], variant=marker["variant"],
                          log=log)
        unlink(writable(alias, url) / MARKER, url + MARKER)
        log(f"{url}: restored to {source_url} (commit {marker['commit']})")
