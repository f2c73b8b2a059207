"""One function per task of ``rocm_release_retention``: list and plan, then apply.

Clients come from the config that ``plan_retention`` froze into its XCom (the DAG file read it once).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from rocm_release.adapters.registry.clients import registry_for
from rocm_release.adapters.retention import (
    Applied,
    CallCount,
    apply_retention,
    observe_retention,
    read_base_use,
)
from rocm_release.adapters.retention_current import read_current
from rocm_release.adapters.store import store_root
from rocm_release.core.config import ReleaseConfig
from rocm_release.core.retention import RetentionDecision, RunInUse, images_to_inspect, plan_retention

Log = Callable[[str], None]


def _store(config: ReleaseConfig) -> Any:
    return store_root(config.wheel_store.url, config.wheel_store.connection_id)


def plan_retention_run(config: ReleaseConfig, *, dry_run: bool, keep: int, log: Log,
                       runs: Sequence[RunInUse] = (), now: datetime | None = None) -> dict[str, Any]:
    """List tags, untagged images, wheel folders and aliases; read the kept images' base labels; log the plan.
    ``runs``: the nightly runs queued or running; ``now`` (default: now) ends the recent window.

    Returns what ``apply_retention`` needs (the deletions, without reasons: those are in the log)
    and the config the plan was made with.
    """
    log(f"{'DRY RUN' if dry_run else 'Retention'}: keep the newest {keep} commits")
    started = time.monotonic()
    calls = CallCount()
    cache, public = registry_for(config.cache_registry), registry_for(config.public_registry)
    inputs = observe_retention(config, cache=cache, public=public, store=_store(config), keep_commits=keep,
                               log=log, calls=calls, runs=runs, now=now or datetime.now(UTC))
    base_use = read_base_use(cache, images_to_inspect(inputs), log, calls)
    plan = plan_retention(inputs, base_use)
    log(plan.render(dry_run=dry_run))
    log(f"Planned in {time.monotonic() - started:.1f} s; calls besides the tag listings: {calls}")
    return {
        "dry_run": dry_run,
        "keep_commits": keep,
        "summary": plan.summary(),
        "delete": [d.model_dump(mode="json", exclude={"reason"}) for d in plan.delete],
        "config": config.model_dump(mode="json"),
    }


def apply_retention_run(config: ReleaseConfig, deletions: list[RetentionDecision], log: Log,
                        runs: Sequence[RunInUse] = (), now: datetime | None = None) -> Applied:
    """Read again what the plan assumed (aliases, tags, untagged images; ``runs`` in progress now; the recent
    window ending ``now``), then delete what still may go: public tags, wheel folders, cache tags and images."""
    cache, public = registry_for(config.cache_registry), registry_for(config.public_registry)
    cache_location = f"{cache.name}/{config.cache_registry.repository}"
    targets = {
        f"{public.name}/{config.public_registry.repository}": (public, config.public_registry.repository),
        cache_location: (cache, config.cache_registry.repository),
    }
    store = _store(config)
    current = read_current(config, deletions, targets=targets, public=public, store=store, runs=runs,
                           now=now or datetime.now(UTC))
    applied = apply_retention(deletions, targets=targets, cache_location=cache_location, store=store,
                              store_url=config.wheel_store.url, log=log, current=current)
    log(f"Deleted: {sum(applied.tags_deleted.values())} tags ({applied.tags_deleted}), "
        f"{sum(applied.images_deleted.values())} untagged images, {applied.folders_deleted} wheel folders; "
        f"skipped {len(applied.skipped)}; already gone {applied.already_gone}")
    return applied
