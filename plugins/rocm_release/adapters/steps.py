"""One function per task of the nightly DAG: the adapters combined, configured from the plan.

The Airflow layer reads its inputs (the plan, upstream XComs) and calls one of these. Every
client is built from ``plan.config`` — the config ``resolve_release`` read — so a worker whose
config file differs from the scheduler's still uses the registries and connections the plan names.
Credentials come from Airflow connections (``adapters.registry.clients``, ``adapters.store``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from packaging.utils import parse_wheel_filename

from rocm_release.adapters import observe
from rocm_release.adapters.docker_build import build_stage, docker_session
from rocm_release.adapters.git import GitCredentials, GitMirror, SourceError
from rocm_release.adapters.images import PushedImages, alias_state, digest_of, move_alias, push_images
from rocm_release.adapters.registry.clients import blob_registry_for, registry_for, registry_for_reference
from rocm_release.adapters.store import StorePath, linked_file, observe_published, stat_or_none, store_root
from rocm_release.adapters.store_write import writable, write_atomic
from rocm_release.adapters.wheel_platform import check_platform_tag
from rocm_release.adapters.wheel_retag import retag_platform
from rocm_release.adapters.wheels_alias import (
    alias_commit,
    move_nightly_index,
    restore_aliases_of,
    withdraw_aliases_of,
)
from rocm_release.adapters.wheels_image import DistFile, LabelledBlobSource, file_sink, read_labelled_dist
from rocm_release.adapters.wheels_publish import (
    NotPublished,
    PublishedFile,
    PublishedLink,
    publish_wheels,
    read_published,
    relative_prefix,
)
from rocm_release.core.build_commands import BuildError, Stage, StageInputs
from rocm_release.core.config import Project, ReleaseConfig, Variant
from rocm_release.core.decision import Observation
from rocm_release.core.errors import FatalError
from rocm_release.core.index import IndexLink, IndexPageError, wheel_href
from rocm_release.core.params import ReleaseParams
from rocm_release.core.plan import ReleasePlan, RunKind, VariantPlan, base_wheels_prefix, make_plan
from rocm_release.core.promotion import Verdict, forwards, may_promote
from rocm_release.core.registry import ImageRegistry, LoginCredentials
from rocm_release.core.report import to_json
from rocm_release.core.retrying import Retrying
from rocm_release.core.task_ids import Artifact

Log = Callable[[str], None]
CACHE_ENV = "ROCM_NIGHTLY_CACHE_DIR"
_LOG = logging.getLogger(__name__)


class ParentImageMissing(LookupError, FatalError):
    """A configured parent image does not exist in its registry."""


def cache_dir() -> Path:
    """This host's cache folder (git mirrors): ``$ROCM_NIGHTLY_CACHE_DIR`` or ``~/.cache/rocm-nightly``."""
    named = os.environ.get(CACHE_ENV)
    return Path(named) if named else Path.home() / ".cache" / "rocm-nightly"


def git_credentials(project: Project) -> GitCredentials | None:
    """The user and token of ``project.git_conn_id``'s Airflow connection (None: no connection named)."""
    if not project.git_conn_id:
        return None
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(project.git_conn_id)
    return GitCredentials(conn.login or "", conn.password or "")


def _mirror(project: Project, url: str | None = None) -> GitMirror:
    """This host's mirror of the project's repository (``url``: the plan's), fetched now."""
    mirror = GitMirror(url or project.git_url, cache_dir() / "git", credentials=git_credentials(project))
    mirror.update()
    return mirror


# --------------------------------------------------------------------------- resolve_release


def resolve_parents(config: ReleaseConfig, variants: Iterable[Variant]) -> dict[str, str]:
    """Each configured parent reference → the same reference pinned by digest (``ref@sha256:…``)."""
    known = [config.cache_registry, config.public_registry]
    retrying = config.retry.retrying(_LOG.warning)
    parents: dict[str, str] = {}
    for variant in variants:
        ref = variant.parent_image or config.project.parent_image
        if ref in parents:
            continue
        registry, repo, tag, digest = registry_for_reference(ref, known)
        if digest is None:
            found = retrying(f"look-up of parent image {ref}", partial(registry.lookup, repo, tag or "latest"))
            if not found.present:
                raise ParentImageMissing(f"parent image {ref} does not exist: {found.reason}")
            digest = found.digest
        # "host/repo:tag@sha256:…": docker pulls by the digest; the tag stays for people.
        parents[ref] = ref if "@" in ref else f"{ref}@{digest}"
    return parents


def resolve_plan(config: ReleaseConfig, *, params: ReleaseParams, run_kind: RunKind, as_of: datetime) -> ReleasePlan:
    """The commit (the named one, or the branch tip as of ``as_of``), its base inputs, the parents → the plan."""
    mirror = _mirror(config.project)
    if params.commit:
        commit = mirror.resolve(params.commit)
    else:
        commit = mirror.tip_as_of(config.project.branch, as_of)
    files = {path: mirror.read_file(commit, path) for path in config.project.base_inputs}
    return make_plan(
        config, commit=commit, run_kind=run_kind, as_of=as_of, params=params,
        base_dockerfile=mirror.read_file(commit, config.project.base_dockerfile), base_inputs=files,
        parent_images=resolve_parents(config, config.variants), commit_time=mirror.commit_time(commit),
    )


# --------------------------------------------------------------------------- sensors


def observe_artifact(plan: ReleasePlan, v: VariantPlan, artifact: Artifact) -> Observation:
    """One definitive answer about one artifact; Transient*/Fatal* errors escape (never "absent")."""
    config = plan.config
    if artifact == "wheels_published":
        return observe_published(store_root(v.wheels_url, config.wheel_store.connection_id), v.wheels_url)
    if artifact == "wheels_image":
        # Verifying SHA256SUMS reads the /dist layers: a client that streams blobs.
        return observe.observe_wheels_image(blob_registry_for(config.cache_registry), plan, v)
    if artifact == "base_image":
        return observe.observe_base(registry_for(config.cache_registry), plan, v)
    return observe.observe_release_image(registry_for(config.cache_registry), plan, v)


# --------------------------------------------------------------------------- builds


def docker_host(config: ReleaseConfig) -> str | None:
    """The build host's daemon: ``build.docker_url`` when configured, else ``$DOCKER_HOST`` (or docker's default)."""
    return config.build.docker_url or os.environ.get("DOCKER_HOST")


def cache_logins(config: ReleaseConfig, registry: ImageRegistry, retrying: Retrying) -> list[LoginCredentials]:
    """The docker logins a build host needs for the cache registry: none for one without login; ECR's token or
    the connection's login otherwise (fetched now: an ECR token lives 12 hours)."""
    needs_login = config.cache_registry.kind == "ecr" or config.cache_registry.connection_id is not None
    return [retrying("login token of the cache registry", registry.login_credentials)] if needs_login else []


class MissingSecret(BuildError, FatalError):
    """A build secret's connection has no value."""


@contextmanager
def _secret_files(secret_ids: Iterable[str], folder: Path) -> Iterator[dict[str, Path]]:
    """Each build secret's value (the password of the Airflow connection of the same id) in a 0600 file,
    removed when the build ends. Values never reach build args, labels, logs or image history."""
    from airflow.sdk import BaseHook

    files: dict[str, Path] = {}
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        for secret_id in secret_ids:
            path = folder / secret_id
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            value = BaseHook.get_connection(secret_id).password
            if not value:
                os.close(fd)
                raise MissingSecret(f"build secret {secret_id!r}: its connection has no password (the value)")
            with os.fdopen(fd, "w") as out:
                out.write(value)
            files[secret_id] = path
        yield files
    finally:
        for path in files.values():
            path.unlink(missing_ok=True)


def build_variant_stage(plan: ReleasePlan, v: VariantPlan, stage: Stage, *, run_id: str,
                        base_ref: str | None, log: Log) -> dict[str, str]:
    """Export the source at the commit, build one stage, push it; kind → ``repo@sha256:…``."""
    config = plan.config
    registry = registry_for(config.cache_registry)
    retrying = config.retry.retrying(log)
    logins = cache_logins(config, registry, retrying)
    with tempfile.TemporaryDirectory(prefix="rocm-nightly-build-") as tmp, \
            _secret_files(config.build.secrets, Path(tmp) / "secrets") as secrets, \
            docker_session(docker_host(config), logins, retrying) as env:
        source = Path(tmp) / "src"
        _mirror(config.project, plan.git_url).export(plan.commit, source)
        inputs = StageInputs(
            context=source, base_dockerfile=config.project.base_dockerfile, dockerfile=config.project.dockerfile,
            targets=config.project.targets.model_dump(), network=config.build.network, run_id=run_id,
            secrets=secrets, base_digest=None if stage == "base" or base_ref is None else digest_of(base_ref),
        )
        return build_stage(plan=plan, v=v, stage=stage, inputs=inputs, registry=registry, env=env, log=log)


# --------------------------------------------------------------------------- publishing


def push_variant_images(plan: ReleasePlan, v: VariantPlan, refs: dict[str, str], log: Log) -> PushedImages:
    """Cache tags on the four digests, then the release and base images copied to the public registry."""
    config = plan.config
    retrying = config.retry.retrying(log)
    cache_blobs = retrying("login to the cache registry", partial(blob_registry_for, config.cache_registry))
    public = retrying("login to the public registry", partial(blob_registry_for, config.public_registry))
    return push_images(plan=plan, v=v, refs=refs, cache=registry_for(config.cache_registry), cache_blobs=cache_blobs,
                       public=public, log=log, retrying=retrying)


def publish_variant_wheels(plan: ReleasePlan, v: VariantPlan, refs: Mapping[str, str],
                           log: Log) -> list[PublishedFile]:
    """The base wheels into their shared folder (once per base: skipped when it is published already), then the
    project's wheels into ``<store>/<commit>/<variant>/`` with pages linking both: verified, re-tagged and their
    platform tag checked (all of them before anything is uploaded), index last."""
    retrying = plan.config.retry.retrying(log)
    conn = plan.config.wheel_store.connection_id
    images = {IMAGES_META[kind]: digest_of(refs[kind]) for kind in ("wheels", "base_wheels")}
    done = retrying(f"check of {v.wheels_url}", partial(already_published, store_root(v.wheels_url, conn),
                                                         v.wheels_url, images))
    if done is not None:
        log(f"{v.wheels_url}: published from these two wheels images already and verified (HEAD): nothing read or "
            "uploaded")
        return done
    registry = retrying("login to the cache registry", partial(blob_registry_for, plan.config.cache_registry))
    base_url = base_wheels_prefix(plan.store_url, v.base_key, v.name, digest_of(refs["base_wheels"]))
    base_folder = store_root(base_url, conn)
    observed = retrying(f"check of {base_url}", partial(observe_published, base_folder, base_url))
    with tempfile.TemporaryDirectory(prefix="rocm-nightly-wheels-") as tmp:
        base_wheels: list[Path] = []
        if observed.present:
            log(f"{v.name} base wheels: {base_url} is published already, not read or uploaded again")
        else:
            base_wheels = _wheels_of(plan, v, registry, refs["base_wheels"], Path(tmp) / "base", log)
        wheels = _wheels_of(plan, v, registry, refs["wheels"], Path(tmp) / "wheels", log)
        base_files = publish_wheels(base_wheels, base_folder, base_url, log, retrying) if base_wheels else []
        base = retrying(f"read of {base_url}", partial(read_published, base_folder, base_url))
        if base is None:
            raise NotPublished(f"{base_url}: its index vanished right after it was checked")
        base_links = [link.model_copy(update={"href": wheel_href(relative_prefix(base_url, v.wheels_url + link.project),
                                                                  link.filename)}) for link in base.links]
        folder = store_root(v.wheels_url, conn)
        # The nightly index may link this folder's files: replaced bytes take it down and back up.
        aliases = [(store_root(v.nightly_wheels_url, conn), v.nightly_wheels_url)]

        def withdraw() -> None:
            retrying(f"withdrawal of the aliases of {v.wheels_url}",
                     partial(withdraw_aliases_of, v.wheels_url, aliases, log))

        published = publish_wheels(wheels, folder, v.wheels_url, log, retrying, before_replace=withdraw,
                                   linked=base_links, root_meta=images)
        retrying(f"restoring the aliases of {v.wheels_url}",
                 partial(restore_aliases_of, folder, v.wheels_url, aliases, log))
        return [*published, *_files_linked(base_folder, base_url, base.links, base_files)]


IMAGES_META = {"wheels": "wheels-image", "base_wheels": "base-wheels-image"}  # root page meta: where from


def already_published(folder: StorePath, url: str, images: Mapping[str, str]) -> list[PublishedFile] | None:
    """The files of ``folder`` when it is a verified publication (HEAD-class checks only) made from exactly
    ``images`` (its root page's meta tags name them); None when it must be published."""
    try:
        current = read_published(folder, url)
    except IndexPageError:  # a page missing or broken: not a publication, published again
        return None
    if current is None or any(current.meta.get(key) != value for key, value in images.items()):
        return None
    if not observe_published(folder, url).present:
        return None
    return _files_linked(folder, url, current.links)


def _files_linked(folder: StorePath, url: str, links: Iterable[PublishedLink],
                  uploaded: Iterable[PublishedFile] = ()) -> list[PublishedFile]:
    """A PublishedFile per link of a page in ``folder`` (size by HEAD); ``uploaded``: those just uploaded."""
    now = {f.filename: f for f in uploaded}
    files = []
    for link in links:
        if link.filename in now:
            files.append(now[link.filename])
            continue
        found = linked_file(folder, url, IndexLink(href=link.href, filename=link.filename, sha256=link.sha256))
        stored = stat_or_none(found[0], link.filename, found[1]) if found else None
        name, version, _, _ = parse_wheel_filename(link.filename)
        files.append(PublishedFile(filename=link.filename, sha256=link.sha256, size=stored.size if stored else 0,
                                   project=str(name), version=str(version), requires_python=link.requires_python,
                                   uploaded=False))
    return files


def read_wheels_image(plan: ReleasePlan, registry: LabelledBlobSource, ref: str, folder: Path,
                      log: Log) -> list[DistFile]:
    """/dist of a wheels image in the cache into ``folder``, checked against its sums label too. One read,
    retried whole through outages: each file is rewritten from its start."""
    retrying = plan.config.retry.retrying(log)
    return retrying(f"read of /dist of {ref}", partial(
        read_labelled_dist, registry, plan.cache_repository, digest_of(ref), sink=file_sink(folder)))


def _wheels_of(plan: ReleasePlan, v: VariantPlan, registry: LabelledBlobSource, ref: str, folder: Path,
               log: Log) -> list[Path]:
    """/dist of a wheels image, read and verified, re-tagged for the variant's platform and checked against it
    (auditwheel: a tag too low for the glibc the ELF files need is fatal), in ``folder``."""
    raw, tagged = folder / "raw", folder / "tagged"
    raw.mkdir(parents=True)
    tagged.mkdir()
    files = read_wheels_image(plan, registry, ref, raw, log)
    log(f"{v.name} {ref}: verified {', '.join(f.name for f in files)}")
    wheels = [retag_platform(p, v.variant.platform_tag, tagged) for p in sorted(raw.glob("*.whl"))]
    for wheel in wheels:
        check_platform_tag(wheel, v.variant.platform_tag)
    return wheels


def promote_variant(plan: ReleasePlan, v: VariantPlan, digests: Mapping[str, str], log: Log) -> dict[str, Any]:
    """Move the nightly aliases (public image tags, ``nightly/<variant>/``) if this run may, only forwards,
    each only if it still points where it pointed when the move was decided (else AliasMoved)."""
    mirrors: list[GitMirror] = []

    def on_branch() -> bool:
        mirrors.append(_mirror(plan.config.project, plan.git_url))
        return mirrors[0].on_branch(plan.commit, plan.branch)

    allowed = may_promote(plan, on_branch=on_branch)
    if not allowed.move:
        log(f"{v.name}: not promoting: {allowed.why}")
        return {"promoted": False, "why": allowed.why}
    retrying = plan.config.retry.retrying(log)
    decide = _forwards_on(mirrors[0], plan.commit)
    images = _promote_images(plan, v, digests, decide, retrying, log)
    wheels = _promote_wheels(plan, v, decide, retrying, log)
    result: dict[str, Any] = {"promoted": images.move or wheels.move,
                              "why": f"images: {images.why}; wheels: {wheels.why}"}
    if images.move:
        result["images"] = True
    if wheels.move:
        result["wheels"] = True
    return result


def _forwards_on(mirror: GitMirror, ours: str) -> Callable[[str | None], Verdict]:
    """``forwards(current, ours)`` answered from this host's mirror."""

    def commit_time(sha: str) -> datetime | None:
        try:
            return mirror.commit_time(sha)
        except SourceError:
            return None

    def is_ancestor(old: str, new: str) -> bool:
        try:
            return mirror.is_ancestor(old, new)
        except SourceError:
            return False

    return lambda current: forwards(current, ours, is_ancestor=is_ancestor, commit_time=commit_time)


def _promote_images(plan: ReleasePlan, v: VariantPlan, digests: Mapping[str, str],
                    moves: Callable[[str | None], Verdict], retrying: Retrying, log: Log) -> Verdict:
    """The public ``nightly`` and ``base-nightly`` tags, moved to this run's digests if that is forwards,
    each only from the digest it had when the move was decided (``move_alias``)."""
    public = registry_for(plan.config.public_registry)
    repo, tags = plan.public_repository, v.public_tags
    seen = {tag: retrying(f"look-up of {plan.public_ref(tag)}", partial(alias_state, public, repo, tag))
            for tag in (tags.nightly, tags.base_nightly)}
    images = moves(seen[tags.nightly].commit)
    log(f"{v.name} images: {images.why}")
    if images.move:
        for tag, digest in ((tags.nightly, digests["release"]), (tags.base_nightly, digests["base"])):
            retrying(f"tag {plan.public_ref(tag)}", partial(move_alias, public, repo, tag,
                                                             expected=seen[tag].digest, digest=digest, log=log))
    return images


def _promote_wheels(plan: ReleasePlan, v: VariantPlan, moves: Callable[[str | None], Verdict],
                    retrying: Retrying, log: Log) -> Verdict:
    """The ``nightly/<variant>/`` index, pointed at this run's publication if that is forwards, only from
    the commit it named when the move was decided (``move_nightly_index``)."""
    conn = plan.config.wheel_store.connection_id
    alias = store_root(v.nightly_wheels_url, conn)
    current = retrying(f"read of {v.nightly_wheels_url}", partial(alias_commit, alias, v.nightly_wheels_url))
    wheels = moves(current)
    log(f"{v.name} wheels: {wheels.why}")
    if wheels.move:
        retrying(f"move of {v.nightly_wheels_url}", partial(
            move_nightly_index, store_root(v.wheels_url, conn), v.wheels_url, alias, v.nightly_wheels_url,
            expected_commit=current, commit=plan.commit, variant=v.name, log=log))
    return wheels


# --------------------------------------------------------------------------- the report


def image_sizes(plan: ReleasePlan, digests: Mapping[str, str], log: Log | None = None) -> dict[str, int]:
    """Compressed size of each image: the sum of its config and layer sizes from the manifest."""
    registry = registry_for(plan.config.cache_registry)
    retrying = plan.config.retry.retrying(log or _LOG.warning)
    sizes = {}
    for kind, digest in digests.items():
        manifest = retrying(f"read of {plan.cache_ref(digest)}", partial(registry.manifest, plan.cache_repository,
                                                                         digest))
        doc = json.loads(manifest.raw)
        sizes[kind] = int(doc.get("config", {}).get("size", 0)) + sum(int(x.get("size", 0))
                                                                       for x in doc.get("layers", []))
    return sizes


def store_report(plan: ReleasePlan, report: dict[str, Any], markdown: str, log: Log | None = None, *,
                 keep_existing: bool = False) -> bool:
    """``<store>/<commit>/RELEASE.md`` and ``RELEASE.json``, each written whole (retried through outages).
    ``keep_existing``: write nothing when ``RELEASE.json`` is there already. True when written."""
    where = f"{plan.store_url}/{plan.commit}/"
    folder = writable(store_root(where, plan.config.wheel_store.connection_id), where)
    retrying = plan.config.retry.retrying(log or _LOG.warning)
    if keep_existing and retrying(f"check of {where}RELEASE.json",
                                  partial(stat_or_none, folder, "RELEASE.json", where + "RELEASE.json")):
        return False
    for name, text in (("RELEASE.json", to_json(report)), ("RELEASE.md", markdown)):
        retrying(f"write of {where}{name}", partial(write_atomic, folder, (name,), [text.encode("utf-8")], where))
    return True
