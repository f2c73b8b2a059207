"""Retention never deletes what a nightly run in progress uses, what was pushed recently, or an untagged image
that is still needed (rocm_release.core.retention) — no services."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from rocm_release.core.names import OCI_INDEX, OCI_MANIFEST
from rocm_release.core.plan import base_tag, release_tag, wheels_tag
from rocm_release.core.registry import UntaggedImage
from rocm_release.core.retention import RepositoryTags, RetentionInputs, RetentionPlan, RunInUse, WheelFolder
from tests.unit.retention_scenes import (
    CACHE,
    KEY_NEW,
    KEY_OLD,
    KEY_USED,
    STORE,
    V1,
    base,
    built,
    day,
    digest,
    make_inputs,
    make_plan,
    sha,
)


def history(keep: int = 1) -> RetentionInputs:
    """Commits 1..4 pushed on days 1..4 (4 is the newest), bases old (day 0), used (day 0), new (day 4)."""
    cache = [t for n in range(1, 5) for t in built(sha(n), day(n))]
    cache += base(KEY_OLD, day(0)) + base(KEY_USED, day(0) + timedelta(hours=1)) + base(KEY_NEW, day(4))
    return make_inputs(cache, keep=keep, folders=[WheelFolder(sha(n)) for n in range(1, 5)])


def decision(plan: RetentionPlan, name: str, target: str = "tag") -> tuple[str, str]:
    [found] = [d for d in plan.decisions if d.name == name and d.target == target]
    return found.action, found.reason


def kept(plan: RetentionPlan) -> set[str]:
    return {c.commit for c in plan.commits if c.keep}


# -- runs in progress ---------------------------------------------------------------------------------------------


def test_a_running_nightly_keeps_the_commit_its_plan_names_with_its_bases_and_digests() -> None:
    run = RunInUse("scheduled__2026-11-06T02:00:00+00:00", "running", commit=sha(1),
                   base_keys=((V1, KEY_OLD),), digests=(digest(f"b{KEY_USED}{V1}"),))
    plan = make_plan(replace(history(), runs_in_use=(run,)))

    assert kept(plan) == {sha(4), sha(1)}
    for name in (wheels_tag(sha(1), V1), release_tag(sha(1), V1)):
        assert decision(plan, name) == ("keep", decision(plan, name)[1])
        assert f"in use by run {run.run_id} (running)" in decision(plan, name)[1]
    assert decision(plan, sha(1), "folder")[0] == "keep"
    assert decision(plan, release_tag(sha(2), V1))[0] == "delete"
    for key in (KEY_OLD, KEY_USED):  # named by its plan; handed on by digest
        action, why = decision(plan, base_tag(key, V1))
        assert action == "keep" and f"in use by run {run.run_id} (running)" in why
    assert any(run.run_id in note and sha(1)[:12] in note for note in plan.notes)


def test_a_queued_run_without_a_plan_is_reported_and_the_branch_tip_is_kept_by_rank() -> None:
    queued = RunInUse("scheduled__2026-11-06T02:00:00+00:00", "queued")
    plan = make_plan(replace(history(), runs_in_use=(queued,)))

    assert kept(plan) == {sha(4)}  # the newest commit is always kept
    assert any("no plan yet" in note and "branch tip" in note for note in plan.notes)
    assert any("no plan yet" in line for line in plan.render(dry_run=True).splitlines())


# -- recent pushes ------------------------------------------------------------------------------------------------


def test_anything_pushed_within_the_window_is_kept_whatever_its_rank() -> None:
    now = day(4) + timedelta(hours=1)
    plan = make_plan(replace(history(keep=1), now=now, protect_recent_hours=48))

    assert kept(plan) == {sha(4), sha(3)}  # commit 3 pushed 25 h before now, commit 2 49 h before
    assert "within the last 48 hours (retention.protect_recent_hours)" in decision(plan, release_tag(sha(3), V1))[1]
    assert decision(plan, sha(3), "folder")[0] == "keep"
    assert decision(plan, release_tag(sha(2), V1))[0] == "delete"

    later = make_plan(replace(history(keep=1), now=now + timedelta(days=30), protect_recent_hours=48))
    assert kept(later) == {sha(4)}
    assert make_plan(replace(history(keep=1), now=now, protect_recent_hours=0)).summary() == later.summary()


def test_a_recent_base_is_kept_even_when_no_image_uses_it() -> None:
    inputs = history()
    cache = inputs.repositories[0]
    recent_base = base("0" * 15 + "9", day(3) + timedelta(hours=20))
    inputs = replace(inputs, repositories=(replace(cache, tags=cache.tags + tuple(recent_base)),
                                           *inputs.repositories[1:]))

    assert decision(make_plan(inputs), recent_base[0].tag)[0] == "delete"
    action, why = decision(make_plan(replace(inputs, now=day(4) + timedelta(hours=1), protect_recent_hours=48)),
                           recent_base[0].tag)
    assert action == "keep" and "within the last 48 hours" in why


# -- untagged images ----------------------------------------------------------------------------------------------


def with_untagged(inputs: RetentionInputs, images: list[UntaggedImage], children: set[str]) -> RetentionInputs:
    cache = inputs.repositories[0]
    listed = RepositoryTags(cache.repository, cache.tags, tuple(images), frozenset(children))
    return replace(inputs, repositories=(listed, *inputs.repositories[1:]))


def test_untagged_images_go_unless_an_index_a_run_or_the_window_still_needs_them() -> None:
    old = UntaggedImage(digest("rebuilt away"), day(1), OCI_MANIFEST, "application/vnd.oci.image.config.v1+json")
    old_index = UntaggedImage(digest("old index"), day(1), OCI_INDEX)
    child = UntaggedImage(digest("platform image"), day(1), OCI_MANIFEST)
    signature = UntaggedImage(digest("signature"), day(1), OCI_MANIFEST,
                              "application/vnd.dev.cosign.artifact.sig.v1+json")
    handed_on = UntaggedImage(digest("handed on"), day(1), OCI_MANIFEST)
    fresh = UntaggedImage(digest("fresh"), day(4), OCI_MANIFEST)
    undated = UntaggedImage(digest("undated"), None, OCI_MANIFEST)
    run = RunInUse("manual__x", "running", commit=sha(4), digests=(handed_on.digest,))
    inputs = with_untagged(history(), [old, old_index, child, signature, handed_on, fresh, undated], {child.digest})
    plan = make_plan(replace(inputs, runs_in_use=(run,), now=day(4) + timedelta(hours=1), protect_recent_hours=48))

    verdicts = {d.name: (d.action, d.reason) for d in plan.decisions if d.target == "image"}
    assert {name for name, (action, _) in verdicts.items() if action == "delete"} == {old.digest, old_index.digest}
    assert "an index in this repository lists it" in verdicts[child.digest][1]
    assert "an artifact" in verdicts[signature.digest][1]
    assert "in use by run manual__x (running)" in verdicts[handed_on.digest][1]
    assert "within the last 48 hours" in verdicts[fresh.digest][1]
    assert "no push time" in verdicts[undated.digest][1]
    doomed = next(d for d in plan.delete if d.name == old.digest)
    assert (doomed.reference, doomed.location, doomed.kind) == (f"{CACHE.location}@{old.digest}", CACHE.location,
                                                               "untagged")
    assert plan.summary()["images_deleted"] == 2 and plan.summary()["images_kept"] == 5
    assert f"WOULD DELETE image  {CACHE.location}@{old.digest}" in plan.render(dry_run=True)
    assert STORE in plan.render(dry_run=True)


def test_the_hand_off_keeps_push_times_for_the_apply_time_checks() -> None:
    plan = make_plan(with_untagged(history(), [UntaggedImage(digest("x"), day(1), OCI_MANIFEST)], set()))
    from rocm_release.core.retention import RetentionDecision

    for d in plan.delete:
        again = RetentionDecision.model_validate(d.model_dump(mode="json", exclude={"reason"}))
        assert again.pushed_at == d.pushed_at and again.target == d.target
    assert {d.pushed_at for d in plan.delete if d.target != "folder"} >= {day(1), day(2)}


def test_a_run_is_read_from_its_hand_off_leniently() -> None:
    plan = {"schema_version": 99, "commit": sha(1), "variants": [
        {"variant": {"name": V1}, "base_key": KEY_OLD}, {"variant": "unreadable"}, {"base_key": KEY_NEW}]}
    refs = [{"base": f"127.0.0.1:5101/p@{digest('b')}", "base_wheels": f"p@{digest('bw')}"},
            {"release": f"p@{digest('r')}"}]

    run = RunInUse.from_hand_off("manual__x", "running", plan, refs)

    assert (run.commit, run.base_keys) == (sha(1), ((V1, KEY_OLD),))
    assert set(run.digests) == {digest("b"), digest("bw"), digest("r")}
    assert RunInUse.from_hand_off("scheduled__y", "queued", None) == RunInUse("scheduled__y", "queued")
    assert RunInUse.from_hand_off("z", "running", {"commit": "main"}).commit is None
