"""Retention's vocabulary: what planning takes (the listings), and what it returns (the plan).

Pure values only; :mod:`rocm_release.core.retention` decides, :mod:`rocm_release.adapters.retention`
lists and deletes.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import Field

from rocm_release.core.config import PublicTagPatterns
from rocm_release.core.frozen import Frozen
from rocm_release.core.names import SHA_RE
from rocm_release.core.registry import TagInfo, UntaggedImage

DIGEST_IN_TEXT = re.compile(r"sha256:[0-9a-f]{64}")

Role = Literal["cache", "public"]
TagKind = Literal[
    "base", "base_wheels", "wheels", "release", "nightly", "nightly_commit", "base_nightly", "base_nightly_commit"
]
DecisionKind = Literal[
    "base", "base_wheels", "wheels", "release", "nightly", "nightly_commit", "base_nightly", "base_nightly_commit",
    "commit_folder", "nightly_folder", "base_folder", "untagged", "unknown", "ambiguous",
]

PER_COMMIT_KINDS: frozenset[str] = frozenset({"wheels", "release", "nightly_commit", "base_nightly_commit"})
BASE_KINDS: frozenset[str] = frozenset({"base", "base_wheels"})
ALIAS_KINDS: frozenset[str] = frozenset({"nightly", "base_nightly"})
BUILT_KINDS: frozenset[str] = frozenset({"wheels", "release"})  # images built on a base
NIGHTLY_FOLDER = "nightly"


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
    """Every tag of one repository as listed (``pushed_at`` where the registry knows it), and where the
    registry can list them, its untagged images and the digests its indexes list (``index_children``)."""

    repository: Repository
    tags: tuple[TagInfo, ...]
    untagged: tuple[UntaggedImage, ...] = ()
    index_children: frozenset[str] = frozenset()


@dataclass(frozen=True)
class WheelFolder:
    """An entry directly under the store root; ``modified_at`` only when it was read."""

    name: str
    modified_at: datetime | None = None


@dataclass(frozen=True)
class RunInUse:
    """A queued or running ``rocm_nightly_release`` run and what it uses: the commit, bases and digests its
    plan and tasks name. A run without a plan yet (queued, or ``resolve_release`` not done) names none:
    it will release the branch tip as of its date, which the newest commits and the recent window cover."""

    run_id: str
    state: str
    commit: str | None = None
    base_keys: tuple[tuple[str, str], ...] = ()  # (variant, key)
    digests: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"run {self.run_id} ({self.state})"

    @classmethod
    def from_hand_off(cls, run_id: str, state: str, plan: object, refs: Iterable[object] = ()) -> RunInUse:
        """A run from its ``resolve_release`` XCom (the plan, read leniently: an older run's plan of another
        schema still names its commit and bases) and the values its build tasks handed on (``repo@sha256:…``)."""
        doc = plan if isinstance(plan, Mapping) else {}
        commit = doc.get("commit")
        bases = []
        for v in doc.get("variants") or ():
            variant = v.get("variant") if isinstance(v, Mapping) else None
            name = variant.get("name") if isinstance(variant, Mapping) else None
            if isinstance(name, str) and isinstance(v.get("base_key"), str):
                bases.append((name, str(v["base_key"])))
        digests = {d for ref in refs for d in DIGEST_IN_TEXT.findall(str(ref))}
        return cls(run_id, state, commit if isinstance(commit, str) and SHA_RE.match(commit) else None,
                   tuple(bases), tuple(sorted(digests)))


@dataclass(frozen=True)
class RecentWindow:
    """Anything pushed at or after ``since`` (``hours`` before the run's "now") is kept, whatever else holds."""

    since: datetime
    hours: int

    @classmethod
    def before(cls, now: datetime | None, hours: int) -> RecentWindow | None:
        """The window of ``hours`` before ``now`` (None without a time or with 0 hours)."""
        if now is None or hours <= 0:
            return None
        now = now if now.tzinfo else now.replace(tzinfo=UTC)
        return cls(now - timedelta(hours=hours), hours)

    def covers(self, when: datetime | None) -> bool:
        """``when`` is inside the window (a time in the future too: clocks differ)."""
        if when is None:
            return False
        return (when if when.tzinfo else when.replace(tzinfo=UTC)) >= self.since

    def reason(self, when: datetime) -> str:
        return f"pushed {when.isoformat()}, within the last {self.hours} hours (retention.protect_recent_hours)"


@dataclass(frozen=True)
class RetentionInputs:
    """Everything ``plan_retention`` decides on. ``nightly_folders``: alias folder → commit it names;
    ``runs_in_use``: the nightly runs queued or running; ``now`` and ``protect_recent_hours``: the window
    of recent pushes that is kept (none without ``now``)."""

    repositories: tuple[RepositoryTags, ...]
    wheel_folders: tuple[WheelFolder, ...]
    store_url: str
    keep_commits: int
    variants: tuple[str, ...]
    public_tags: PublicTagPatterns
    nightly_folders: Mapping[str, str | None] = field(default_factory=dict)
    runs_in_use: tuple[RunInUse, ...] = ()
    now: datetime | None = None
    protect_recent_hours: int = 0
    base_folders: tuple[WheelFolder, ...] = ()  # under <store>/base/, with the newest file time of each
    base_links: Mapping[str, frozenset[str]] = field(default_factory=dict)  # commit → base folders it links

    @property
    def recent(self) -> RecentWindow | None:
        return RecentWindow.before(self.now, self.protect_recent_hours)

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
    """Delete or keep one tag, untagged image (``name`` is its digest) or wheel folder, and why."""

    action: Literal["delete", "keep"]
    target: Literal["tag", "image", "folder"]
    location: str  # host/repository for a tag or image, the store URL for a folder
    name: str
    kind: DecisionKind
    digest: str | None = None
    variant: str | None = None
    commit: str | None = None
    base_key: str | None = None
    pushed_at: datetime | None = None  # as listed when planned (tags and images)
    reason: str = ""

    @property
    def reference(self) -> str:
        """``host/repo:tag``, ``host/repo@sha256:…`` or ``<store>/<folder>/``."""
        if self.target == "tag":
            return f"{self.location}:{self.name}"
        if self.target == "image":
            return f"{self.location}@{self.name}"
        return f"{self.location.rstrip('/')}/{self.name}/"

    def line(self, *, dry_run: bool = False) -> str:
        """One line of the report."""
        verb = ("WOULD DELETE" if dry_run else "DELETE") if self.action == "delete" else "KEEP"
        digest = f" ({self.digest[:19]}…)" if self.digest and self.target != "image" else ""
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
    notes: tuple[str, ...] = ()  # what else the plan took into account (runs in progress, untagged images)

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
            "images_deleted": count["images_deleted"],
            "images_kept": count["images_kept"],
            "unknown_kept": count["unknown_kept"],
        }

    def render(self, *, dry_run: bool) -> str:
        """The whole plan as text: the commit ranking, then every decision with its reason."""
        s = self.summary()
        head = "DRY RUN: nothing is deleted. " if dry_run else ""
        lines = [
            f"{head}Retention keeps the newest {self.keep_commits} commits by push time, every commit a "
            "nightly alias or a nightly run in progress names, everything pushed recently, every base a kept "
            "image was built on, the newest base of each variant, and every tag that matches no exact pattern.",
            f"commits: {s['commits']} ({s['commits_kept']} kept, {s['commits_deleted']} deleted); "
            f"tags: {s['tags_deleted']} {'to delete' if dry_run else 'deleted'}, {s['tags_kept']} kept "
            f"({s['unknown_kept']} unknown); untagged images: {s['images_deleted']} "
            f"{'to delete' if dry_run else 'deleted'}, {s['images_kept']} kept; wheel folders: "
            f"{s['folders_deleted']} {'to delete' if dry_run else 'deleted'}, {s['folders_kept']} kept",
            *self.notes,
            "",
            "Commits, newest push first:",
            *(c.line() for c in self.commits),
            "",
            "Tags and wheel folders:",
            *(d.line(dry_run=dry_run) for d in self.delete),
            *(d.line(dry_run=dry_run) for d in self.keep),
        ]
        return "\n".join(lines)
