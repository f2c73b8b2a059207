"""Moving the ``nightly`` aliases: only in runs that may promote, and only forwards.

"Forwards" is decided on the branch's history: the commit the alias points to
now must be an ancestor of ours (or the same commit). When git cannot tell
(the old commit is no longer on any branch), commit time decides. A backfill
of an older commit, or a late manual run, therefore never moves an alias back
(REFERENCE_PIPELINE.md §2.9-2.10).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from rocm_release.core.plan import ReleasePlan


class AliasMoved(RuntimeError):
    """An alias changed between deciding to move it and moving it: another run is promoting.

    Neither fatal nor transient: retrying the same move inside the task cannot help (its decision is
    stale), so the in-task retry (``core.retrying``) raises it at once, and the task's own Airflow
    retry decides again from what the alias holds then."""


@dataclass(frozen=True)
class Verdict:
    """Whether to move an alias, and why (always logged)."""

    move: bool
    why: str


def may_promote(plan: ReleasePlan, *, on_branch: Callable[[], bool]) -> Verdict:
    """Scheduled runs promote; manual runs only with ``promote``; backfills and dry runs never;
    and only a commit of the release branch (``on_branch()``, asked last: it reads git)."""
    if plan.dry_run:
        return Verdict(False, "dry run: nothing is promoted")
    if plan.run_kind == "backfill":
        return Verdict(False, "backfills never promote")
    if not plan.promote:
        return Verdict(False, "this manual run did not ask to promote (Param promote=false)")
    if not on_branch():
        return Verdict(False, f"{plan.commit[:12]} is not on the release branch {plan.branch!r}: "
                              "published per commit, never promoted")
    return Verdict(True, f"{plan.run_kind} run promotes")


def forwards(
    current: str | None,
    ours: str,
    *,
    is_ancestor: Callable[[str, str], bool],
    commit_time: Callable[[str], datetime | None],
) -> Verdict:
    """May an alias now at ``current`` move to ``ours``? Only if that is not a step back."""
    if current is None:
        return Verdict(True, "the alias does not exist yet")
    if current == ours:
        return Verdict(True, f"the alias already points to {ours[:12]} (re-asserted)")
    if is_ancestor(current, ours):
        return Verdict(True, f"{ours[:12]} descends from {current[:12]}: moving forwards")
    if is_ancestor(ours, current):
        return Verdict(False, f"the alias points to {current[:12]}, a newer commit on the branch; left unchanged")
    theirs, mine = commit_time(current), commit_time(ours)
    if theirs is None:
        return Verdict(True, f"{current[:12]} is unknown to the mirror (rewritten history?); moving to {ours[:12]}")
    if mine is not None and theirs > mine:
        return Verdict(False, f"the alias points to {current[:12]}, committed later ({theirs.isoformat()}); "
                              "left unchanged")
    return Verdict(True, f"{current[:12]} is not an ancestor but older than {ours[:12]}: moving")
