"""The last look before deleting: every assumption of the plan, checked again against what is there now.

``apply_retention`` runs minutes (or, after a retry, hours) after ``plan_retention``. Just before
deleting, the adapters read again the nightly aliases, the doomed tags and untagged images, and the
nightly runs in progress; :func:`recheck` then holds back (a ``SKIP`` line with the reason) any
deletion that the plan would no longer make:

* a nightly alias (tag or folder) has come to point to it;
* a nightly run in progress names its commit, its base or its digest;
* the tag now points to another digest than the plan saw (it was moved: a rebuild, a promotion);
* an untagged image was tagged again;
* its push time (as listed now, else as planned) is inside the recent window.

A commit goes whole or not at all: when any of its tags or its folder is held back, so is the rest of
it. A tag or image that is already gone is done (a retry converges). Pure: the reads are the adapters'.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from rocm_release.core.registry import TagInfo, UntaggedImage
from rocm_release.core.retention_model import BASE_KINDS, RecentWindow, RetentionDecision, RunInUse

GONE = "already gone"


@dataclass(frozen=True)
class CurrentState:
    """What was read again just before deleting. ``tags``/``untagged``: location → what is listed there now
    (only locations with something to delete; a location missing here was not read again)."""

    alias_commits: frozenset[str] = frozenset()  # commits the nightly alias folders name now
    alias_digests: frozenset[str] = frozenset()  # digests the nightly/base-nightly alias tags point to now
    tags: Mapping[str, Mapping[str, TagInfo]] = field(default_factory=dict)
    untagged: Mapping[str, Mapping[str, UntaggedImage]] = field(default_factory=dict)
    runs: tuple[RunInUse, ...] = ()
    recent: RecentWindow | None = None


@dataclass(frozen=True)
class Rechecked:
    """What may still be deleted, what is held back (``SKIP`` lines) and what was already gone."""

    todo: tuple[RetentionDecision, ...]
    skipped: tuple[str, ...]
    gone: tuple[str, ...]


def _aliased_commits(deletions: Iterable[RetentionDecision], now: CurrentState) -> set[str]:
    """Commits an alias names now: the alias folders', and those whose release image an alias points to."""
    commits = set(now.alias_commits)
    for d in deletions:
        if d.kind in ("release", "nightly_commit") and d.digest in now.alias_digests and d.commit:
            commits.add(d.commit)
    return commits


def _in_use(d: RetentionDecision, runs: Sequence[RunInUse]) -> str | None:
    for run in runs:
        named_base = d.kind in BASE_KINDS and (d.variant or "", d.base_key or "") in run.base_keys
        if (d.commit and d.commit == run.commit) or named_base or (d.digest and d.digest in run.digests):
            return f"in use by {run.label} now (it was not when planned)"
    return None


def _recent(pushed: TagInfo | UntaggedImage | None, d: RetentionDecision, now: CurrentState) -> str | None:
    when = (pushed.pushed_at if pushed is not None else None) or d.pushed_at
    if now.recent is not None and when is not None and now.recent.covers(when):
        return now.recent.reason(when) + " (read again before deleting)"
    return None


def _tag_now(d: RetentionDecision, now: CurrentState) -> str | None:
    """GONE, why the tag must stay as it is now, or None."""
    listed = now.tags.get(d.location)
    current = listed.get(d.name) if listed is not None else None
    if listed is not None and current is None:
        return GONE
    if current is not None and current.digest != d.digest:
        return f"moved to {current.digest[:19]}… since the plan (it pointed to {(d.digest or '?')[:19]}…)"
    return _recent(current, d, now)


def _image_now(d: RetentionDecision, now: CurrentState) -> str | None:
    """GONE, why the untagged image must stay as it is now, or None."""
    listed = now.untagged.get(d.location)
    current = listed.get(d.name) if listed is not None else None
    if listed is not None and current is None:
        tagged = sorted(t.tag for t in now.tags.get(d.location, {}).values() if t.digest == d.name)
        return f"tagged again since the plan ({', '.join(tagged[:3])})" if tagged else GONE
    return _recent(current, d, now)


def _hold(d: RetentionDecision, now: CurrentState, aliased: set[str]) -> str | None:
    """GONE, why ``d`` must not be deleted now, or None (delete it)."""
    if d.commit in aliased or (d.kind in BASE_KINDS and d.digest in now.alias_digests):
        return "a nightly alias points to it now (it did not when planned)"
    if (why := _in_use(d, now.runs)) is not None:
        return why
    if d.target == "tag":
        return _tag_now(d, now)
    if d.target == "image":
        return _image_now(d, now)
    return None


def recheck(deletions: Sequence[RetentionDecision], now: CurrentState) -> Rechecked:
    """Hold back every deletion whose reason no longer holds, and every other part of a held commit."""
    for d in deletions:
        if d.action != "delete":
            raise ValueError(f"apply_retention got a {d.action!r} decision for {d.reference}")
    aliased = _aliased_commits(deletions, now)
    holds = {d.reference: _hold(d, now, aliased) for d in deletions}
    held_commits = {d.commit: why for d in deletions
                    if d.commit and (why := holds[d.reference]) is not None and why != GONE}
    todo: list[RetentionDecision] = []
    skipped: list[str] = []
    gone: list[str] = []
    for d in deletions:
        why = holds[d.reference]
        if why is None and d.commit in held_commits:
            why = f"commit {d.commit[:12]} stays whole: {held_commits[d.commit]}"
        if why == GONE:
            gone.append(d.reference)
        elif why is not None:
            skipped.append(f"SKIP {d.reference}: {why}")
        else:
            todo.append(d)
    return Rechecked(tuple(todo), tuple(skipped), tuple(gone))
