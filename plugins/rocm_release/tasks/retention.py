"""The operators of ``rocm_release_retention``: thin Airflow adapters around ``adapters.retention_steps``.

``plan_retention`` reads the nightly runs in progress, lists, reads labels, plans and prints every
decision; ``apply_retention`` reads the runs, the aliases, the tags and untagged images once more and
deletes what the plan named and still may go, unless the run is a dry run. The config is the one the
DAG file parsed, frozen into ``plan_retention``'s XCom for ``apply_retention``. Heavy clients, the
core's run-time models and the XCom hand-off are imported where a running task needs them, so that
parsing the DAG stays fast and offline.

Task code has no database session in Airflow 3: the nightly runs in progress are read through the Task
SDK's calls to the execution API (the task instance's ``get_dr_count``, ``get_task_states``,
``get_dagrun_state`` and ``xcom_pull`` with another DAG's ``dag_id`` and ``run_id``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from rocm_release.core.config import ReleaseConfig
from rocm_release.core.errors import HandOffError
from rocm_release.core.task_ids import (
    IMAGE_PRODUCERS,
    NIGHTLY_DAG_ID,
    PLAN_RETENTION,
    RELEASE_SUMMARY,
    RESOLVE_RELEASE,
    in_group,
)
from rocm_release.tasks.policy import fail_fast

if TYPE_CHECKING:
    from rocm_release.core.retention_model import RunInUse

ACTIVE_RUN_STATES = ("queued", "running")
FINISHED_TASK_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


def _value(state: object) -> str:
    return str(getattr(state, "value", state))


def _candidates(ti: Any) -> list[str]:
    """Every nightly run id, those whose ``release_summary`` has not finished first (the likely active ones)."""
    states: dict[str, dict[str, Any]] = ti.get_task_states(dag_id=NIGHTLY_DAG_ID,
                                                          task_ids=[RESOLVE_RELEASE, RELEASE_SUMMARY])
    return sorted(states, key=lambda run_id: (_value(states[run_id].get(RELEASE_SUMMARY)) in FINISHED_TASK_STATES,
                                              run_id))


def _read_run(ti: Any, run_id: str, state: str) -> RunInUse:
    """What a run in progress uses: its plan's commit and bases, the digests its builds handed on."""
    from rocm_release.core.retention_model import RunInUse

    plan = ti.xcom_pull(dag_id=NIGHTLY_DAG_ID, task_ids=RESOLVE_RELEASE, run_id=run_id)
    run = RunInUse.from_hand_off(run_id, state, plan)
    refs = [ti.xcom_pull(dag_id=NIGHTLY_DAG_ID, task_ids=in_group(variant, task), run_id=run_id)
            for variant, _ in run.base_keys for task in IMAGE_PRODUCERS]
    return RunInUse.from_hand_off(run_id, state, plan, [r for r in refs if r])


def runs_in_use(ti: Any, log: Any) -> tuple[RunInUse, ...]:
    """The ``rocm_nightly_release`` runs queued or running now, and what each uses.

    One count of the active runs; when there are any, the states of ``resolve_release`` and
    ``release_summary`` of every run (a run's task instances exist from its creation), then the state of
    each candidate until every active run is found (those whose summary has not finished first), and
    the XComs of the active ones.
    """
    active = ti.get_dr_count(dag_id=NIGHTLY_DAG_ID, states=list(ACTIVE_RUN_STATES))
    found: list[RunInUse] = []
    for run_id in _candidates(ti) if active else ():
        if len(found) >= active:
            break
        state = _value(ti.get_dagrun_state(dag_id=NIGHTLY_DAG_ID, run_id=run_id))
        if state in ACTIVE_RUN_STATES:
            found.append(_read_run(ti, run_id, state))
    for run in found:
        log(f"{NIGHTLY_DAG_ID} in progress: {run.label}: commit {run.commit or '(no plan yet)'}, "
            f"{len(run.base_keys)} bases, {len(run.digests)} digests handed on")
    if len(found) < active:
        log(f"{active - len(found)} active {NIGHTLY_DAG_ID} run(s) not found among its task instances")
    return tuple(found)


def retention_settings(context: Any, config: ReleaseConfig) -> tuple[bool, int]:
    """(dry run?, commits to keep) for this run. A manual run is a dry run unless it says
    ``dry_run=false``; a scheduled run never is (its Params are the defaults nobody chose)."""
    from rocm_release.core.params import parse_retention_params
    from rocm_release.tasks.context import raw_params, run_kind

    params = parse_retention_params(raw_params(context))
    scheduled = run_kind(context["dag_run"].run_type) == "scheduled"
    return (False if scheduled else params.dry_run), params.keep_commits or config.retention.keep_commits


class PlanRetentionOperator(BaseOperator):
    """List tags, wheel folders and nightly aliases; read the kept images' base labels; print the plan."""

    ui_color = "#fdebd0"

    def __init__(self, *, config: ReleaseConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.release_config = config

    @fail_fast
    def execute(self, context: Any) -> dict[str, Any]:
        """Plan and print every decision; hand the deletions (and the config) to ``apply_retention``."""
        from rocm_release.adapters.retention_steps import plan_retention_run

        config = self.release_config
        dry_run, keep = retention_settings(context, config)
        runs = runs_in_use(context["ti"], self.log.info)
        return plan_retention_run(config, dry_run=dry_run, keep=keep, log=self.log.info, runs=runs)


class ApplyRetentionOperator(BaseOperator):
    """Delete what ``plan_retention`` decided (skipped on a dry run), after reading again what it assumed."""

    ui_color = "#fdedec"

    @fail_fast
    def execute(self, context: Any) -> dict[str, Any]:
        """Public tags, then wheel folders, then cache tags; an alias that moved since the plan wins."""
        from rocm_release.adapters.retention_steps import apply_retention_run
        from rocm_release.core.retention import RetentionDecision

        planned = context["ti"].xcom_pull(task_ids=PLAN_RETENTION)
        if not planned:
            raise HandOffError(f"{PLAN_RETENTION} left no plan")
        if planned["dry_run"]:
            raise AirflowSkipException(
                f"dry run: nothing deleted ({len(planned['delete'])} tags/folders would be); "
                f"the plan and every reason are in {PLAN_RETENTION}'s log")
        config = ReleaseConfig.model_validate(planned["config"])
        deletions = [RetentionDecision.model_validate(d) for d in planned["delete"]]
        runs = runs_in_use(context["ti"], self.log.info)  # read again: a run may have started since the plan
        return apply_retention_run(config, deletions, self.log.info, runs=runs).model_dump(mode="json")
