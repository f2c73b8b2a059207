"""The retention DAG's operators: thin Airflow adapters around :mod:`rocm_release.core.retention`.

``plan_retention`` lists, reads labels, plans and prints every decision; ``apply_retention`` reads
the nightly aliases once more and deletes what the plan named, unless the run is a dry run. Heavy
clients are imported inside ``execute`` so that parsing the DAG stays fast and offline.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from airflow.sdk import BaseOperator, Param
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rocm_release.adapters.config_file import load_config
from rocm_release.core.config import ReleaseConfig
from rocm_release.core.plan import describe_param_errors
from rocm_release.tasks.nightly import run_kind

PLAN_TASK = "plan_retention"


class RetentionParams(BaseModel):
    """A retention run's Params, validated. ``keep_commits`` None: the config's ``retention.keep_commits``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dry_run: bool = True
    keep_commits: Annotated[int, Field(ge=1, le=10_000)] | None = None


def retention_params(config: ReleaseConfig) -> dict[str, Param]:
    """Params of the trigger form. Their defaults apply to manual runs only: a scheduled run deletes."""
    return {
        "dry_run": Param(
            True, type="boolean", title="Dry run",
            description="Manual runs: print what would be deleted and kept, and why; delete nothing. "
            "Untick (or pass dry_run=false) to delete. Scheduled runs always delete.",
        ),
        "keep_commits": Param(
            None, type=["null", "integer"], minimum=1, maximum=10_000, title="Commits to keep",
            description=f"How many of the newest commits (by push time) to keep. "
            f"Empty: the config's retention.keep_commits ({config.retention.keep_commits}).",
        ),
    }


def retention_settings(context: Any, config: ReleaseConfig) -> tuple[bool, int]:
    """(dry run?, commits to keep) for this run. A manual run is a dry run unless it says
    ``dry_run=false``; a scheduled run never is (its Params are the defaults nobody chose)."""
    conf = dict(getattr(context["dag_run"], "conf", None) or {})
    merged = {**dict(context.get("params") or {}), **conf}
    try:
        params = RetentionParams.model_validate(merged)
    except ValidationError as exc:
        raise AirflowFailException(describe_param_errors(exc, sorted(RetentionParams.model_fields))) from exc
    scheduled = run_kind(context["dag_run"].run_type) == "scheduled"
    return (False if scheduled else params.dry_run), params.keep_commits or config.retention.keep_commits


def _store(config: ReleaseConfig) -> Any:
    from rocm_release.adapters.store import store_root

    return store_root(config.wheel_store.url, config.wheel_store.connection_id)


def _fatal(exc: Exception) -> Exception:
    """Credentials refused, a refusal to delete, an unreadable answer: retrying will not help."""
    from rocm_release.adapters.store import FatalStoreError
    from rocm_release.core.index import IndexPageError
    from rocm_release.core.registry import FatalRegistryError

    if isinstance(exc, FatalRegistryError | FatalStoreError | IndexPageError):
        return AirflowFailException(str(exc))
    return exc


class PlanRetentionOperator(BaseOperator):
    """List tags, wheel folders and nightly aliases; read the kept images' base labels; print the plan."""

    ui_color = "#fdebd0"

    def execute(self, context: Any) -> dict[str, Any]:
        """Plan and print every decision; hand the deletions to ``apply_retention`` (XCom)."""
        from rocm_release.adapters.registry.clients import registry_for
        from rocm_release.core.retention import (
            CallCount,
            images_to_inspect,
            observe_retention,
            plan_retention,
            read_base_use,
        )

        config = load_config()
        dry_run, keep = retention_settings(context, config)
        self.log.info("%s: keep the newest %d commits", "DRY RUN" if dry_run else "Retention", keep)
        started = time.monotonic()
        calls = CallCount()
        cache, public = registry_for(config.cache_registry), registry_for(config.public_registry)
        try:
            inputs = observe_retention(config, cache=cache, public=public, store=_store(config), keep_commits=keep,
                                       log=self.log.info, calls=calls)
            images = images_to_inspect(inputs)
            base_use = read_base_use(cache, images, self.log.info, calls)
        except Exception as exc:
            raise _fatal(exc) from exc
        plan = plan_retention(inputs, base_use)
        self.log.info("%s", plan.render(dry_run=dry_run))
        self.log.info("Planned in %.1f s; calls besides the tag listings: %s", time.monotonic() - started, calls)
        return {
            "dry_run": dry_run,
            "keep_commits": keep,
            "summary": plan.summary(),
            # Reasons are in this task's log; the XCom carries what apply needs.
            "delete": [d.model_dump(mode="json", exclude={"reason"}) for d in plan.delete],
        }


class ApplyRetentionOperator(BaseOperator):
    """Delete what ``plan_retention`` decided (skipped on a dry run), after reading the aliases again."""

    ui_color = "#fdedec"

    def execute(self, context: Any) -> dict[str, Any]:
        """Public tags, then wheel folders, then cache tags; an alias that moved since the plan wins."""
        from rocm_release.adapters.registry.clients import registry_for
        from rocm_release.core.retention import RetentionDecision, apply_retention, read_guard

        planned = context["ti"].xcom_pull(task_ids=PLAN_TASK)
        if not planned:
            raise AirflowFailException(f"{PLAN_TASK} left no plan")
        if planned["dry_run"]:
            raise AirflowSkipException(
                f"dry run: nothing deleted ({len(planned['delete'])} tags/folders would be); "
                f"the plan and every reason are in {PLAN_TASK}'s log")
        config = load_config()
        deletions = [RetentionDecision.model_validate(d) for d in planned["delete"]]
        cache, public = registry_for(config.cache_registry), registry_for(config.public_registry)
        cache_location = f"{cache.name}/{config.cache_registry.repository}"
        targets = {
            f"{public.name}/{config.public_registry.repository}": (public, config.public_registry.repository),
            cache_location: (cache, config.cache_registry.repository),
        }
        store = _store(config)
        try:
            guard = read_guard(config, public=public, store=store)
            applied = apply_retention(deletions, targets=targets, cache_location=cache_location, store=store,
                                      store_url=config.wheel_store.url, log=self.log.info, guard=guard)
        except Exception as exc:
            raise _fatal(exc) from exc
        self.log.info("Deleted: %s tags (%s), %d wheel folders; skipped %d",
                      sum(applied.tags_deleted.values()), applied.tags_deleted, applied.folders_deleted,
                      len(applied.skipped))
        return applied.model_dump(mode="json")
