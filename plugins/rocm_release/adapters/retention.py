"""Retention's I/O: listing the repositories and the wheel store, reading base labels, deleting.

The rules live in :mod:`rocm_release.core.retention` (pure: ``plan_retention`` decides on what is
listed here). ``observe_retention``/``read_base_use`` list and read through injected clients;
``read_guard`` reads the nightly aliases again just before deleting (and
:mod:`rocm_release.adapters.retention_current` everything else the plan assumed); ``apply_retention``
deletes what the re-check leaves: tags in the public repository first, then wheel folders, the cache
repository last, its untagged images after its tags (a commit's push times live there, so an
interrupted run still knows how old the leftovers are). Registries are used only through
:class:`~rocm_release.core.registry.ImageRegistry`. Nothing here imports Airflow.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from rocm_release.adapters.registry.oci_manifest import MalformedManifest, manifest_references
from rocm_release.adapters.store import base_folder_of, classify
from rocm_release.adapters.wheels_publish import read_published
from rocm_release.core.config import ReleaseConfig
from rocm_release.core.frozen import Frozen
from rocm_release.core.index import PLAIN_FILE_NAME
from rocm_release.core.names import INDEX_MEDIA_TYPES, SHA_RE
from rocm_release.core.plan import BASE_FOLDER, LABEL_BASE_DIGEST, LABEL_BASE_KEY, public_tag
from rocm_release.core.registry import FatalRegistryError, ImageRegistry, TagInfo, UntaggedImage
from rocm_release.core.retention import (
    NIGHTLY_FOLDER,
    BaseUse,
    ImageToInspect,
    Repository,
    RepositoryTags,
    RetentionDecision,
    RetentionInputs,
    Role,
    RunInUse,
    WheelFolder,
    commits_without_push_time,
)
from rocm_release.core.retention_recheck import CurrentState, recheck

Log = Callable[[str], None]


# --------------------------------------------------------------------------- observing (I/O, injected clients)


class FolderStore(Protocol):
    """What retention uses of an ObjectStoragePath: its fsspec filesystem and path, and ``/``."""

    @property
    def fs(self) -> Any: ...

    @property
    def path(self) -> str: ...

    def __truediv__(self, other: str) -> Any: ...


@dataclass
class CallCount:
    """Calls retention made, by kind (for the log and the report)."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] += n

    def __str__(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items())) or "none"


def list_repository(registry: ImageRegistry, repository: str, roles: tuple[Role, ...], *,
                    push_times: bool) -> RepositoryTags:
    """Every tag of a repository. An OCI registry reads push times (each image config's ``created``,
    one manifest GET per tag and one blob GET per config) only when ``push_times``; otherwise one
    HEAD per tag. ECR always has them (``imagePushedAt``, one DescribeImages per 1,000 images).

    Where the registry lists untagged images (ECR), those too, and — only when there are any — the
    digests every index of the repository lists (one manifest read per distinct index)."""
    tags = tuple(registry.list_tags(repository, with_push_times=push_times))
    repo = Repository(registry.name, repository, roles, registry.deletes_by_digest)
    untagged = tuple(registry.list_untagged(repository)) if registry.lists_untagged else ()
    children = _index_children(registry, repository, tags, untagged) if untagged else frozenset()
    return RepositoryTags(repo, tags, untagged, children)


def _index_children(registry: ImageRegistry, repository: str, tags: Sequence[TagInfo],
                    untagged: Sequence[UntaggedImage]) -> frozenset[str]:
    """Every digest an index of the repository (tagged or not) lists: its platform images and attestations."""
    indexes = sorted({t.digest for t in tags if t.media_type in INDEX_MEDIA_TYPES}
                     | {i.digest for i in untagged if i.media_type in INDEX_MEDIA_TYPES})
    children: set[str] = set()
    for digest in indexes:
        try:
            manifest = registry.manifest(repository, digest)
        except LookupError:
            continue  # deleted since it was listed: it lists nothing any more
        try:
            children |= {entry.digest for entry in manifest_references(manifest).manifests}
        except MalformedManifest as exc:
            raise FatalRegistryError(registry.name, repository,
                                     f"index {digest} cannot be read, so its untagged entries cannot be told "
                                     f"apart: {exc}") from exc
    return frozenset(children)


def _entries(store: FolderStore, path: str, where: str) -> list[dict[str, Any]]:
    try:
        listed = store.fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    except Exception as exc:  # noqa: BLE001 - classified: an outage is transient, refused credentials fatal
        raise classify(exc, where) from exc
    return [e for e in listed if isinstance(e, dict)]


def _basename(entry: Mapping[str, Any]) -> str:
    return str(entry.get("name", "")).rstrip("/").rsplit("/", 1)[-1]


def _newest_file_time(store: FolderStore, path: str, where: str) -> datetime | None:
    """The newest modification time of any file under ``path`` (one recursive listing)."""
    try:
        found = store.fs.find(path, detail=True)
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - see _entries
        raise classify(exc, where) from exc
    newest: datetime | None = None
    for info in found.values():
        when = info.get("LastModified") or info.get("mtime") or info.get("created")
        if isinstance(when, int | float):
            when = datetime.fromtimestamp(when, tz=UTC)
        if isinstance(when, datetime):
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
            newest = when if newest is None or when > newest else newest
    return newest


def read_nightly_folders(store: FolderStore, store_url: str, calls: CallCount) -> dict[str, str | None]:
    """Every ``<store>/nightly/<name>/`` alias (configured variant or not) → the commit its index names.

    An alias whose index cannot be read fails the run (IndexPageError): retention cannot tell what it
    protects, so it deletes nothing.
    """
    root = store.path.rstrip("/")
    calls.add("store list")
    aliases = [_basename(e) for e in _entries(store, f"{root}/{NIGHTLY_FOLDER}", f"{store_url}/{NIGHTLY_FOLDER}/")
               if e.get("type") == "directory"]
    found: dict[str, str | None] = {}
    for name in sorted(aliases):
        where = f"{store_url.rstrip('/')}/{NIGHTLY_FOLDER}/{name}/"
        publication = read_published(store / NIGHTLY_FOLDER / name, where)
        calls.add("store read", 1 + (len(publication.projects) if publication else 0))
        found[name] = publication.commit if publication else None
    return found


def _list_repositories(config: ReleaseConfig, cache: ImageRegistry, public: ImageRegistry) -> list[RepositoryTags]:
    """The cache repository with push times, and the public one (unless it is the same repository)."""
    cache_cfg, public_cfg = config.cache_registry, config.public_registry
    if (cache_cfg.host, cache_cfg.repository) == (public_cfg.host, public_cfg.repository):
        return [list_repository(cache, cache_cfg.repository, ("cache", "public"), push_times=True)]
    return [list_repository(cache, cache_cfg.repository, ("cache",), push_times=True),
            list_repository(public, public_cfg.repository, ("public",), push_times=False)]


def _dated_folders(folders: Sequence[WheelFolder], undated: set[str], store: FolderStore, store_url: str,
                   calls: CallCount) -> tuple[WheelFolder, ...]:
    """``folders`` with the newest file time of each ``undated`` one (one recursive listing each)."""
    root = store.path.rstrip("/")
    dated = []
    for folder in folders:
        when = None
        if folder.name in undated:
            calls.add("store list")
            when = _newest_file_time(store, f"{root}/{folder.name}", f"{store_url}/{folder.name}/")
        dated.append(WheelFolder(folder.name, when))
    return tuple(dated)


def observe_retention(
    config: ReleaseConfig,
    *,
    cache: ImageRegistry,
    public: ImageRegistry,
    store: FolderStore,
    keep_commits: int,
    log: Log,
    calls: CallCount | None = None,
    runs: Sequence[RunInUse] = (),
    now: datetime | None = None,
) -> RetentionInputs:
    """List both repositories (and their untagged images, where the registry can), the store's folders
    and its nightly aliases; read folder times only for commits that no tag dates. ``runs``: the nightly
    runs in progress; ``now``: the time the recent window (``retention.protect_recent_hours``) ends.

    Push times come from the cache registry (and from the public one when it is ECR, where they are
    free). An OCI public registry (Docker Hub) is listed with one HEAD per tag: a manifest GET per tag
    would count against its pull rate limit.
    """
    calls = calls if calls is not None else CallCount()
    repositories = _list_repositories(config, cache, public)
    for r, registry in zip(repositories, (cache, public), strict=False):
        untagged = (f", {len(r.untagged)} untagged images" if registry.lists_untagged else
                    "; untagged manifests are not listed here (the registry's garbage collection deletes them)")
        log(f"{r.repository.location}: {len(r.tags)} tags listed{untagged}")
    store_url = config.wheel_store.url.rstrip("/")
    root = store.path.rstrip("/")
    calls.add("store list")
    folders = [_basename(e) for e in _entries(store, root, store_url + "/") if e.get("type") == "directory"]
    nightly = read_nightly_folders(store, store_url, calls) if NIGHTLY_FOLDER in folders else {}
    inputs = RetentionInputs(
        repositories=tuple(repositories),
        wheel_folders=tuple(WheelFolder(name) for name in sorted(folders)),
        store_url=store_url,
        keep_commits=keep_commits,
        variants=tuple(v.name for v in config.variants),
        public_tags=config.public_tags,
        nightly_folders=nightly,
        runs_in_use=tuple(runs),
        now=now,
        protect_recent_hours=config.retention.protect_recent_hours,
    )
    if BASE_FOLDER in folders:
        inputs = replace(inputs, **read_base_folders(store, store_url, folders, calls))
    undated = commits_without_push_time(inputs) & set(folders)
    if undated:
        log(f"{len(undated)} commit folder(s) have no tag with a push time: reading their file times")
        inputs = replace(inputs, wheel_folders=_dated_folders(inputs.wheel_folders, undated, store, store_url, calls))
    log(f"{store_url}/: {len(folders)} folders; nightly aliases: "
        + (", ".join(f"{k} → {v}" for k, v in sorted(nightly.items())) or "none"))
    return inputs


def read_base_folders(store: FolderStore, store_url: str, folders: Sequence[str], calls: CallCount) -> dict[str, Any]:
    """The base-wheels folders with their newest file time, and which of them each commit's pages link
    (one listing per base folder and per commit folder, the root and project pages of each variant folder)."""
    root = store.path.rstrip("/")
    calls.add("store list")
    names = [_basename(e) for e in _entries(store, f"{root}/{BASE_FOLDER}", f"{store_url}/{BASE_FOLDER}/")
             if e.get("type") == "directory"]
    base_folders = tuple(WheelFolder(name, _newest_file_time(store, f"{root}/{BASE_FOLDER}/{name}",
                                                             f"{store_url}/{BASE_FOLDER}/{name}/"))
                         for name in sorted(names))
    calls.add("store list", len(names))
    links: dict[str, frozenset[str]] = {}
    for commit in (f for f in folders if SHA_RE.match(f)):
        calls.add("store list")
        variants = [_basename(e) for e in _entries(store, f"{root}/{commit}", f"{store_url}/{commit}/")
                    if e.get("type") == "directory"]
        linked: set[str] = set()
        for variant in variants:
            where = f"{store_url}/{commit}/{variant}/"
            publication = read_published(store / commit / variant, where)
            calls.add("store read", 1 + (len(publication.projects) if publication else 0))
            linked |= {base for link in (publication.links if publication else ())
                       if (base := base_folder_of(link.href)) is not None}
        links[commit] = frozenset(linked)
    return {"base_folders": base_folders, "base_links": links}


def read_base_use(registry: ImageRegistry, images: Sequence[ImageToInspect], log: Log,
                  calls: CallCount | None = None) -> dict[str, BaseUse | None]:
    """The base labels of each image (one ``labels`` read per distinct digest).

    An image that vanished since it was listed names no base (None): every base of its variant is
    then kept. Registry errors propagate: without the labels nothing about bases can be decided.
    """
    found: dict[str, BaseUse | None] = {}
    for image in images:
        if image.digest in found:
            continue
        if calls is not None:
            calls.add("label read")
        try:
            labels = registry.labels(image.repository, image.digest)
        except LookupError as exc:
            log(f"{image.location}:{image.tag}: gone since listing ({exc}); its variant keeps every base")
            found[image.digest] = None
            continue
        key, digest = labels.get(LABEL_BASE_KEY), labels.get(LABEL_BASE_DIGEST)
        found[image.digest] = BaseUse(key, digest) if key or digest else None
    return found


# --------------------------------------------------------------------------- applying


class Applied(Frozen):
    """What ``apply_retention`` did: deletions by location, the ``SKIP`` lines, what was already gone."""

    tags_deleted: dict[str, int]
    folders_deleted: int
    skipped: tuple[str, ...]
    images_deleted: dict[str, int] = {}
    already_gone: int = 0


@dataclass(frozen=True)
class Guard:
    """What the nightly aliases point to *now*, read again just before deleting."""

    commits: frozenset[str]
    digests: frozenset[str]


def read_guard(config: ReleaseConfig, *, public: ImageRegistry, store: FolderStore) -> Guard:
    """The nightly aliases as they are now: the public alias tags' digests and the alias folders' commits.

    One lookup per alias tag (two per variant) and a few small reads per alias folder.
    """
    digests: set[str] = set()
    for v in config.variants:
        for pattern in (config.public_tags.nightly, config.public_tags.base_nightly):
            found = public.lookup(config.public_registry.repository, public_tag(pattern, variant=v.name, commit=""))
            if found.present and found.digest:
                digests.add(found.digest)
    commits = {c for c in read_nightly_folders(store, config.wheel_store.url, CallCount()).values() if c}
    return Guard(frozenset(commits), frozenset(digests))


def delete_wheel_folder(store: FolderStore, store_url: str, name: str) -> bool:
    """``rm -r <store>/<commit>/`` or ``<store>/base/<name>/``: never ``nightly/``, ``base/`` itself or the root.

    True when deleted, False when it was already gone.
    """
    base = name.split("/", 1)[1] if name.startswith(f"{BASE_FOLDER}/") else None
    if not (SHA_RE.match(name) or (base is not None and PLAIN_FILE_NAME.fullmatch(base))):
        raise ValueError(f"refusing to delete {name!r}: only <store>/<40-hex commit>/ and "
                         f"<store>/{BASE_FOLDER}/<name>/ folders are deleted")
    path = f"{store.path.rstrip('/')}/{name}"
    where = f"{store_url.rstrip('/')}/{name}/"
    try:
        store.fs.rm(path, recursive=True)
    except FileNotFoundError:
        return False
    except Exception as exc:  # noqa: BLE001 - classified like every store error
        raise classify(exc, where) from exc
    return True


def _by_location(todo: Sequence[RetentionDecision], target: str) -> dict[str, list[str]]:
    by_location: dict[str, list[str]] = defaultdict(list)
    for d in todo:
        if d.target == target:
            by_location[d.location].append(d.name)
    return by_location


def _delete(targets: Mapping[str, tuple[ImageRegistry, str]], location: str, names: list[str], log: Log, *,
            images: bool = False) -> int:
    if location not in targets:
        raise ValueError(f"no registry client for {location}")
    registry, repository = targets[location]
    if images:
        log(f"{location}: deleting {len(names)} untagged images")
        registry.delete_digests(repository, names)
    else:
        log(f"{location}: deleting {len(names)} tags")
        registry.delete_tags(repository, names)
    return len(names)


def _delete_folders(todo: Sequence[RetentionDecision], store: FolderStore, store_url: str, log: Log) -> int:
    folders = 0
    for d in todo:
        if d.target == "folder":
            gone = delete_wheel_folder(store, store_url, d.name)
            folders += 1
            log(f"{d.reference}: {'deleted' if gone else 'already gone'}")
    return folders


def apply_retention(
    deletions: Sequence[RetentionDecision],
    *,
    targets: Mapping[str, tuple[ImageRegistry, str]],
    cache_location: str,
    store: FolderStore,
    store_url: str,
    log: Log,
    current: CurrentState | None = None,
) -> Applied:
    """Delete what the plan says and the re-check leaves: other repositories' tags first, then wheel
    folders, the cache last (its tags, then its untagged images).

    ``targets``: location (``host/repo``) → (client, repository). ECR deletes in batches of at most 100
    per call; an OCI registry deletes by digest and refuses (TagDeletionRefused, nothing deleted) when
    a tag outside the set shares a doomed digest; Docker Hub deletes tag by tag through its Hub API.
    ``current`` (what was read again just now: aliases, tags, untagged images, runs, the recent window)
    holds back every deletion the plan would no longer make (:func:`~rocm_release.core.retention_recheck.
    recheck`: a ``SKIP`` line each); what is already gone counts as done, so a retry converges.
    """
    checked = recheck(deletions, current or CurrentState())
    for line in checked.skipped:
        log(line)
    if checked.gone:
        log(f"{len(checked.gone)} tags/images already gone since the plan: " + ", ".join(checked.gone[:5])
            + (" …" if len(checked.gone) > 5 else ""))
    tags, images = _by_location(checked.todo, "tag"), _by_location(checked.todo, "image")
    deleted: dict[str, int] = {}
    for location in [loc for loc in tags if loc != cache_location]:
        deleted[location] = _delete(targets, location, tags[location], log)
    folders = _delete_folders(checked.todo, store, store_url, log)
    if cache_location in tags:
        deleted[cache_location] = _delete(targets, cache_location, tags[cache_location], log)
    images_deleted = {location: _delete(targets, location, names, log, images=True)
                      for location, names in sorted(images.items(), key=lambda kv: kv[0] == cache_location)}
    return Applied(tags_deleted=deleted, folders_deleted=folders, skipped=checked.skipped,
                   images_deleted=images_deleted, already_gone=len(checked.gone))
