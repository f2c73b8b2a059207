"""Retention rules (rocm_release.core.retention): what is kept, what is deleted, and why — no services."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rocm_release.core.config import PublicTagPatterns
from rocm_release.core.plan import base_tag, base_wheels_tag, public_tag, release_tag, wheels_tag
from rocm_release.core.registry import TagInfo
from rocm_release.core.retention import (
    BaseUse,
    RetentionDecision,
    RetentionPlan,
    WheelFolder,
    images_to_inspect,
    plan_retention,
)
from tests.unit.retention_scenes import (
    CACHE,
    KEY_NEW,
    KEY_OLD,
    KEY_USED,
    STORE,
    TAGS,
    V1,
    V2,
    base,
    built,
    day,
    digest,
    make_inputs,
    make_plan,
    public_night,
    sha,
)


def action(plan: RetentionPlan, name: str, target: str = "tag") -> str:
    [found] = [d for d in plan.decisions if d.name == name and d.target == target]
    return found.action


def reason(plan: RetentionPlan, name: str) -> str:
    [found] = [d for d in plan.decisions if d.name == name]
    return found.reason


def kept_commits(plan: RetentionPlan) -> set[str]:
    return {c.commit for c in plan.commits if c.keep}


# -- newest N by push time --------------------------------------------------------------------------


def test_keeps_the_newest_n_commits_by_push_time_even_when_names_sort_the_other_way() -> None:
    commits = {n: sha(n) for n in range(1, 6)}  # commit 5 is the newest and has the smallest name
    assert sorted(commits.values())[0] == commits[5]
    cache = [t for n, c in commits.items() for t in built(c, day(n))] + base(KEY_USED, day(0))
    plan = make_plan(make_inputs(cache, keep=2))

    assert kept_commits(plan) == {commits[5], commits[4]}
    assert [c.commit for c in plan.commits] == [commits[n] for n in (5, 4, 3, 2, 1)]
    for n, c in commits.items():
        expected = "keep" if n >= 4 else "delete"
        assert action(plan, wheels_tag(c, V1)) == expected
        assert action(plan, release_tag(c, V1)) == expected
    assert "#3 by push time; only the newest 2 are kept" in reason(plan, release_tag(commits[3], V1))
    assert "#1 of the newest 2 by push time" in reason(plan, release_tag(commits[5], V1))


def test_a_commit_time_is_its_newest_tag_in_any_repository() -> None:
    old, new = sha(1), sha(2)
    # old was released again later (a manual run re-pushed its release image)
    cache = built(old, day(1)) + built(new, day(2))
    cache[1] = TagInfo(cache[1].tag, cache[1].digest, day(5))
    plan = make_plan(make_inputs(cache, keep=1))
    assert kept_commits(plan) == {old}


def test_a_tie_at_the_boundary_is_kept_never_broken_by_name() -> None:
    a, b, c = sha(1), sha(2), sha(3)
    cache = built(a, day(1)) + built(b, day(2)) + built(c, day(2))  # b and c pushed in the same second
    plan = make_plan(make_inputs(cache, keep=1))
    assert kept_commits(plan) == {b, c}
    assert "tied with #1" in reason(plan, release_tag(b if plan.commits[1].commit == b else c, V1))
    assert action(plan, release_tag(a, V1)) == "delete"


def test_keep_commits_larger_than_history_keeps_everything() -> None:
    cache = [t for n in range(3) for t in built(sha(n), day(n))] + base(KEY_OLD, day(0))
    plan = make_plan(make_inputs(cache, keep=14, folders=[WheelFolder(sha(n)) for n in range(3)]), key=KEY_OLD)
    assert plan.delete == []
    assert len(kept_commits(plan)) == 3


def test_a_commit_without_any_push_time_cannot_be_ordered_and_is_kept() -> None:
    orphan = sha(9)  # only in the public registry (listed without push times) and in the store
    plan = make_plan(make_inputs(built(sha(1), day(1)) + built(sha(2), day(2)), public_night(orphan), keep=1,
                                 folders=[WheelFolder(orphan)]))
    assert orphan in kept_commits(plan)
    assert action(plan, orphan, "folder") == "keep"
    assert "cannot be ordered" in reason(plan, orphan)


def test_a_folder_only_commit_is_dated_by_its_files() -> None:
    leftover = sha(7)
    plan = make_plan(make_inputs(built(sha(1), day(1)) + built(sha(2), day(2)), keep=2,
                                 folders=[WheelFolder(leftover, modified_at=day(0))]))
    assert action(plan, leftover, "folder") == "delete"
    assert "#3 by push time" in reason(plan, leftover)


# -- nightly aliases ----------------------------------------------------------------------------------


def test_the_commit_nightly_points_to_is_kept_even_if_old() -> None:
    old, mid, new1, new2 = sha(1), sha(2), sha(3), sha(4)
    cache = [t for n, c in enumerate((old, mid, new1, new2), 1) for t in built(c, day(n))] + base(KEY_USED, day(0))
    alias = TagInfo(public_tag(TAGS.nightly, variant=V1, commit=""), digest(f"r{old}{V1}"))
    public = [alias, *public_night(old), *public_night(mid), *public_night(new2)]
    plan = make_plan(make_inputs(cache, public, keep=2, folders=[WheelFolder(c) for c in (old, mid, new1, new2)]))

    assert kept_commits(plan) == {old, new1, new2}
    for name in (wheels_tag(old, V1), release_tag(old, V1), public_tag(TAGS.nightly_commit, variant=V1, commit=old)):
        assert action(plan, name) == "keep"
        assert "nightly-rocm710 points to its release image" in reason(plan, name)
    assert action(plan, old, "folder") == "keep"
    assert action(plan, alias.tag) == "keep" and "never deleted" in reason(plan, alias.tag)
    assert action(plan, mid, "folder") == "delete"


def test_the_commit_the_nightly_wheel_folder_names_is_kept_and_nightly_is_never_deleted() -> None:
    old = sha(1)
    cache = [t for n in range(1, 5) for t in built(sha(n), day(n))] + base(KEY_USED, day(0))
    folders = [WheelFolder(sha(n)) for n in range(1, 5)] + [WheelFolder("nightly")]
    plan = make_plan(make_inputs(cache, keep=1, folders=folders, nightly={V1: old, V2: sha(4)}))

    assert kept_commits(plan) == {old, sha(4)}
    assert f"{STORE}/nightly/{V1}/ names it" in reason(plan, release_tag(old, V1))
    assert action(plan, "nightly", "folder") == "keep"
    assert {d.name for d in plan.delete if d.target == "folder"} == {sha(2), sha(3)}


# -- bases --------------------------------------------------------------------------------------------


def test_a_base_in_use_is_kept_an_unused_one_deleted_and_the_newest_kept() -> None:
    cache = built(sha(1), day(1)) + built(sha(2), day(2)) + built(sha(3), day(3))
    cache += base(KEY_OLD, day(0)) + base(KEY_USED, day(1)) + base(KEY_NEW, day(4))
    inputs = make_inputs(cache, keep=2)
    images = images_to_inspect(inputs)
    # only the kept commits' images are read, once per digest
    assert {i.commit for i in images} == {sha(2), sha(3)} and len(images) == 4
    plan = plan_retention(inputs, {i.digest: BaseUse(KEY_USED, digest(f"b{KEY_USED}{V1}")) for i in images})

    for tag in (base_tag(KEY_USED, V1), base_wheels_tag(KEY_USED, V1)):
        assert action(plan, tag) == "keep" and "were built on it" in reason(plan, tag)
    for tag in (base_tag(KEY_NEW, V1), base_wheels_tag(KEY_NEW, V1)):
        assert action(plan, tag) == "keep" and "the newest base of rocm710" in reason(plan, tag)
    for tag in (base_tag(KEY_OLD, V1), base_wheels_tag(KEY_OLD, V1)):
        assert action(plan, tag) == "delete"
        assert "no kept wheels/release image was built on it" in reason(plan, tag)


def test_a_base_used_only_by_deleted_commits_goes() -> None:
    cache = built(sha(1), day(1)) + built(sha(2), day(2)) + base(KEY_OLD, day(0)) + base(KEY_NEW, day(1))
    inputs = make_inputs(cache, keep=1)
    use = {i.digest: BaseUse(KEY_NEW, None) for i in images_to_inspect(inputs)}
    plan = plan_retention(inputs, use)
    assert action(plan, base_tag(KEY_OLD, V1)) == "delete"  # sha(1) was built on it, but sha(1) goes


def test_the_base_base_nightly_points_to_is_kept() -> None:
    cache = built(sha(1), day(1)) + base(KEY_OLD, day(0)) + base(KEY_USED, day(1)) + base(KEY_NEW, day(2))
    alias = TagInfo(public_tag(TAGS.base_nightly, variant=V1, commit=""), digest(f"b{KEY_OLD}{V1}"))
    plan = make_plan(make_inputs(cache, [alias], keep=1))
    assert action(plan, base_tag(KEY_OLD, V1)) == "keep"
    assert "base-nightly-rocm710 points to it" in reason(plan, base_tag(KEY_OLD, V1))
    assert action(plan, base_wheels_tag(KEY_OLD, V1)) == "keep"  # the unit goes together, by key


def test_a_kept_image_without_base_labels_keeps_every_base_of_its_variant() -> None:
    cache = built(sha(1), day(1)) + base(KEY_OLD, day(0)) + base(KEY_NEW, day(1)) + base(KEY_OLD, day(0), V2)
    cache += built(sha(1), day(1), V2) + base(KEY_NEW, day(1), V2)
    inputs = make_inputs(cache, keep=1)
    use: dict[str, BaseUse | None] = {}
    for image in images_to_inspect(inputs):
        use[image.digest] = None if image.variant == V1 else BaseUse(KEY_NEW, None)
    plan = plan_retention(inputs, use)
    assert action(plan, base_tag(KEY_OLD, V1)) == "keep"
    assert "carry no base labels" in reason(plan, base_tag(KEY_OLD, V1))
    assert action(plan, base_tag(KEY_OLD, V2)) == "delete"


def test_planning_without_the_labels_of_a_kept_image_is_an_error() -> None:
    inputs = make_inputs(built(sha(1), day(1)) + base(KEY_OLD, day(0)), keep=1)
    with pytest.raises(ValueError, match="were not read"):
        plan_retention(inputs, {})


# -- exact patterns, unknown tags ------------------------------------------------------------------------


def test_exact_patterns_never_prefixes() -> None:
    old, new = sha(1), sha(2)
    cache = built(old, day(1)) + built(new, day(2)) + base(KEY_USED, day(0))
    strangers = [
        f"{old}-rocm7100", f"{old}-rocm7100-wheels", f"{KEY_USED}-rocm7100-base",  # another variant's cache tags
        f"{old}-rocm710-wheels-debug", f"{old[:12]}-rocm710", "latest", f"x{old}-rocm710",
    ]
    public_strangers = [
        f"nightly-{old}-rocm7100", "nightly-rocm7100", f"nightly-rocm710-{old}", f"base-nightly-{old}-rocm7100",
        f"nightly-{old}-rocm710-rc1",
    ]
    cache += [TagInfo(t, digest(t), day(0)) for t in strangers]
    public = public_night(old) + [TagInfo(t, digest(t)) for t in public_strangers]
    plan = make_plan(make_inputs(cache, public, keep=1, variants=(V1,)))

    for name in strangers + public_strangers:
        assert action(plan, name) == "keep", name
        assert "unknown, never touched" in reason(plan, name)
    assert action(plan, f"nightly-{old}-rocm710") == "delete"  # the exact rocm710 pattern
    assert action(plan, release_tag(old, V1)) == "delete"
    assert plan.summary()["unknown_kept"] == len(strangers) + len(public_strangers)


def test_tags_of_a_variant_no_longer_configured_are_unknown_and_kept() -> None:
    cache = built(sha(1), day(1), V2) + built(sha(2), day(2)) + base(KEY_USED, day(0))
    plan = make_plan(make_inputs(cache, keep=1, variants=(V1,)))
    assert action(plan, release_tag(sha(1), V2)) == "keep"
    assert "unknown" in reason(plan, release_tag(sha(1), V2))


def test_folders_that_are_not_commits_are_never_touched() -> None:
    plan = make_plan(make_inputs(built(sha(1), day(1)) + base(KEY_USED, day(0)), keep=1,
                                 folders=[WheelFolder("simple"), WheelFolder(sha(1)[:12]), WheelFolder("nightly")]))
    assert all(d.action == "keep" for d in plan.decisions if d.target == "folder")
    assert "unknown, never touched" in reason(plan, "simple")


def test_a_tag_two_patterns_match_is_ambiguous_and_kept() -> None:
    # legal config, unlucky names: "nightly-{variant}" for rocm710 and "nightly-r{variant}" for ocm710
    tags = PublicTagPatterns(base_nightly="nightly-r{variant}")
    inputs = make_inputs(built(sha(1), day(1)) + base(KEY_USED, day(0)),
                         [TagInfo("nightly-rocm710", digest("x"))], keep=1, variants=(V1, "ocm710"))
    plan = make_plan(replace(inputs, public_tags=tags))
    [decision] = [d for d in plan.decisions if d.name == "nightly-rocm710"]
    assert (decision.action, decision.kind) == ("keep", "ambiguous")
    assert "nightly of rocm710, base_nightly of ocm710" in decision.reason


# -- registries that delete by digest ---------------------------------------------------------------------


@pytest.mark.parametrize("by_digest", [True, False])
def test_a_tag_sharing_a_digest_with_a_kept_tag_stays_only_where_deletion_is_by_digest(by_digest: bool) -> None:
    old, new = sha(1), sha(2)
    cache = built(old, day(1)) + built(new, day(2)) + base(KEY_USED, day(0))
    alias = TagInfo(public_tag(TAGS.base_nightly, variant=V1, commit=""), digest(f"b{KEY_USED}{V1}"))
    public = [alias, *public_night(old), *public_night(new)]
    plan = make_plan(make_inputs(cache, public, keep=1, public_by_digest=by_digest))
    old_base = public_tag(TAGS.base_nightly_commit, variant=V1, commit=old)
    old_release = public_tag(TAGS.nightly_commit, variant=V1, commit=old)

    assert action(plan, old_release) == "delete"
    if by_digest:
        assert action(plan, old_base) == "keep"
        assert "deletes by digest, which would delete" in reason(plan, old_base)
    else:  # ECR deletes the tag; the image stays under the alias
        assert action(plan, old_base) == "delete"


# -- the report -------------------------------------------------------------------------------------------------


def test_the_report_lists_every_decision_with_its_reason() -> None:
    cache = built(sha(1), day(1)) + built(sha(2), day(2)) + base(KEY_USED, day(0))
    cache.append(TagInfo("latest", digest("latest"), day(0)))
    plan = make_plan(make_inputs(cache, keep=1, folders=[WheelFolder(sha(1))]))
    text = plan.render(dry_run=True)

    assert text.startswith("DRY RUN: nothing is deleted.")
    assert "DELETE " not in text.replace("WOULD DELETE", "")
    for d in plan.decisions:
        assert d.line(dry_run=True) in text
    assert f"WOULD DELETE folder {STORE}/{sha(1)}/" in text
    assert f"KEEP         tag    {CACHE.location}:latest" in text
    assert plan.summary() == {"commits": 2, "commits_kept": 1, "commits_deleted": 1, "tags_deleted": 2,
                              "tags_kept": 5, "folders_deleted": 1, "folders_kept": 0, "unknown_kept": 1,
                              "images_deleted": 0, "images_kept": 0}
    assert "DELETE       tag" in plan.render(dry_run=False)


# -- XCom ---------------------------------------------------------------------------------------------------------


def test_decisions_round_trip_through_xcom_json() -> None:
    plan = make_plan(make_inputs(built(sha(1), day(1)) + built(sha(2), day(2)) + base(KEY_USED, day(0)), keep=1))
    for d in plan.delete:
        assert RetentionDecision.model_validate(d.model_dump(mode="json", exclude={"reason"})) == d.model_copy(
            update={"reason": ""})


# -- base wheels folders (<store>/base/<key>-<variant>-<digest12>/) -----------------------------------


def test_a_base_wheels_folder_stays_while_a_kept_commit_links_it_and_goes_after() -> None:
    linked, unlinked, shared = f"{KEY_USED}-{V1}-aaaaaaaaaaaa", f"{KEY_OLD}-{V1}-bbbbbbbbbbbb", "k-v-cccccccccccc"
    inputs = replace(
        make_inputs(built(sha(1), day(1)) + built(sha(2), day(2)) + base(KEY_USED, day(0)), keep=1,
                    folders=[WheelFolder(sha(1), day(1)), WheelFolder(sha(2), day(2)), WheelFolder("base")]),
        base_folders=(WheelFolder(linked, day(0)), WheelFolder(unlinked, day(0)), WheelFolder(shared, day(0))),
        base_links={sha(2): frozenset({linked, shared}), sha(1): frozenset({unlinked, shared})},
    )

    plan = make_plan(inputs)

    assert action(plan, sha(1), "folder") == "delete"
    assert action(plan, f"base/{linked}", "folder") == "keep"
    assert action(plan, f"base/{shared}", "folder") == "keep"
    assert action(plan, f"base/{unlinked}", "folder") == "delete"  # only the deleted commit linked it
    assert "no kept commit links it" in reason(plan, f"base/{unlinked}")
    assert action(plan, "base", "folder") == "keep"
    names = [d.name for d in plan.decisions if d.target == "folder"]
    assert names.index(f"base/{unlinked}") > names.index(sha(1))  # commit folders go first


def test_a_recent_or_undated_base_wheels_folder_is_kept_unlinked() -> None:
    """A night writes its base folder before the commit folder that links it: recent means in use."""
    fresh, undated = f"{KEY_NEW}-{V1}-aaaaaaaaaaaa", f"{KEY_NEW}-{V1}-bbbbbbbbbbbb"
    inputs = replace(make_inputs(built(sha(1), day(1)), keep=1),
                     base_folders=(WheelFolder(fresh, day(9)), WheelFolder(undated)), now=day(9),
                     protect_recent_hours=48)

    plan = make_plan(inputs)

    assert action(plan, f"base/{fresh}", "folder") == "keep" and "recent" in reason(plan, f"base/{fresh}")
    assert action(plan, f"base/{undated}", "folder") == "keep"
