"""
### rocm_release_retention — weekly clean-up of old nightly tags and wheel folders

**What it does.** `plan_retention` reads the `rocm_nightly_release` runs that
are queued or running (their plans, through the Task SDK), lists the cache
and public repositories (and ECR's untagged images), the wheel store's
folders and the `nightly/` aliases, and keeps: the newest N commits by *push
time* (config `retention.keep_commits`, default 14; never by name), every
commit a `nightly` alias names, everything a nightly run in progress uses
("in use by run <run_id>"), everything pushed in the last
`retention.protect_recent_hours` (default 48), every base a kept image was
built on (read from its labels) plus the newest base of each variant, and
every tag that matches no exact pattern ("unknown, kept"). Its log lists every
tag, untagged image and folder with `DELETE`/`KEEP` and the reason.
`apply_retention` reads the runs, the aliases, the doomed tags and images
again and deletes what may still go: public tags (Docker Hub: through the Hub
API, tag by tag), then `<store>/<commit>/` folders, then cache tags (ECR: ≤100
per call; OCI: by digest, refusing if a kept tag shares it), then ECR's
untagged images by digest.

**Dry run.** A run triggered by hand is a dry run unless `dry_run` is unticked
(`{"dry_run": false}`): `apply_retention` is then *skipped*. Scheduled runs
delete. `keep_commits` overrides the config for one run.

**Healthy looks like:** `plan_retention` in seconds to a few minutes, a
deletion count of about one week of commits, `apply_retention` green.

**Where to look when it fails.**
- `plan_retention` failed at once: a fatal registry/store error (401/403, an
  unreadable nightly alias index). The log names the registry or path. Nothing
  was deleted. Fix it and clear the task.
- `plan_retention` retried and failed: the registry or store was down.
- `plan_retention` or `apply_retention` failed at once naming `hub.docker.com`
  (or the `hub_api`): Docker Hub refused the public registry connection's
  login or access token (401/403). Fix the connection (`login` and a personal
  access token with delete rights) and clear the task.
- `apply_retention` failed with "refusing to delete": an OCI registry deletes
  by digest and a tag outside the plan now shares a doomed digest. Nothing in
  that repository was deleted. Clear *both* tasks so the plan is made again.
- `apply_retention` failed half-way: clear it; deletes of what is already
  gone count as done. A `SKIP` line means the plan no longer holds for it: a
  nightly alias moved onto it, a nightly run started using it, its tag moved
  to another image, an untagged image was tagged again, or it was pushed
  within the window. It was kept, with the rest of its commit; the next run
  decides again.

**Re-running safely.** Always. A manual run without `dry_run=false` deletes nothing.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from rocm_release.adapters.config_file import load_config
from rocm_release.core import task_ids as ids
from rocm_release.tasks.params import retention_params
from rocm_release.tasks.retention import ApplyRetentionOperator, PlanRetentionOperator

CONFIG = load_config()

IO_RETRIES = {
    "retries": 3,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=15),
}

with DAG(
    dag_id="rocm_release_retention",
    description="Delete old per-commit tags and wheel folders; keep the newest commits and what nightly uses",
    doc_md=__doc__,
    schedule=CONFIG.retention.schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "release-engineering", "retries": 0},
    tags=["release", "rocm", "retention"],
) as dag:
    plan = PlanRetentionOperator(task_id=ids.PLAN_RETENTION, config=CONFIG, **IO_RETRIES)
    # Never interleaved with a night's publishing (ids.PUBLISHING_POOL, one slot).
    apply = ApplyRetentionOperator(task_id=ids.APPLY_RETENTION, pool=ids.PUBLISHING_POOL, **IO_RETRIES)

    plan >> apply

# Attached once the tasks exist, so that no task carries a copy of them (as in rocm_nightly_release.py).
dag.params = retention_params(CONFIG)
