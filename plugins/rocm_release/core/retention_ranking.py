"""Classifying every listed tag by the exact patterns, and ranking the commits by push time.

The rules are :mod:`rocm_release.core.retention`'s: exact patterns, never prefixes; the newest N
commits by push time, ties at the boundary kept, a commit without a time kept; a commit a nightly
alias names kept whatever its age.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from rocm_release.core.names import SHA_RE
from rocm_release.core.plan import cache_tag_regexes, tag_regex
from rocm_release.core.registry import TagInfo
from rocm_release.core.retention_model import (
    BUILT_KINDS,
    NIGHTLY_FOLDER,
    PER_COMMIT_KINDS,
    CommitRank,
    RecentWindow,
    Repository,
    RetentionInputs,
    Role,
    RunInUse,
    TagKind,
    WheelFolder,
)

Matcher = tuple[TagKind, str, re.Pattern[str]]  # kind, variant, exact regex


@dataclass(frozen=True)
class ListedTag:
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
class Analysis:
    """Every listed tag classified, and every commit ranked with its verdict; the runs in progress and the
    window of recent pushes that the verdicts on bases and untagged images also follow."""

    tags: list[ListedTag]
    ranks: dict[str, CommitRank]
    runs: tuple[RunInUse, ...] = ()
    recent: RecentWindow | None = None

    @property
    def kept_commits(self) -> set[str]:
        return {c for c, r in self.ranks.items() if r.keep}

    def kept_built_images(self) -> Iterator[ListedTag]:
        """The kept commits' wheels and release images in the cache repository: their labels name their base."""
        kept = self.kept_commits
        for t in self.tags:
            if t.kind in BUILT_KINDS and t.commit in kept and "cache" in t.repo.roles and t.variant:
                yield t


def as_utc(when: datetime | None) -> datetime | None:
    """``when`` with a time zone (a naive time is UTC)."""
    if when is None:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- classifying


def _matchers(inputs: RetentionInputs) -> dict[Role, list[Matcher]]:
    """The exact regexes of every configured variant, by the role of the repository they apply to."""
    cache: list[Matcher] = []
    public: list[Matcher] = []
    p = inputs.public_tags
    for v in inputs.variants:
        regexes = cache_tag_regexes(v)
        cache += [("base", v, regexes["base"]), ("base_wheels", v, regexes["base_wheels"]),
                  ("wheels", v, regexes["wheels"]), ("release", v, regexes["release"])]
        public += [("nightly", v, tag_regex(p.nightly, v)), ("nightly_commit", v, tag_regex(p.nightly_commit, v)),
                   ("base_nightly", v, tag_regex(p.base_nightly, v)),
                   ("base_nightly_commit", v, tag_regex(p.base_nightly_commit, v))]
    return {"cache": cache, "public": public}


def _classify_tag(repo: Repository, info: TagInfo, patterns: list[Matcher], variants: tuple[str, ...]) -> ListedTag:
    """What the one pattern ``info`` matches says about it; unknown when none does, ambiguous when several do."""
    hits = [(kind, v, m) for kind, v, regex in patterns if (m := regex.match(info.tag))]
    if not hits:
        return ListedTag(repo, info, None, note="matches no pattern of the configured variants "
                                                f"({', '.join(variants)}): unknown, never touched")
    if len(hits) > 1:
        what = ", ".join(f"{kind} of {v}" for kind, v, _ in hits)
        return ListedTag(repo, info, None, note=f"matches several patterns ({what}): ambiguous, kept", ambiguous=True)
    kind, v, m = hits[0]
    groups = m.groupdict()
    return ListedTag(repo, info, kind, v, groups.get("commit"), groups.get("key"))


def _classify(inputs: RetentionInputs) -> list[ListedTag]:
    matchers = _matchers(inputs)
    found: list[ListedTag] = []
    for listing in inputs.repositories:
        repo = listing.repository
        patterns = [m for role in repo.roles for m in matchers[role]]
        found += [_classify_tag(repo, info, patterns, inputs.variants) for info in listing.tags]
    return found


# --------------------------------------------------------------------------- ranking


def _stamp(stamps: dict[str, list[datetime]], commit: str, when: datetime | None) -> None:
    """Know ``commit``, with ``when`` among its times when there is one."""
    found = stamps.setdefault(commit, [])
    if (utc := as_utc(when)) is not None:
        found.append(utc)


def _commit_times(tags: Iterable[ListedTag], folders: Iterable[WheelFolder]) -> dict[str, datetime | None]:
    """Commit → its newest push time among its per-commit tags and its wheel folder's files; None: none known."""
    stamps: dict[str, list[datetime]] = {}  # commit → every push time known for it (maybe none)
    for t in tags:
        if t.kind in PER_COMMIT_KINDS and t.commit:
            _stamp(stamps, t.commit, t.info.pushed_at)
    for folder in folders:
        if SHA_RE.match(folder.name):
            _stamp(stamps, folder.name, folder.modified_at)
    return {commit: max(found) if found else None for commit, found in stamps.items()}


def _released_commits(tags: Iterable[ListedTag]) -> dict[tuple[str, str], set[str]]:
    """(variant, digest) → the commits whose release image has that digest."""
    released: dict[tuple[str, str], set[str]] = defaultdict(set)
    for t in tags:
        if t.kind in ("release", "nightly_commit") and t.commit and t.variant:
            released[(t.variant, t.info.digest)].add(t.commit)
    return released


def _protected_commits(tags: list[ListedTag], inputs: RetentionInputs) -> dict[str, list[str]]:
    """Commit → why it is kept whatever its age: an alias folder names it, ``nightly`` points to its release,
    or a nightly run in progress releases it."""
    protected: dict[str, list[str]] = defaultdict(list)
    for run in inputs.runs_in_use:
        if run.commit:
            protected[run.commit].append(f"in use by {run.label}")
    store = inputs.store_url.rstrip("/")
    for alias, commit in sorted(inputs.nightly_folders.items()):
        if commit:
            protected[commit].append(f"{store}/{NIGHTLY_FOLDER}/{alias}/ names it")
    released = _released_commits(tags)
    for t in tags:
        if t.kind == "nightly" and t.variant:
            for commit in released.get((t.variant, t.info.digest), ()):
                protected[commit].append(f"{t.repo.location}:{t.name} points to its release image")
    return protected


def _dated_rank(commit: str, when: datetime, rank: int, keep: int, boundary: datetime | None,
                protected: list[str], recent: RecentWindow | None) -> CommitRank:
    """The verdict on a commit with a push time, #``rank`` of the commits (newest first)."""
    reasons: list[str] = []
    if rank <= keep:
        reasons.append(f"#{rank} of the newest {keep} by push time")
    elif boundary is not None and when == boundary:
        reasons.append(f"#{rank} by push time, tied with #{keep} (same push time): "
                       "a tie at the boundary is kept, never broken by name")
    if recent is not None and recent.covers(when):
        reasons.append(recent.reason(when))
    reasons += protected
    if reasons:
        return CommitRank(commit=commit, pushed_at=when, rank=rank, keep=True, reasons=tuple(reasons))
    return CommitRank(commit=commit, pushed_at=when, rank=rank, keep=False,
                      reasons=(f"#{rank} by push time; only the newest {keep} are kept",))


def _rank_dated(dated: Mapping[str, datetime], protected: Mapping[str, list[str]], keep: int,
                recent: RecentWindow | None) -> dict[str, CommitRank]:
    """The commits with a push time, newest first: the newest ``keep``, any tied with the last of them, and
    any pushed within the ``recent`` window stay."""
    timed = sorted(dated, key=lambda c: c)
    timed.sort(key=lambda c: dated[c], reverse=True)  # newest first; equal times keep name order (display only)
    boundary = dated[timed[keep - 1]] if len(timed) >= keep else None
    return {commit: _dated_rank(commit, dated[commit], rank, keep, boundary, protected.get(commit, []), recent)
            for rank, commit in enumerate(timed, start=1)}


def _rank_commits(times: Mapping[str, datetime | None], protected: Mapping[str, list[str]],
                  keep: int, recent: RecentWindow | None = None) -> dict[str, CommitRank]:
    """Every commit's verdict: by push time, and kept without one, when recent, or when an alias or a run names it."""
    ranks = _rank_dated({c: when for c, when in times.items() if when is not None}, protected, keep, recent)
    for commit in sorted(c for c, when in times.items() if when is None):
        ranks[commit] = CommitRank(
            commit=commit, pushed_at=None, rank=None, keep=True,
            reasons=("no push time is known for any of its tags or its wheel folder: it cannot be ordered, kept",
                     *protected.get(commit, [])))
    for commit, why in protected.items():  # an alias may name a commit nothing else knows: say so
        if commit not in ranks:
            ranks[commit] = CommitRank(commit=commit, pushed_at=None, rank=None, keep=True,
                                       reasons=(*why, "it has no tag or wheel folder here"))
    return ranks


def analyse(inputs: RetentionInputs) -> Analysis:
    """Classify every tag and rank every commit (newest push first)."""
    tags = _classify(inputs)
    times = _commit_times(tags, inputs.wheel_folders)
    protected = _protected_commits(tags, inputs)
    recent = inputs.recent
    return Analysis(tags, _rank_commits(times, protected, inputs.keep_commits, recent), inputs.runs_in_use, recent)
