"""The operators of ``rocm_nightly_release``: each reads its inputs, calls one core or adapter
function (``core.*`` or ``adapters.steps``) and returns the XCom.

Heavy clients (git, registries, docker) are imported inside ``execute`` so that parsing the DAG
stays fast and needs no network; so are the core's run-time models (plan, decision, report) and the
XCom hand-off (``tasks.context``), which only a running task needs. Every method that runs goes
through ``policy.fail_fast``.
Only ``resolve_release`` reads the config (the DAG file hands it over at parse time); it freezes
it into the plan, and every later task builds its clients from ``plan.config``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.branch import BaseBranchOperator
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rocm_release.core.task_ids import REUSE_CACHED_IMAGES, XCOM_DECISION, XCOM_NOTE, XCOM_TIMING, in_group
from rocm_release.tasks.policy import fail_fast

if TYPE_CHECKING:
    from rocm_release.core.build_commands import Stage
    from rocm_release.core.config import ReleaseConfig
    from rocm_release.core.plan import ReleasePlan, VariantPlan


class ResolveReleaseOperator(BaseOperator):
    """Turn Params + config + the run's dates into a frozen ReleasePlan (the task's XCom)."""

    ui_color = "#fdebd0"

    def __init__(self, *, config: ReleaseConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The config the DAG file parsed; frozen into the plan here and read by no later task.
        self.release_config = config

    @fail_fast
    def execute(self, context: Any) -> dict[str, Any]:
        """Validate everything before any side effect, then resolve the commit and the parents."""
        from rocm_release.adapters.steps import resolve_plan
        from rocm_release.tasks.context import release_time, run_kind, validated_params

        config = self.release_config
        kind = run_kind(context["dag_run"].run_type)
        params = validated_params(context, config, kind)
        as_of = release_time(kind, context)
        plan = resolve_plan(config, params=params, run_kind=kind, as_of=as_of)
        self.log.info("Release plan (%s run, as of %s): commit %s", kind, as_of.isoformat(), plan.commit)
        for v in plan.variants:
            self.log.info("  %s: base key %s, parent %s", v.name, v.base_key, v.parent_image)
        if plan.dry_run:
            self.log.info("DRY RUN: the plan follows; nothing will be built, pushed or uploaded.\n%s",
                          plan.model_dump_json(indent=2))
        return plan.model_dump(mode="json")


class ChoosePathOperator(BaseBranchOperator):
    """Pick the smallest set of builds from what the sensors saw (DESIGN.md's table)."""

    ui_color = "#e8daef"

    def __init__(self, *, variant: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.variant = variant

    @fail_fast
    def choose_branch(self, context: Any) -> Iterable[str]:
        """Decide, log why, hand the decision on through XCom, and return the tasks to run."""
        from rocm_release.adapters.docker_build import docker_cli
        from rocm_release.core.decision import decide
        from rocm_release.core.dry_run import dry_run_lines
        from rocm_release.tasks.context import observations, plan_from_xcom

        plan = plan_from_xcom(context)
        v = plan.variant(self.variant)
        seen = observations(context, self.variant)
        decision = decide(base=seen["base_image"], wheels_image=seen["wheels_image"],
                          release_image=seen["release_image"], wheels_published=seen["wheels_published"],
                          base_key=v.base_key, force_rebuild=plan.force_rebuild)
        context["ti"].xcom_push(key=XCOM_DECISION, value=decision.model_dump(mode="json"))
        for reason in decision.reasons:
            self.log.info("%s — %s", self.variant, reason)
        self.log.info("%s: builds to run: %s", self.variant, ", ".join(decision.builds) or "none (reuse)")
        if plan.dry_run:
            for line in dry_run_lines(plan, v, decision, str(context["run_id"]), cli=docker_cli()):
                self.log.info("%s", line)
            return []
        return [in_group(self.variant, task) for task in decision.builds or (REUSE_CACHED_IMAGES,)]


class ReuseCachedImagesOperator(BaseOperator):
    """Every image exists: hand the cached digests on, pinned, to the publishing tasks."""

    ui_color = "#d5f5e3"

    def __init__(self, *, variant: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.variant = variant

    @fail_fast
    def execute(self, context: Any) -> dict[str, str]:
        """The four digests of the variant, as observed."""
        from rocm_release.core.decision import reuse_refs
        from rocm_release.tasks.context import decision_from_xcom, plan_from_xcom

        refs = reuse_refs(plan_from_xcom(context), decision_from_xcom(context, self.variant))
        for kind, ref in refs.items():
            self.log.info("%s %s: reusing %s", self.variant, kind, ref)
        return refs


class _Timed(BaseOperator):
    """Records how long ``execute`` took (XCom key ``timing``) for the release summary."""

    def pre_execute(self, context: Any) -> None:
        """Start the clock."""
        self._started = time.monotonic()
        super().pre_execute(context)

    def post_execute(self, context: Any, result: Any = None) -> None:
        """Hand the duration on."""
        context["ti"].xcom_push(key=XCOM_TIMING, value=round(time.monotonic() - self._started, 3))
        super().post_execute(context, result)


def _refs(context: Any, plan: ReleasePlan, variant: str) -> dict[str, str]:
    """The pinned refs of a variant's four images (``tasks.context.current_variant_refs``)."""
    from rocm_release.tasks.context import current_variant_refs

    return current_variant_refs(context, plan, variant)


class BuildImageOperator(_Timed):
    """Build one stage on the ROCm pool (its ``queue`` and ``pool``) and push it by digest."""

    ui_color = "#fadbd8"

    def __init__(self, *, stage: Stage, variant: str, config: ReleaseConfig, **kwargs: Any) -> None:
        kwargs.setdefault("queue", config.build.queue)
        kwargs.setdefault("pool", config.build.pool)
        kwargs.setdefault("retries", 0)
        kwargs.setdefault("execution_timeout", timedelta(minutes=config.build.timeout_minutes))
        super().__init__(**kwargs)
        self.stage = stage
        self.variant = variant

    @fail_fast
    def execute(self, context: Any) -> dict[str, str]:
        """Export the source at the commit, build, push; return kind → ``repo@sha256:…``."""
        from rocm_release.adapters.steps import build_variant_stage
        from rocm_release.tasks.context import plan_from_xcom

        plan = plan_from_xcom(context)
        base_ref = None if self.stage == "base" else _refs(context, plan, self.variant).get("base")
        return build_variant_stage(plan, plan.variant(self.variant), self.stage, run_id=str(context["run_id"]),
                                   base_ref=base_ref, log=self.log.info)


class _VariantOperator(_Timed):
    """A per-variant publishing task: it skips when the run did not select its variant, or is a dry run."""

    def __init__(self, *, variant: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.variant = variant

    def _selected(self, context: Any) -> tuple[ReleasePlan, VariantPlan]:
        from rocm_release.tasks.context import plan_from_xcom

        plan = plan_from_xcom(context)
        if self.variant not in [v.name for v in plan.variants]:
            raise AirflowSkipException(f"variant {self.variant} is not selected in this run")
        return plan, plan.variant(self.variant)

    def _plan(self, context: Any) -> tuple[ReleasePlan, VariantPlan]:
        plan, v = self._selected(context)
        if plan.dry_run:
            raise AirflowSkipException("dry run: nothing is pushed, uploaded or promoted")
        return plan, v


class TagCacheImagesOperator(_VariantOperator):
    """The four digests' cache tags, before the smoke tests: a failed test keeps the cache (a cheap fix-forward)."""

    ui_color = "#d6eaf8"

    @fail_fast
    def execute(self, context: Any) -> dict[str, str]:
        """Tag the cache; kind → digest."""
        from rocm_release.adapters.smoke import tag_variant_cache

        plan, v = self._plan(context)
        return tag_variant_cache(plan, v, _refs(context, plan, self.variant), self.log.info)


class PushImagesOperator(_VariantOperator):
    """Give the digests their cache tags, then copy release and base images to the public registry."""

    ui_color = "#d4efdf"

    @fail_fast
    def execute(self, context: Any) -> dict[str, Any]:
        """Publish the four digests of this variant; return what was published."""
        from rocm_release.adapters.steps import push_variant_images

        plan, v = self._plan(context)
        pushed = push_variant_images(plan, v, _refs(context, plan, self.variant), self.log.info)
        for asset in self.outlets:
            context["outlet_events"][asset].extra = {"commit": plan.commit, "variant": v.name, **pushed.public}
        return pushed.model_dump(mode="json")


class PublishWheelsOperator(_VariantOperator):
    """Wheels of both wheels images → verified, platform-retagged, uploaded, then the PEP 503 index."""

    ui_color = "#d4efdf"

    @fail_fast
    def execute(self, context: Any) -> list[dict[str, Any]]:
        """Read /dist of the project and base wheels images through the registry API and publish them."""
        from rocm_release.adapters.steps import publish_variant_wheels

        plan, v = self._plan(context)
        published = publish_variant_wheels(plan, v, _refs(context, plan, self.variant), self.log.info)
        for asset in self.outlets:
            context["outlet_events"][asset].extra = {"commit": plan.commit, "variant": v.name,
                                                     "index": v.wheels_url}
        return [f.model_dump(mode="json") for f in published]


class PromoteNightlyOperator(_VariantOperator):
    """Move the nightly aliases (public image tags and ``nightly/<variant>/``), only forwards."""

    ui_color = "#fdedec"

    @fail_fast
    def execute(self, context: Any) -> dict[str, Any]:
        """Promote if this run may, and only if that is not a step back; say why either way.

        A run that moves nothing (backfill, dry run, promote=false, a commit off the release branch, a step
        back) ends ``skipped``, not ``success``: the task did nothing, and its state says so. The reason
        is in the log, the skip, and (XCom ``promotion``) the release summary, which runs after any state.
        """
        from rocm_release.adapters.images import digest_of
        from rocm_release.adapters.steps import promote_variant
        from rocm_release.tasks.context import hand_on_promotion, pushed_digests

        plan, v = self._selected(context)
        # A dry run is refused by promote_variant before the digests are read (none were pushed).
        digests = {} if plan.dry_run else pushed_digests(context, self.variant) or {
            k: digest_of(r) for k, r in _refs(context, plan, self.variant).items()}
        promotion = promote_variant(plan, v, digests, self.log.info)
        hand_on_promotion(context, promotion)
        if not promotion["promoted"]:
            raise AirflowSkipException(f"not promoted: {promotion['why']}")
        return promotion


class ReleaseSummaryOperator(BaseOperator):
    """One report per run: per variant the path taken and why, digests, sizes, wheels, commands, durations."""

    ui_color = "#fcf3cf"

    @fail_fast
    def execute(self, context: Any) -> dict[str, Any]:
        """Gather what the tasks handed on, print the report, and store it next to the wheels."""
        from rocm_release.adapters.steps import image_sizes, store_report
        from rocm_release.core.report import (
            OUTCOME_FAILED,
            build_report,
            changed_nothing,
            public_index_url,
            render_markdown,
            run_note,
        )
        from rocm_release.tasks.context import plan_from_xcom, variant_results

        plan = plan_from_xcom(context)
        results = {v.name: variant_results(context, v.name) for v in plan.variants}
        sizes = {name: image_sizes(plan, r.digests(), self.log.info) for name, r in results.items() if r.digests()}
        report = build_report(plan, results, sizes, run_id=str(context["run_id"]),
                              generated=datetime.now(UTC).isoformat())
        markdown = render_markdown(report)
        self.log.info("Release summary:\n%s", markdown)
        url = public_index_url(plan.config.wheel_store.public_url, plan.store_url, plan.summary_url)
        context["ti"].xcom_push(key=XCOM_NOTE, value=run_note(report, url if not plan.dry_run else None))
        if report["outcome"] == OUTCOME_FAILED:
            raise AirflowFailException("the release is incomplete: see the variants without digests or wheels above")
        if not plan.dry_run:
            noop = changed_nothing(plan, results)
            if store_report(plan, report, markdown, self.log.info, keep_existing=noop):
                self.log.info("Stored %s and RELEASE.json", plan.summary_url)
            else:
                self.log.info("Nothing changed tonight: %s keeps the report of the night that published it",
                              plan.summary_url)
        return report


__all__ = [
    "BuildImageOperator",
    "ChoosePathOperator",
    "PromoteNightlyOperator",
    "PublishWheelsOperator",
    "PushImagesOperator",
    "ReleaseSummaryOperator",
    "ResolveReleaseOperator",
    "ReuseCachedImagesOperator",
    "TagCacheImagesOperator",
]
