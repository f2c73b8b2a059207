"""The last look before deleting (rocm_release.core.retention_recheck): every assumption of the plan, read
again — no services."""

from __future__ import annotations

from datetime import timedelta

from rocm_release.core.plan import base_tag, release_tag, wheels_tag
from rocm_release.core.registry import TagInfo, UntaggedImage
from rocm_release.core.retention import RetentionDecision, RetentionPlan, RunInUse, WheelFolder
from rocm_release.core.retention_model import RecentWindow
from rocm_release.core.retention_recheck import CurrentState, recheck
from tests.unit.retention_scenes import (
    CACHE,
    KEY_OLD,
    KEY_USED,
    V1,
    base,
    built,
    day,
    digest,
    make_inputs,
    make_plan,
    sha,
)


def scene() -> tuple[RetentionPlan, dict[str, TagInfo]]:
    """Commits 1 and 2 doomed (keep 1 of 3), base KEY_OLD doomed; the cache as listed."""
    cache = [t for n in (1, 2, 3) for t in built(sha(n), day(n))] + base(KEY_OLD, day(0)) + base(KEY_USED, day(1))
    plan = make_plan(make_inputs(cache, keep=1, folders=[WheelFolder(sha(n)) for n in (1, 2, 3)]))
    return plan, {t.tag: t for t in cache}


def listed(tags: dict[str, TagInfo]) -> dict[str, dict[str, TagInfo]]:
    return {CACHE.location: tags}


def names(decisions: tuple[RetentionDecision, ...]) -> set[str]:
    return {d.name for d in decisions}


def test_unchanged_world_deletes_everything_planned() -> None:
    plan, tags = scene()
    done = recheck(plan.delete, CurrentState(tags=listed(tags)))
    assert names(done.todo) == names(tuple(plan.delete)) and done.skipped == () and done.gone == ()


def test_a_moved_tag_holds_back_its_whole_commit_and_a_gone_tag_is_done() -> None:
    plan, tags = scene()
    moved = release_tag(sha(1), V1)
    tags[moved] = TagInfo(moved, digest("rebuilt"), day(9))
    del tags[wheels_tag(sha(2), V1)]

    done = recheck(plan.delete, CurrentState(tags=listed(tags)))

    assert f"SKIP {CACHE.location}:{moved}: moved to {digest('rebuilt')[:19]}…" in "\n".join(done.skipped)
    assert sha(1) not in {d.commit for d in done.todo}  # its wheels tag and folder stay too
    assert any(f"{sha(1)}/: commit {sha(1)[:12]} stays whole" in line for line in done.skipped)
    assert done.gone == (f"{CACHE.location}:{wheels_tag(sha(2), V1)}",)
    assert {d.name for d in done.todo if d.commit == sha(2)} == {release_tag(sha(2), V1), sha(2)}


def test_a_push_inside_the_window_now_holds_back_the_commit() -> None:
    plan, tags = scene()
    same = tags[release_tag(sha(2), V1)]
    tags[same.tag] = TagInfo(same.tag, same.digest, day(10))  # pushed again (same image) just now
    window = RecentWindow.before(day(10) + timedelta(hours=1), 48)

    done = recheck(plan.delete, CurrentState(tags=listed(tags), recent=window))

    assert sha(2) not in {d.commit for d in done.todo}
    assert any("within the last 48 hours" in line and "read again before deleting" in line for line in done.skipped)
    assert sha(1) in {d.commit for d in done.todo}


def test_runs_and_aliases_that_appeared_since_the_plan_hold_back_what_they_name() -> None:
    plan, tags = scene()
    run = RunInUse("manual__late", "running", commit=sha(1), base_keys=((V1, KEY_OLD),))
    done = recheck(plan.delete, CurrentState(tags=listed(tags), runs=(run,), alias_commits=frozenset({sha(2)})))

    assert done.todo == ()
    text = "\n".join(done.skipped)
    assert f"{base_tag(KEY_OLD, V1)}: in use by run manual__late (running) now (it was not when planned)" in text
    assert f"{sha(2)}/: a nightly alias points to it now" in text


def test_an_untagged_image_tagged_again_stays_and_one_gone_is_done() -> None:
    plan, tags = scene()
    image = RetentionDecision(action="delete", target="image", location=CACHE.location, name=digest("u"),
                              kind="untagged", digest=digest("u"), pushed_at=day(0))
    other = image.model_copy(update={"name": digest("v"), "digest": digest("v")})
    tags["hand-made"] = TagInfo("hand-made", digest("u"), day(9))

    done = recheck((image, other), CurrentState(tags=listed(tags), untagged={CACHE.location: {}}))

    assert done.todo == () and done.gone == (f"{CACHE.location}@{digest('v')}",)
    assert done.skipped == (f"SKIP {CACHE.location}@{digest('u')}: tagged again since the plan (hand-made)",)
    still = recheck((image,), CurrentState(tags=listed({}), untagged={CACHE.location: {
        digest("u"): UntaggedImage(digest("u"), day(0))}}))
    assert still.todo == (image,)
