"""What a task reads from its run: the run kind and time, the Params, and the XCom hand-off.

Tasks pass typed values through XCom: ``resolve_release`` the plan, ``choose_path`` its
decision, the builds (or ``reuse_cached_images``) the pinned refs. A missing or unreadable
XCom is a :class:`~rocm_release.core.errors.HandOffError` (fatal: retrying will not create it).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from rocm_release.core.config import ReleaseConfig
from rocm_release.core.decision import Observation, PathDecision, current_refs
from rocm_release.core.errors import HandOffError
from rocm_release.core.params import ParamsError, ReleaseParams, parse_params
from rocm_release.core.plan import ReleasePlan, RunKind
from rocm_release.core.report import VariantResults
from rocm_release.core.task_ids import (
    CHOOSE_PATH,
    GATE_TESTS,
    IMAGE_PRODUCERS,
    PROMOTE_NIGHTLY,
    PUBLISH_WHEELS,
    PUSH_IMAGES,
    RESOLVE_RELEASE,
    SENSORS,
    TIMED_TASKS,
    XCOM_DECISION,
    XCOM_GATE,
    XCOM_PROMOTION,
    XCOM_TIMING,
    in_group,
)


def run_kind(run_type: object) -> RunKind:
    """Airflow's run type → ours: scheduled, backfill, or manual (every other trigger)."""
    value = str(getattr(run_type, "value", run_type))
    if value == "scheduled":
        return "scheduled"
    if value == "backfill":
        return "backfill"
    return "manual"


def release_time(kind: RunKind, context: Mapping[str, Any]) -> datetime:
    """The moment whose branch tip is released: data interval end (scheduled/backfill), or run_after."""
    if kind != "manual":
        for key in ("data_interval_end", "logical_date"):
            value = context.get(key)
            if value is not None:
                return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    # A manual run may have no logical date (AIRFLOW3.md §6): run_after always exists.
    value = context["dag_run"].run_after
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def raw_params(context: Mapping[str, Any]) -> dict[str, Any]:
    """The run's Params merged with the trigger's conf (unknown keys in the conf are kept: they are errors)."""
    conf = dict(getattr(context["dag_run"], "conf", None) or {})
    return {**dict(context.get("params") or {}), **conf}


def validated_params(context: Mapping[str, Any], config: ReleaseConfig, kind: RunKind) -> ReleaseParams:
    """The run's Params, validated against the config; a backfill may not name a commit."""
    params = parse_params(raw_params(context), config)
    if kind != "manual" and params.skip_tests:
        raise ParamsError(
            f"param 'skip_tests': only a manual run may skip the smoke tests (this is a {kind} run); "
            "allowed here: false"
        )
    if kind == "backfill" and params.commit:
        raise ParamsError(
            "param 'commit': a backfill releases the branch tip as of each date; "
            "name a commit in a manual run instead"
        )
    return params


def _pull(context: Any, task_id: str, key: str = "return_value") -> Any:
    return context["ti"].xcom_pull(task_ids=task_id, key=key)


def plan_from_xcom(context: Any) -> ReleasePlan:
    """The plan ``resolve_release`` computed; HandOffError when it is missing or unreadable."""
    raw = _pull(context, RESOLVE_RELEASE)
    if not raw:
        raise HandOffError(f"no ReleasePlan in the XCom of {RESOLVE_RELEASE!r}; did it run?")
    try:
        return ReleasePlan.model_validate(raw)
    except ValidationError as exc:
        raise HandOffError(f"the XCom of {RESOLVE_RELEASE!r} is not a ReleasePlan: {exc}") from exc


def observations(context: Any, variant: str) -> dict[str, Observation]:
    """The four sensors' XComs of one variant, by artifact."""
    found: dict[str, Observation] = {}
    for artifact, task in SENSORS.items():
        raw = _pull(context, in_group(variant, task))
        if raw is None:
            raise HandOffError(f"sensor {in_group(variant, task)} left no observation")
        found[artifact] = Observation.model_validate(raw)
    return found


def decision_from_xcom(context: Any, variant: str) -> PathDecision:
    """The decision ``choose_path`` made for a variant."""
    raw = _pull(context, in_group(variant, CHOOSE_PATH), XCOM_DECISION)
    if raw is None:
        raise HandOffError(f"{in_group(variant, CHOOSE_PATH)} left no decision")
    return PathDecision.model_validate(raw)


def built_refs(context: Any, variant: str) -> list[dict[str, str] | None]:
    """The refs each build (or the reuse) of a variant handed on, in build order (None: did not run)."""
    return [_pull(context, in_group(variant, task)) for task in IMAGE_PRODUCERS]


def current_variant_refs(context: Any, plan: ReleasePlan, variant: str) -> dict[str, str]:
    """The pinned refs of a variant's four images: built in this run over observed."""
    return current_refs(plan, decision_from_xcom(context, variant), built_refs(context, variant))


def variant_results(context: Any, variant: str) -> VariantResults:
    """Everything a variant's tasks handed on, for the release report."""
    raw_decision = _pull(context, in_group(variant, CHOOSE_PATH), XCOM_DECISION)
    durations = {t: d for t in TIMED_TASKS if (d := _pull(context, in_group(variant, t), XCOM_TIMING)) is not None}
    return VariantResults(
        decision=PathDecision.model_validate(raw_decision) if raw_decision else None,
        pushed=_pull(context, in_group(variant, PUSH_IMAGES)),
        wheels=_pull(context, in_group(variant, PUBLISH_WHEELS)),
        promotion=_pull(context, in_group(variant, PROMOTE_NIGHTLY), XCOM_PROMOTION),
        gate=tuple(g for t in GATE_TESTS if (g := _pull(context, in_group(variant, t), XCOM_GATE))),
        durations=durations,
    )


def pushed_digests(context: Any, variant: str) -> dict[str, str] | None:
    """The digests ``push_images`` published for a variant (None when it did not run)."""
    pushed = _pull(context, in_group(variant, PUSH_IMAGES))
    return dict(pushed["digests"]) if pushed and pushed.get("digests") else None


def hand_on_promotion(context: Any, promotion: Mapping[str, Any]) -> None:
    """What ``promote_nightly`` did and why, for ``release_summary``: pushed under its own key before the
    task returns or skips itself (a skipped task leaves no return value)."""
    context["ti"].xcom_push(key=XCOM_PROMOTION, value=dict(promotion))
