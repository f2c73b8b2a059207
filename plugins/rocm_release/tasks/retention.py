"""The operators of ``rocm_release_retention``: thin Airflow adapters around ``adapters.retention_steps``.

``plan_retention`` lists, reads labels, plans and prints every decision; ``apply_retention`` reads
the nightly aliases once more and deletes what the plan named, unless the run is a dry run. The config
is the one the DAG file parsed, frozen into ``plan_retention``'s XCom for ``apply_retention``. Heavy
clients are imported inside ``execute`` so that parsing the DAG stays fast and offline.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from rocm_release.core.config import ReleaseConfig
from rocm_release.core.errors import HandOffError
from rocm_release.core.params import parse_retention_params
from rocm_release.core.task_ids import PLAN_RETENTION
from rocm_release.tasks.context import raw_params, run_kind
from rocm_release.tasks.policy import fail_fast


def retention_settings(context: Any, config: ReleaseConfig) -> tuple[bool, int]:
    """(dry run?, commits to keep) for this run. A manual run is a dry run unless it says
    ``dry_run=false``; a scheduled run never is (its Params are the defaults nobody chose)."""
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
        return plan_retention_run(config, dry_run=dry_run, keep=keep, log=self.log.info)


class ApplyRetentionOperator(BaseOperator):
    """Delete what ``plan_retention`` decided (skipped on a dry run), after reading the aliases again."""

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
        return apply_retention_run(config, deletions, self.log.info).model_dump(mode="json")
