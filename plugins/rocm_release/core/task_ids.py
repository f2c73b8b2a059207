"""Task ids and XCom keys, written once: the DAG files, the operators and the tests use these names.

Per-variant tasks live in a TaskGroup named after the variant: their full id is
``in_group(variant, task)``, e.g. ``rocm710.build_wheels``.
"""

from __future__ import annotations

from typing import Literal

# The DAG ids (= the DAG files' names)
NIGHTLY_DAG_ID = "rocm_nightly_release"
RETENTION_DAG_ID = "rocm_release_retention"

# rocm_nightly_release
RESOLVE_RELEASE = "resolve_release"
RELEASE_SUMMARY = "release_summary"
NOTIFY_OUTCOME = "notify_outcome"  # the teardown after the summary: alerts (tasks.alerts)
CHECK_BASE_IMAGE = "check_base_image"
CHECK_WHEELS_IMAGE = "check_wheels_image"
CHECK_RELEASE_IMAGE = "check_release_image"
CHECK_WHEELS_PUBLISHED = "check_wheels_published"
CHOOSE_PATH = "choose_path"
BuildTask = Literal["build_base_image", "build_wheels", "build_release_image"]
BUILD_BASE_IMAGE: BuildTask = "build_base_image"
BUILD_WHEELS: BuildTask = "build_wheels"
BUILD_RELEASE_IMAGE: BuildTask = "build_release_image"
BUILD_ORDER: tuple[BuildTask, ...] = (BUILD_BASE_IMAGE, BUILD_WHEELS, BUILD_RELEASE_IMAGE)
REUSE_CACHED_IMAGES = "reuse_cached_images"
# The gate: cache tags first (a failed test keeps the cache, so a fix-forward is cheap), then the two smoke
# tests on the ROCm pool; nothing public moves unless both passed.
TAG_CACHE_IMAGES = "tag_cache_images"
TEST_RELEASE_IMAGE = "test_release_image"
TEST_WHEELS = "test_wheels"
GATE_TESTS = (TEST_RELEASE_IMAGE, TEST_WHEELS)
PUSH_IMAGES = "push_images"
PUBLISH_WHEELS = "publish_wheels"
PROMOTE_NIGHTLY = "promote_nightly"

# What each sensor observes (its ``artifact``), and the key its observation has in a decision.
Artifact = Literal["base_image", "wheels_image", "release_image", "wheels_published"]
SENSORS: dict[Artifact, str] = {
    "base_image": CHECK_BASE_IMAGE,
    "wheels_image": CHECK_WHEELS_IMAGE,
    "release_image": CHECK_RELEASE_IMAGE,
    "wheels_published": CHECK_WHEELS_PUBLISHED,
}
# The tasks whose XCom holds the pinned refs of a variant's images (kind → repo@sha256:…).
IMAGE_PRODUCERS = (*BUILD_ORDER, REUSE_CACHED_IMAGES)
# Tasks whose duration goes into the release summary.
TIMED_TASKS = (*SENSORS.values(), CHOOSE_PATH, *BUILD_ORDER, REUSE_CACHED_IMAGES, TAG_CACHE_IMAGES, *GATE_TESTS,
               PUSH_IMAGES, PUBLISH_WHEELS, PROMOTE_NIGHTLY)

# The Airflow pool (1 slot) of every task that writes a public name — push_images, publish_wheels,
# promote_nightly, apply_retention — across all runs of any kind (scheduled, manual, backfills: a
# backfill counts against its own max_active_runs, not the DAG's). Airflow-native mutual exclusion.
PUBLISHING_POOL = "rocm_publishing"

# rocm_release_retention
PLAN_RETENTION = "plan_retention"
APPLY_RETENTION = "apply_retention"

# XCom keys besides Airflow's "return_value".
XCOM_DECISION = "decision"  # choose_path: the PathDecision
XCOM_TIMING = "timing"  # every timed task: seconds its execute took
# promote_nightly: {"promoted": bool, "why": str}, pushed before it returns or skips (a skipped task has no
# return value); release_summary reads it from here.
XCOM_PROMOTION = "promotion"
# test_release_image, test_wheels: {"task", "passed", "why", "tail"} (core.smoke.gate_result), pushed before the
# task fails or skips, for the release summary.
XCOM_GATE = "gate"
# release_summary: the run's note (Markdown, at most core.report.NOTE_MAX characters), pushed before it returns or
# fails; the run-note listener (tasks.run_note) copies it onto the DAG run, where the UI shows it.
XCOM_NOTE = "note"


def in_group(variant: str, task: str) -> str:
    """The full id of a per-variant task: ``<variant>.<task>``."""
    return f"{variant}.{task}"
