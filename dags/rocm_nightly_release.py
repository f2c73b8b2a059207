"""
### rocm_nightly_release — the nightly ROCm release (images + wheels)

**What it does.** `resolve_release` picks the commit (scheduled runs and
backfills: the branch tip as of the run's data interval end; manual runs: the
`commit` Param or the tip now) and freezes every name into a `ReleasePlan`
(XCom). Per variant, four sensors observe what already exists, `choose_path`
picks the smallest set of builds (DESIGN.md's table), the builds push by
digest, `tag_cache_images` tags them in the cache, the smoke-test gate runs on
the ROCm pool (`test_release_image`: the release image by digest runs the
configured smoke command; `test_wheels`: the wheels installed with pip into a
clean container of the parent image), and only when both passed do
`push_images`, `publish_wheels` and `promote_nightly` publish.
`release_summary` prints the report with install commands (and leaves a short
version as the run's note); `notify_outcome` alerts when a night failed, and
once when it recovered.

**Healthy looks like:** a no-op night (same commit as yesterday) finishes in
minutes with every variant on `reuse_cached_images` and no build task run; a
night with a new commit runs `build_wheels` and `build_release_image` only.
A `build_base_image` run means the base key changed (Dockerfile, inputs,
parent image, args): look at `choose_path`'s log, which says why.

**Where to look when it fails.**
- `test_release_image` or `test_wheels` failed: the build is broken (or the
  smoke command is). Nothing public moved; the cache keeps the images, so the
  fix-forward night rebuilds only what the fix changes. The task log and the
  release summary quote the container's last lines. Emergency only: a manual
  run with `skip_tests` publishes untested (and says so).
- A `check_*` sensor failed at once: a fatal registry/store error (401/403,
  malformed answer). The log names the registry, repository and connection.
  Fix the connection; nothing was rebuilt or published.
- A `check_*` sensor timed out: the registry/store was down the whole time.
  Clear the task once it is back; an outage is never treated as "absent".
- A registry or store outage does not fail a task at once: every push, copy
  and upload is retried inside its task for the config's `retry` window (the
  log says "attempt N failed …; retrying in …"). A task that fails with
  "still failing after N attempts … (retry window)" met a longer outage.
- `notify_outcome` failed: the alert did not go out (the SMTP or Slack
  connection); the night's own state is what its other tasks say.
- A build failed: nothing after it publishes. Clear the build task: builds are
  idempotent and reuse what was pushed.
- `publish_wheels` failed: clear it; it converges (skips files already there,
  writes the index last). If it replaced rebuilt bytes of the commit `nightly`
  points at, `nightly/<variant>/` reads "not published" until the retry
  restores it (a `.withdrawn.json` marker remembers the commit).
- `promote_nightly` failed with "moved … since the decision": another run moved
  the alias between this run's decision and its write; nothing was half-moved,
  and the task's retry decides again. Publishing tasks share the one-slot pool
  `rocm_publishing`, so this needs a resized pool or a task cleared by hand.

**Re-running safely.** Clearing any task is safe. A manual run of an older
commit publishes its per-commit artifacts and never moves `nightly`
backwards; a commit not on the release branch is published per commit and
never promoted ("not on the release branch"); `dry_run` observes and plans
only. Backfills never promote. A `promote_nightly` that moved nothing (backfill,
dry run, promote=false, a commit off the branch, a step back) ends `skipped`,
and its log and the release summary say "not promoted: <why>".
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, TaskGroup, TriggerRule

from rocm_release.adapters.config_file import load_config
from rocm_release.core import task_ids as ids
from rocm_release.tasks.alerts import NotifyOutcomeOperator, deadline_alert
from rocm_release.tasks.gate import TestReleaseImageOperator, TestWheelsOperator
from rocm_release.tasks.nightly import (
    BuildImageOperator,
    ChoosePathOperator,
    PromoteNightlyOperator,
    PublishWheelsOperator,
    PushImagesOperator,
    ReleaseSummaryOperator,
    ResolveReleaseOperator,
    ReuseCachedImagesOperator,
    TagCacheImagesOperator,
)
from rocm_release.tasks.params import release_params, variant_assets
from rocm_release.tasks.sensors import ArtifactSensor

CONFIG = load_config()

SENSING = {
    "poke_interval": CONFIG.sensors.poke_interval,
    "max_wait": timedelta(seconds=CONFIG.sensors.max_wait),
    "timeout": CONFIG.sensors.timeout,
}
AFTER_BRANCH = TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
# Transient errors (outage, 5xx, throttling) are retried; a fatal one fails at once (tasks.policy).
IO_RETRIES = {
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}

with DAG(
    dag_id="rocm_nightly_release",
    description="Build and publish the nightly ROCm images and wheels",
    doc_md=__doc__,
    schedule=CONFIG.schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "release-engineering", "retries": 0},
    tags=["release", "rocm", "nightly"],
    deadline=deadline_alert(CONFIG),
) as dag:
    resolve = ResolveReleaseOperator(task_id=ids.RESOLVE_RELEASE, config=CONFIG, **IO_RETRIES)
    # The summary reports every variant, also one that failed (it then says so and publishes no report).
    summary = ReleaseSummaryOperator(task_id=ids.RELEASE_SUMMARY, trigger_rule=TriggerRule.ALL_DONE, **IO_RETRIES)

    for variant in CONFIG.variants:
        name = variant.name
        with TaskGroup(group_id=name, tooltip=f"ROCm {variant.rocm_version}, Python {variant.python_version}"):
            sensors = [ArtifactSensor(task_id=task, artifact=artifact, variant=name, **SENSING)
                       for artifact, task in ids.SENSORS.items()]
            choose = ChoosePathOperator(task_id=ids.CHOOSE_PATH, variant=name, retries=0)
            build_base = BuildImageOperator(task_id=ids.BUILD_BASE_IMAGE, stage="base", variant=name, config=CONFIG)
            # A build the branch skipped never blocks the next one; a failed one stops it.
            build_wheels = BuildImageOperator(task_id=ids.BUILD_WHEELS, stage="wheels", variant=name,
                                              config=CONFIG, trigger_rule=AFTER_BRANCH)
            build_release = BuildImageOperator(task_id=ids.BUILD_RELEASE_IMAGE, stage="release", variant=name,
                                               config=CONFIG, trigger_rule=AFTER_BRANCH)
            reuse = ReuseCachedImagesOperator(task_id=ids.REUSE_CACHED_IMAGES, variant=name, retries=0)
            # The gate: cache tags (kept even when a test fails), then both smoke tests on the ROCm pool.
            tag_cache = TagCacheImagesOperator(task_id=ids.TAG_CACHE_IMAGES, variant=name, trigger_rule=AFTER_BRANCH,
                                               **IO_RETRIES)
            tests = [TestReleaseImageOperator(task_id=ids.TEST_RELEASE_IMAGE, variant=name, config=CONFIG),
                     TestWheelsOperator(task_id=ids.TEST_WHEELS, variant=name, config=CONFIG)]
            # Publishing runs after whichever path ran and both tests (or their emergency skip); never after a
            # failed build or test (upstream_failed).
            assets = variant_assets(name)
            # Writers of public names: one at a time across every run of any kind (ids.PUBLISHING_POOL).
            push = PushImagesOperator(task_id=ids.PUSH_IMAGES, variant=name, trigger_rule=AFTER_BRANCH,
                                      outlets=[assets["images"]], pool=ids.PUBLISHING_POOL, **IO_RETRIES)
            publish = PublishWheelsOperator(task_id=ids.PUBLISH_WHEELS, variant=name, trigger_rule=AFTER_BRANCH,
                                            outlets=[assets["wheels"]], pool=ids.PUBLISHING_POOL, **IO_RETRIES)
            promote = PromoteNightlyOperator(task_id=ids.PROMOTE_NIGHTLY, variant=name, pool=ids.PUBLISHING_POOL,
                                             **IO_RETRIES)

            resolve >> sensors >> choose
            choose >> [build_base, build_wheels, build_release, reuse]
            build_base >> build_wheels >> build_release
            [build_release, reuse] >> tag_cache >> tests
            [tag_cache, *tests] >> push
            [tag_cache, *tests] >> publish
            [push, publish] >> promote >> summary

    # Alerts last, as a teardown: it runs whatever happened, and its state never decides the run's.
    notify = NotifyOutcomeOperator(task_id=ids.NOTIFY_OUTCOME, config=CONFIG, trigger_rule=TriggerRule.ALL_DONE,
                                   **IO_RETRIES)
    summary >> notify.as_teardown()

# The Params are attached once the tasks exist. A task created while the DAG has Params carries its own deep
# copy of them, which the dag-processor validates again (jsonschema) for every task on every parse: most of
# the parse time with 12 variants. A running task reads the DAG's Params (Airflow merges the DAG's, then its
# own), so each task sees the same Params either way; the trigger form and its validation are the DAG's.
dag.params = release_params(CONFIG)
