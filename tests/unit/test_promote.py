"""Promotion rules: who may promote, and never backwards."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rocm_release.core.promotion import forwards, may_promote
from tests.unit.test_plan import _plan

A, B, C, X = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)
HISTORY = [A, B, C]  # A <- B <- C on the branch; X is off the branch
TIMES = {A: datetime(2026, 11, 1, tzinfo=UTC), B: datetime(2026, 11, 2, tzinfo=UTC),
         C: datetime(2026, 11, 3, tzinfo=UTC), X: datetime(2026, 11, 5, tzinfo=UTC)}


def _is_ancestor(old: str, new: str) -> bool:
    return old in HISTORY and new in HISTORY and HISTORY.index(old) <= HISTORY.index(new)


def _verdict(current: str | None, ours: str, times: dict = TIMES):
    return forwards(current, ours, is_ancestor=_is_ancestor, commit_time=times.get)


def test_forwards_moves() -> None:
    assert _verdict(None, A).move
    assert _verdict(A, C).move
    assert _verdict(C, C).move


def test_backfill_of_an_older_commit_never_moves_nightly_backwards() -> None:
    verdict = _verdict(C, A)
    assert not verdict.move and "newer commit" in verdict.why


def test_unrelated_commits_compare_by_time() -> None:
    assert not _verdict(X, C).move  # X committed later
    assert _verdict(A, X).move  # X is newer than A


def test_unknown_old_commit_does_not_block() -> None:
    assert _verdict("e" * 40, C, times={C: TIMES[C]}).move


@pytest.mark.parametrize(
    "kind, promote, dry_run, expected",
    [
        ("scheduled", False, False, True),
        ("manual", False, False, False),
        ("manual", True, False, True),
        ("backfill", True, False, False),
        ("scheduled", False, True, False),
    ],
)
def test_who_may_promote(kind: str, promote: bool, dry_run: bool, expected: bool) -> None:
    plan = _plan("demo").model_copy(update={"run_kind": kind, "promote": promote or kind == "scheduled",
                                            "dry_run": dry_run})
    assert may_promote(plan, on_branch=lambda: True).move is expected


def test_a_commit_off_the_release_branch_is_never_promoted() -> None:
    """Issue #11 defect 4: a manual run with promote=true of a side-branch commit moved nightly."""
    plan = _plan("demo").model_copy(update={"run_kind": "manual", "promote": True})
    verdict = may_promote(plan, on_branch=lambda: False)
    assert not verdict.move
    assert f"{plan.commit[:12]} is not on the release branch {plan.branch!r}" in verdict.why


def test_the_branch_is_only_asked_when_the_run_may_promote_at_all() -> None:
    asked: list[bool] = []

    def on_branch() -> bool:
        asked.append(True)
        return True

    backfill = _plan("demo").model_copy(update={"run_kind": "backfill", "promote": False})
    assert not may_promote(backfill, on_branch=on_branch).move and not asked
