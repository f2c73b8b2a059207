"""The release report's "nothing changed" verdict: a no-op night keeps the stored report and writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from rocm_release.core.decision import Observation, decide
from rocm_release.core.plan import LABEL_BASE_DIGEST, LABEL_BASE_KEY
from rocm_release.core.report import VariantResults, build_report, changed_nothing, render_markdown
from tests.unit.test_plan import _plan

DIGEST = "sha256:" + "c" * 64


def results(*, built: bool = False, uploaded: bool = False, promoted: bool = False,
            key: str) -> VariantResults:
    labels = {LABEL_BASE_KEY: key, LABEL_BASE_DIGEST: DIGEST}
    image = Observation(present=not built, digest=DIGEST, labels=labels)
    decision = decide(base=Observation(present=True, digest=DIGEST, labels=labels), wheels_image=image,
                      release_image=image, wheels_published=Observation(present=True), base_key=key,
                      force_rebuild=False)
    wheels: list[dict[str, Any]] = [{"filename": "x.whl", "uploaded": uploaded}]
    return VariantResults(decision=decision, pushed={}, wheels=wheels, promotion={"promoted": promoted})


@pytest.mark.parametrize("change", ["built", "uploaded", "promoted"])
def test_a_build_an_upload_or_a_promotion_is_a_change(change: str) -> None:
    plan = _plan("demo")
    quiet = {v.name: results(key=v.base_key) for v in plan.variants}
    one_changed = {**quiet, plan.variants[0].name: results(key=plan.variants[0].base_key, **{change: True})}

    assert changed_nothing(plan, quiet)
    assert not changed_nothing(plan, one_changed)


def test_a_variant_without_a_decision_is_not_a_quiet_night() -> None:
    plan = _plan("demo")
    partial = {v.name: results(key=v.base_key) for v in plan.variants}
    partial[plan.variants[-1].name] = VariantResults()

    assert not changed_nothing(plan, partial)


@pytest.mark.parametrize(("promotion", "line"), [
    ({"promoted": False, "why": "backfills never promote"}, "- nightly: not promoted: backfills never promote"),
    ({"promoted": True, "why": "images: moving forwards; wheels: moving forwards"},
     "- nightly: promoted: images: moving forwards; wheels: moving forwards"),
])
def test_the_summary_says_whether_nightly_moved_and_why(promotion: dict[str, Any], line: str) -> None:
    plan = _plan("demo")
    results = {v.name: VariantResults(pushed={"digests": {}}, wheels=[], promotion=promotion) for v in plan.variants}
    report = build_report(plan, results, {}, run_id="backfill__x", generated="now")
    assert line in render_markdown(report).splitlines()


def test_the_run_note_is_short_enough_for_airflow_even_with_many_variants() -> None:
    from rocm_release.core.report import NOTE_MAX, run_note

    plan = _plan("demo")
    gate = ({"task": "v.test_release_image", "ran": True, "passed": False},
            {"task": "v.test_wheels", "ran": False, "passed": True})
    results = {v.name: VariantResults(gate=gate, promotion={"promoted": False}) for v in plan.variants}
    report = build_report(plan, results, {}, run_id="scheduled__x", generated="now")
    note = run_note(report, "https://wheels.example/abc/RELEASE.md")
    assert note.startswith(f"**FAILED**: tinyllm `{plan.commit[:12]}` (scheduled run)")
    assert "gate: test_release_image FAILED, test_wheels skipped; nightly: not promoted" in note
    assert note.endswith("Full report: https://wheels.example/abc/RELEASE.md")
    report["variants"] = {f"rocm{i:03d}": report["variants"][plan.variants[0].name] for i in range(40)}
    assert len(run_note(report, "https://x")) == NOTE_MAX
