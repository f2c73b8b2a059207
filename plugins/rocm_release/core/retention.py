"""Retention: which per-commit tags, bases and wheel folders to keep, and deleting the rest.

The rules (REFERENCE_PIPELINE.md §1 "Retention", §2.6, §2.11), each explained in the plan:

* **Exact patterns, never prefixes.** A tag is ours only when it matches one of the exact
  regexes of ``plan.py`` for a configured variant (``cache_tag_regexes``, ``tag_regex``).
  ``nightly-<sha>-rocm7100`` is not a ``rocm710`` tag. A tag that matches no pattern (another
  variant, a hand-pushed tag) is never touched: it is reported as "unknown, kept". A tag that
  matches two patterns is ambiguous and kept too.
* **The newest N commits by push time, never by name.** A commit's time is the newest push time
  among its per-commit tags (cache ``<commit>-<variant>[-wheels]``, public
  ``[base-]nightly-<commit>-<variant>``) in every repository; a commit known only from its wheel
  folder takes the folder's newest file time. Commits tied on push time at the boundary are all
  kept: a tie is never broken by name. A commit with no time at all cannot be ordered and is kept.
  A kept commit keeps everything: its tags in both registries and ``<store>/<commit>/``.
* **Never what a nightly alias points to.** ``nightly-<variant>`` and ``base-nightly-<variant>``
  themselves are never deleted; the commit whose release image ``nightly-<variant>`` points to (by
  digest), and the commit that ``<store>/nightly/<variant>/`` names, are kept whatever their age;
  the base whose digest ``base-nightly-<variant>`` points to is kept. ``<store>/nightly/`` is never
  deleted.
* **Never a base in use.** A base unit (``<key>-<variant>-base`` and ``-base-wheels``, by key) is
  kept when a kept wheels or release image was built on it — read from that image's labels
  (``dev.rocm-nightly.base-key``/``base-digest``), once per distinct digest, for kept commits only —
  and the newest base of each variant is kept (the next night may reuse it even if no image was
  built on it yet). A kept image without those labels keeps every base of its variant.
* **Registries that delete by digest** (the OCI Distribution API) delete every tag on a digest, so
  a tag that shares its digest with a kept tag is kept there (and the reason says so); ECR deletes
  tags, so there an old per-commit tag goes even when its image stays.

``plan_retention`` is pure: it takes what was listed and returns a :class:`RetentionPlan` with one
:class:`RetentionDecision` per tag and folder. Listing, reading labels and deleting are
:mod:`rocm_release.adapters.retention`'s.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field

from rocm_release.core.config import PublicTagPatterns
from rocm_release.core.frozen import Frozen
from rocm_release.core.names import SHA_RE
from rocm_release.core.plan import LABEL_BASE_DIGEST, LABEL_BASE_KEY, cache_tag_regexes, tag_regex
from rocm_release.core.registry import TagInfo

Role = Literal["cache", "public"]
TagKind = Literal[
    "base", "base_wheels", "wheels", "release", "nightly", "nightly_commit", "base_nightly", "base_nightly_commit"
]
DecisionKind = Literal[
    "base", "base_wheels", "wheels", "release", "nightly", "nightly_commit", "base_nightly", "base_nightly_commit",
    "commit_folder", "nightly_folder", "unknown", "ambiguous",
]

PER_COMMIT_KINDS: frozenset[str] = frozenset({"wheels", "release", "nightly_commit", "base_nightly_commit"})
BASE_KINDS: frozenset[str] = frozenset({"base", "base_wheels"})
ALIAS_KINDS: frozenset[str] = frozenset({"nightly", "base_nightly"})
BUILT_KINDS: frozenset[str] = frozenset({"wheels", "release"})  # images built on a base
NIGHTLY_FOLDER = "nightly"
MAX_NAMES = 3  # names quoted in one reason before "and N more"


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Repository:
    """One repository the plan covers: which patterns apply (its roles) and how it deletes."""

    registry: str
    repository: str
    roles: tuple[Role, ...]
    deletes_by_digest: bool

    @property
    def location(self) -> str:
        """``host/repository``: how decisions name it."""
        return f"{self.registry}/{self.repository}"


@dataclass(frozen=True)
class RepositoryTags:
    """Every tag of one repository as listed (``pushed_at`` where the registry knows it)."""

    repository: Repository
    tags: tuple[TagInfo, ...]


@dataclass(frozen=True)
class WheelFolder:
    """An entry directly under the store root; ``modified_at`` only when it was read."""

    name: str
    modified_at: datetime | None = None


@dataclass(frozen=True)
class RetentionInputs:
    """Everything ``plan_retention`` decides on. ``nightly_folders``: alias folder → commit it names."""

    repositories: tuple[RepositoryTags, ...]
    wheel_folders: tuple[WheelFolder, ...]
    store_url: str
    keep_commits: int
    variants: tuple[str, ...]
    public_tags: PublicTagPatterns
    nightly_folders: Mapping[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.keep_commits < 1:
            raise ValueError(f"keep_commits must be >= 1, got {self.keep_commits}")
        if not self.variants:
            raise ValueError("retention needs at least one variant")


@dataclass(frozen=True)
class BaseUse:
    """What a built image's labels say about the base it was built on."""

    base_key: str | None
    base_digest: str | None


@dataclass(frozen=True)
class ImageToInspect:
    """A kept wheels/release image whose labels name its base."""

    location: str
    repository: str
    tag: str
    digest: str
    variant: str
    commit: str


# --------------------------------------------------------------------------- the plan


class RetentionDecision(Frozen):
    """Delete or keep one tag or wheel folder, and why."""

    action: Literal["delete", "keep"]
    target: Literal["tag", "folder"]
    location: str  # host/repository for a tag, the store URL for a folder
    name: str
    kind: DecisionKind
    digest: str | None = None
    variant: str | None = None
    commit: str | None = None
    base_key: str | None = None
    reason: str = ""

    @property
    def reference(self) -> str:
        """``host/repo:tag`` or ``<store>/<folder>/``."""
        if self.target == "tag":
            return f"{self.location}:{self.name}"
        return f"{self.location.rstrip('/')}/{self.name}/"

    def line(self, *, dry_run: bool = False) -> str:
        """One line of the report."""
        verb = ("WOULD DELETE" if dry_run else "DELETE") if self.action == "delete" else "KEEP"
        digest = f" ({self.digest[:19]}…)" if self.digest else ""
        return f"{verb:<12} {self.target:<6} {self.reference}{digest} — {self.reason}"


class CommitRank(Frozen):
    """One commit: its push time, its place among the commits (newest first) and the verdict."""

    commit: str
    pushed_at: datetime | None
    rank: int | None
    keep: bool
    reasons: tuple[str, ...]

    def line(self) -> str:
        """One line of the report."""
        rank = f"#{self.rank}" if self.rank is not None else "#?"
        when = self.pushed_at.isoformat() if self.pushed_at else "no push time"
        verdict = "keep" if self.keep else "delete"
        return f"{rank:>6} {self.commit} {when:<32} {verdict:<6} — {'; '.join(self.reasons)}"


class RetentionPlan(Frozen):
    """Every decision of one retention run, with the commit ranking they follow from."""

    keep_commits: int = Field(ge=1)
    commits: tuple[CommitRank, ...]
    decisions: tuple[RetentionDecision, ...]

    @property
    def delete(self) -> list[RetentionDecision]:
        """What goes, in plan order."""
        return [d for d in self.decisions if d.action == "delete"]

    @property
    def keep(self) -> list[RetentionDecision]:
        """What stays, with the reason."""
        return [d for d in self.decisions if d.action == "keep"]

    def summary(self) -> dict[str, int]:
        """Counts for logs and the task's XCom."""
        count: defaultdict[str, int] = defaultdict(int)
        for d in self.decisions:
            count[f"{d.target}s_{'deleted' if d.action == 'delete' else 'kept'}"] += 1
            if d.kind in ("unknown", "ambiguous"):
                count["unknown_kept"] += 1
        return {
            "commits": len(self.commits),
            "commits_kept": sum(1 for c in self.commits if c.keep),
            "commits_deleted": sum(1 for c in self.commits if not c.keep),
            "tags_deleted": count["tags_deleted"],
            "tags_kept": count["tags_kept"],
            "folders_deleted": count["folders_deleted"],
            "folders_kept": count["folders_kept"],
            "unknown_kept": count["unknown_kept"],
        }

    def render(self, *, dry_run: bool) -> str:
        """The whole plan as text: the commit ranking, then every decision with its reason."""
        s = self.summary()
        head = "DRY RUN: nothing is deleted. " if dry_run else ""
        lines = [
            f"{head}Retention keeps the newest {self.keep_commits} commits by push time, every commit a "
            "nightly alias names, every base a kept image was built on, the newest base of each variant, "
            "and every tag that matches no exact pattern.",
            f"commits: {s['commits']} ({s['commits_kept']} kept, {s['commits_deleted']} deleted); "
            f"tags: {s['tags_deleted']} {'to delete' if dry_run else 'deleted'}, {s['tags_kept']} kept "
            f"({s['unknown_kept']} unknown); wheel folders: {s['folders_deleted']} "
            f"{'to delete' if dry_run else 'deleted'}, {s['folders_kept']} kept",
            "",
            "Commits, newest push first:",
            *(c.line() for c in self.commits),
            "",
            "Tags and wheel folders:",
            *(d.line(dry_run=dry_run) for d in self.delete),
            *(d.line(dry_run=dry_run) for d in self.keep),
        ]
        return "\n".join(lines)


# --------------------------------------------------------------------------- planning (pure)


@dataclass(frozen=True)
class _Tag:
    """A listed tag with what its exact pattern says about it."""

    repo: Repository
    info: TagInfo
    kind: TagKind | None  # None: unknown or ambiguous (see ``note``)
    variant: str | None = None
    commit: str | None = None
    key: str | None = None
    note: str = ""
    ambiguous: bool = False

    @property
    def name(self) -> str:
        return self.info.tag


@dataclass
class _Analysis:
    tags: list[_Tag]
    ranks: dict[str, CommitRank]

    @property
    def kept_commits(self) -> set[str]:
        return {c for c, r in self.ranks.items() if r.keep}


def _utc(when: datetime | None) -> datetime | None:
    if when is None:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _names(names: Iterable[str]) -> str:
    unique = sorted(set(names))
    shown = ", ".join(unique[:MAX_NAMES])
    return shown + (f" and {len(unique) - MAX_NAMES} more" if len(unique) > MAX_NAMES else "")


def _matchers(inputs: RetentionInputs) -> dict[Role, list[tuple[TagKind, str, re.Pattern[str]]]]:
    """The exact regexes of every configured variant, by the role of the repository they apply to."""
    cache: list[tuple[TagKind, str, re.Pattern[str]]] = []
    public: list[tuple[TagKind, str, re.Pattern[str]]] = []
    p = inputs.public_tags
    for v in inputs.variants:
        regexes = cache_tag_regexes(v)
        cache += [("base", v, regexes["base"]), ("base_wheels", v, regexes["base_wheels"]),
                  ("wheels", v, regexes["wheels"]), ("release", v, regexes["release"])]
        public += [("nightly", v, tag_regex(p.nightly, v)), ("nightly_commit", v, tag_regex(p.nightly_commit, v)),
                   ("base_nightly", v, tag_regex(p.base_nightly, v)),
                   ("base_nightly_commit", v, tag_regex(p.base_nightly_commit, v))]
    return {"cache": cache, "public": public}


def _classify(inputs: RetentionInputs) -> list[_Tag]:
    matchers = _matchers(inputs)
    found: list[_Tag] = []
    for listing in inputs.repositories:
        repo = listing.repository
        patterns = [m for role in repo.roles for m in matchers[role]]
        for info in listing.tags:
            hits = [(kind, v, m) for kind, v, regex in patterns if (m := regex.match(info.tag))]
            if not hits:
                found.append(_Tag(repo, info, None, note="matches no pattern of the configured variants "
                                                         f"({', '.join(inputs.variants)}): unknown, never touched"))
            elif len(hits) > 1:
                what = ", ".join(f"{kind} of {v}" for kind, v, _ in hits)
                found.append(_Tag(repo, info, None, note=f"matches several patterns ({what}): ambiguous, kept",
                                  ambiguous=True))
            else:
                kind, v, m = hits[0]
                groups = m.groupdict()
                found.append(_Tag(repo, info, kind, v, groups.get("commit"), groups.get("key")))
    return found


def _analyse(inputs: RetentionInputs) -> _Analysis:
    """Classify every tag and rank every commit (newest push first)."""
    tags = _classify(inputs)
    stamps: dict[str, list[datetime]] = {}  # commit → every push time known for it (maybe none)
    for t in tags:
        if t.kind in PER_COMMIT_KINDS and t.commit:
            found = stamps.setdefault(t.commit, [])
            if (when := _utc(t.info.pushed_at)) is not None:
                found.append(when)
    for folder in inputs.wheel_folders:
        if SHA_RE.match(folder.name):
            found = stamps.setdefault(folder.name, [])
            if (when := _utc(folder.modified_at)) is not None:
                found.append(when)
    times = {commit: max(found) if found else None for commit, found in stamps.items()}

    protected: dict[str, list[str]] = defaultdict(list)
    store = inputs.store_url.rstrip("/")
    for alias, commit in sorted(inputs.nightly_folders.items()):
        if commit:
            protected[commit].append(f"{store}/{NIGHTLY_FOLDER}/{alias}/ names it")
    released: dict[tuple[str, str], set[str]] = defaultdict(set)  # (variant, digest) → commits
    for t in tags:
        if t.kind in ("release", "nightly_commit") and t.commit and t.variant:
            released[(t.variant, t.info.digest)].add(t.commit)
    for t in tags:
        if t.kind == "nightly" and t.variant:
            for commit in released.get((t.variant, t.info.digest), ()):
                protected[commit].append(f"{t.repo.location}:{t.name} points to its release image")

    dated = {c: when for c, when in times.items() if when is not None}
    timed = sorted(dated, key=lambda c: c)
    timed.sort(key=lambda c: dated[c], reverse=True)  # newest first; equal times keep name order (display only)
    ranks: dict[str, CommitRank] = {}
    boundary = dated[timed[inputs.keep_commits - 1]] if len(timed) >= inputs.keep_commits else None
    for rank, commit in enumerate(timed, start=1):
        when = dated[commit]
        reasons: list[str] = []
        if rank <= inputs.keep_commits:
            reasons.append(f"#{rank} of the newest {inputs.keep_commits} by push time")
        elif boundary is not None and when == boundary:
            reasons.append(f"#{rank} by push time, tied with #{inputs.keep_commits} (same push time): "
                           "a tie at the boundary is kept, never broken by name")
        reasons += protected.get(commit, [])
        if reasons:
            ranks[commit] = CommitRank(commit=commit, pushed_at=when, rank=rank, keep=True, reasons=tuple(reasons))
        else:
            ranks[commit] = CommitRank(
                commit=commit, pushed_at=when, rank=rank, keep=False,
                reasons=(f"#{rank} by push time; only the newest {inputs.keep_commits} are kept",))
    for commit in sorted(c for c, when in times.items() if when is None):
        ranks[commit] = CommitRank(
            commit=commit, pushed_at=None, rank=None, keep=True,
            reasons=("no push time is known for any of its tags or its wheel folder: it cannot be ordered, kept",
                     *protected.get(commit, [])))
    for commit, why in protected.items():  # an alias may name a commit nothing else knows: say so
        if commit not in ranks:
            ranks[commit] = CommitRank(commit=commit, pushed_at=None, rank=None, keep=True,
                                       reasons=(*why, "it has no tag or wheel folder here"))
    return _Analysis(tags, ranks)


def commits_without_push_time(inputs: RetentionInputs) -> set[str]:
    """Commits that no tag dates: ``observe_retention`` reads the file times of their wheel folders."""
    analysis = _analyse(inputs)
    return {c for c, r in analysis.ranks.items() if r.pushed_at is None}


def images_to_inspect(inputs: RetentionInputs) -> list[ImageToInspect]:
    """The kept commits' wheels and release images in the cache repository, one per distinct digest."""
    analysis = _analyse(inputs)
    kept = analysis.kept_commits
    seen: set[tuple[str, str]] = set()
    found: list[ImageToInspect] = []
    for t in analysis.tags:
        if t.kind in BUILT_KINDS and t.commit in kept and "cache" in t.repo.roles and t.variant and t.commit:
            if (t.repo.location, t.info.digest) in seen:
                continue
            seen.add((t.repo.location, t.info.digest))
            found.append(ImageToInspect(t.repo.location, t.repo.repository, t.name, t.info.digest, t.variant,
                                        t.commit))
    return found


def plan_retention(inputs: RetentionInputs, base_use: Mapping[str, BaseUse | None]) -> RetentionPlan:
    """Decide every tag and wheel folder. ``base_use``: digest → labels of each ``images_to_inspect`` image
    (None when they name no base)."""
    analysis = _analyse(inputs)
    kept = analysis.kept_commits
    ranks = analysis.ranks
    decisions: list[RetentionDecision] = []
    base_reasons = _base_reasons(analysis, base_use)

    def commit_reason(commit: str) -> str:
        r = ranks[commit]
        when = r.pushed_at.isoformat() if r.pushed_at else "no push time"
        return f"commit {commit[:12]} ({when}): {'; '.join(r.reasons)}"

    for t in analysis.tags:
        common: dict[str, Any] = {"target": "tag", "location": t.repo.location, "name": t.name,
                                  "digest": t.info.digest, "variant": t.variant}
        if t.kind is None:
            kind: DecisionKind = "ambiguous" if t.ambiguous else "unknown"
            decisions.append(RetentionDecision(action="keep", kind=kind, reason=t.note, **common))
        elif t.kind in ALIAS_KINDS:
            decisions.append(RetentionDecision(action="keep", kind=t.kind, reason="a nightly alias: never deleted",
                                               **common))
        elif t.kind in PER_COMMIT_KINDS:
            assert t.commit is not None
            action: Literal["delete", "keep"] = "keep" if t.commit in kept else "delete"
            decisions.append(RetentionDecision(action=action, kind=t.kind, commit=t.commit,
                                               reason=commit_reason(t.commit), **common))
        else:  # a base unit
            assert t.variant is not None and t.key is not None
            keep, why = base_reasons[(t.variant, t.key)]
            decisions.append(RetentionDecision(action="keep" if keep else "delete", kind=t.kind, base_key=t.key,
                                      reason=why, **common))

    store = inputs.store_url.rstrip("/")
    for folder in sorted(inputs.wheel_folders, key=lambda f: f.name):
        common = {"target": "folder", "location": store, "name": folder.name}
        if folder.name == NIGHTLY_FOLDER:
            decisions.append(RetentionDecision(action="keep", kind="nightly_folder",
                                      reason="the nightly alias folder: never deleted", **common))
        elif SHA_RE.match(folder.name):
            action = "keep" if folder.name in kept else "delete"
            decisions.append(RetentionDecision(action=action, kind="commit_folder", commit=folder.name,
                                      reason=commit_reason(folder.name), **common))
        else:
            decisions.append(RetentionDecision(action="keep", kind="unknown",
                                      reason="not a commit folder: unknown, never touched", **common))
    decisions = _keep_shared_digests(inputs, decisions)
    commits = sorted(ranks.values(), key=lambda r: (r.rank is None, r.rank or 0, r.commit))
    return RetentionPlan(keep_commits=inputs.keep_commits, commits=tuple(commits), decisions=tuple(decisions))


def _base_reasons(
    analysis: _Analysis, base_use: Mapping[str, BaseUse | None]
) -> dict[tuple[str, str], tuple[bool, str]]:
    """(variant, key) → (keep?, why) for every base unit in the cache repository."""
    kept = analysis.kept_commits
    units: dict[tuple[str, str], list[_Tag]] = defaultdict(list)
    for t in analysis.tags:
        if t.kind in BASE_KINDS and t.variant and t.key:
            units[(t.variant, t.key)].append(t)
    by_key: dict[tuple[str, str], list[str]] = defaultdict(list)
    by_digest: dict[str, list[str]] = defaultdict(list)
    unlabelled: dict[str, list[str]] = defaultdict(list)
    for t in analysis.tags:
        if not (t.kind in BUILT_KINDS and t.commit in kept and "cache" in t.repo.roles and t.variant):
            continue
        if t.info.digest not in base_use:
            raise ValueError(f"the labels of {t.repo.location}:{t.name} ({t.info.digest}) were not read; "
                             "read every image that images_to_inspect() names")
        use = base_use[t.info.digest]
        if use is None or (use.base_key is None and use.base_digest is None):
            unlabelled[t.variant].append(t.name)
            continue
        if use.base_key:
            by_key[(t.variant, use.base_key)].append(t.name)
        if use.base_digest:
            by_digest[use.base_digest].append(t.name)
    aliases: dict[str, list[str]] = defaultdict(list)
    for t in analysis.tags:
        if t.kind == "base_nightly":
            aliases[t.info.digest].append(f"{t.repo.location}:{t.name}")

    times: dict[tuple[str, str], datetime | None] = {}
    for unit, members in units.items():
        stamps = [w for m in members if (w := _utc(m.info.pushed_at)) is not None]
        times[unit] = max(stamps) if stamps else None
    newest: dict[str, tuple[str, datetime]] = {}
    for (variant, key), when in times.items():
        if when is not None and (variant not in newest or when > newest[variant][1]):
            newest[variant] = (key, when)

    verdicts: dict[tuple[str, str], tuple[bool, str]] = {}
    for unit, members in units.items():
        variant, key = unit
        digests = {m.info.digest for m in members}
        reasons: list[str] = []
        if by_key.get(unit):
            reasons.append(f"kept image(s) {_names(by_key[unit])} were built on it ({LABEL_BASE_KEY})")
        named = [n for d in digests for n in by_digest.get(d, [])]
        if named:
            reasons.append(f"kept image(s) {_names(named)} name its digest ({LABEL_BASE_DIGEST})")
        pointed = [a for d in digests for a in aliases.get(d, [])]
        if pointed:
            reasons.append(f"{_names(pointed)} points to it")
        if unlabelled.get(variant):
            reasons.append(f"kept image(s) {_names(unlabelled[variant])} of {variant} carry no base labels: "
                           f"every base of {variant} is kept")
        when = times[unit]
        if when is None:
            reasons.append("no push time: cannot tell whether it is the newest base, kept")
        elif newest[variant][0] == key or when == newest[variant][1]:
            reasons.append(f"the newest base of {variant} (pushed {when.isoformat()}): the next night may reuse it")
        if reasons:
            verdicts[unit] = (True, f"base {key} of {variant}: {'; '.join(reasons)}")
        else:
            top_key, top_when = newest[variant]
            verdicts[unit] = (False, f"base {key} of {variant} (pushed {when.isoformat() if when else '?'}): "
                                     "no kept wheels/release image was built on it, no base-nightly alias points "
                                     f"to it, and {top_key} (pushed {top_when.isoformat()}) is newer")
    return verdicts


def _keep_shared_digests(inputs: RetentionInputs, decisions: list[RetentionDecision]) -> list[RetentionDecision]:
    """Where the registry deletes by digest, a doomed tag sharing a digest with a kept tag stays."""
    by_digest = {r.repository.location for r in inputs.repositories if r.repository.deletes_by_digest}
    kept_digest: dict[tuple[str, str], str] = {}
    for d in decisions:
        if d.target == "tag" and d.action == "keep" and d.location in by_digest and d.digest:
            kept_digest.setdefault((d.location, d.digest), d.name)
    result = []
    for d in decisions:
        other = kept_digest.get((d.location, d.digest or "")) if d.action == "delete" else None
        if other is not None:
            d = d.model_copy(update={
                "action": "keep",
                "reason": f"{d.reason} — but kept: it shares its digest with kept tag {other}, and this registry "
                          f"deletes by digest, which would delete {other} too"})
        result.append(d)
    return result
