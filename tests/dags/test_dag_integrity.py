"""Rules for the DAG files, as tests: they load, hold exactly our DAGs, and parse cheaply and offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

EXPECTED_DAG_IDS = {"rocm_nightly_release", "rocm_release_retention"}
IO_TASKS = {"resolve_release", "notify_outcome", "tag_cache_images", "push_images",
            "publish_wheels", "promote_nightly", "release_summary",
            "plan_retention", "apply_retention"}
NO_RETRY_TASKS = {"choose_path", "reuse_cached_images"}
# Sensors: their timeout is the budget for outages; one retry only absorbs apache/airflow#71172.
SENSOR_TASKS = {"check_base_image", "check_wheels_image", "check_release_image", "check_wheels_published"}
BUILD_TASKS = {"build_base_image", "build_wheels", "build_release_image"}
# The smoke tests: a failing container is fatal at once (SmokeTestFailed); two retries absorb a daemon outage.
GATE_TASKS = {"test_release_image", "test_wheels"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    return bag


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


def test_exactly_the_expected_dags(dagbag) -> None:
    # A DagBag that loads nothing fails here: the set is not empty.
    assert set(dagbag.dag_ids) == EXPECTED_DAG_IDS


def test_dag_id_is_the_file_name(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert os.path.basename(dag.fileloc) == f"{dag_id}.py"


def test_every_task_has_an_owner_and_deliberate_retries(dagbag) -> None:
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            name = task.task_id.rsplit(".", 1)[-1]
            assert task.owner == "release-engineering", task.task_id
            if name in IO_TASKS:
                assert task.retries >= 2 and task.retry_exponential_backoff, task.task_id
            elif name in NO_RETRY_TASKS or name in BUILD_TASKS:
                assert task.retries == 0, task.task_id
            elif name in SENSOR_TASKS:
                assert task.retries == 1, task.task_id
            elif name in GATE_TASKS:
                assert task.retries == 2, task.task_id
            else:
                pytest.fail(f"{task.task_id}: no retry rule decided for this task")


def test_writers_of_public_names_share_the_one_slot_pool(dagbag) -> None:
    """Issue #11 defect 3: publishing never interleaves across runs of any kind."""
    assert dagbag.dags["rocm_release_retention"].get_task("apply_retention").pool == "rocm_publishing"
    nightly = dagbag.dags["rocm_nightly_release"]
    for variant in ("rocm710", "rocm723"):
        for task in ("push_images", "publish_wheels", "promote_nightly"):
            assert nightly.get_task(f"{variant}.{task}").pool == "rocm_publishing", task


def test_nightly_shape(dagbag) -> None:
    dag = dagbag.dags["rocm_nightly_release"]
    assert dag.max_active_runs == 1 and not dag.catchup
    assert dag.doc_md and "Where to look when it fails" in dag.doc_md
    # Alerts run last whatever happened, and never decide the run's state (a teardown).
    notify = dag.get_task("notify_outcome")
    assert notify.is_teardown and notify.upstream_task_ids == {"release_summary"} and not notify.downstream_task_ids
    assert set(dag.params.keys()) == {"commit", "variants", "force_rebuild", "promote", "dry_run",
                                     "skip_tests"}
    for variant in ("rocm710", "rocm723"):
        build = dag.get_task(f"{variant}.build_wheels")
        assert (build.queue, build.pool) == ("rocm", "rocm_builders")
        assert [a.name for a in dag.get_task(f"{variant}.publish_wheels").outlets] == [
            f"rocm_nightly.{variant}.wheels"]
        assert [a.name for a in dag.get_task(f"{variant}.push_images").outlets] == [f"rocm_nightly.{variant}.images"]
        for test in GATE_TASKS:  # on the build hosts, between the cache tags and anything public
            gate = dag.get_task(f"{variant}.{test}")
            assert (gate.queue, gate.pool) == ("rocm", "rocm_builders"), test
            assert gate.upstream_task_ids == {f"{variant}.tag_cache_images"}, test
        for publisher in ("push_images", "publish_wheels"):
            assert dag.get_task(f"{variant}.{publisher}").upstream_task_ids == {
                f"{variant}.{t}" for t in ("tag_cache_images", *GATE_TASKS)}, publisher
        sensor = dag.get_task(f"{variant}.check_base_image")
        assert sensor.mode == "reschedule"
        assert dag.get_task(f"{variant}.choose_path").downstream_task_ids == {
            f"{variant}.{t}" for t in ("build_base_image", "build_wheels", "build_release_image",
                                       "reuse_cached_images")
        }


PARSE = r"""
import json, sys
import airflow.sdk
def refuse(*a, **k):
    raise RuntimeError("an Airflow Variable was read at parse time")
airflow.sdk.Variable.get = staticmethod(refuse)
from airflow.models import DagBag
bag = DagBag(dag_folder=sys.argv[1])
heavy = sorted(m for m in ("boto3", "botocore", "docker", "s3fs", "aiobotocore") if m in sys.modules)
print(json.dumps({"dags": sorted(bag.dag_ids), "errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "heavy": heavy}))
"""


def _parse_in_subprocess(prefix: list[str]) -> dict:
    out = subprocess.run(
        [*prefix, sys.executable, "-c", PARSE, str(REPO / "dags")],
        capture_output=True, text=True, check=True, env=os.environ.copy(), timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_parsing_imports_no_heavy_client_and_reads_no_variable() -> None:
    result = _parse_in_subprocess([])
    assert result["errors"] == {}
    assert set(result["dags"]) == EXPECTED_DAG_IDS
    assert result["heavy"] == [], f"imported at parse time: {result['heavy']}"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_parsing_needs_no_network() -> None:
    # A fresh network namespace has no interface up, not even loopback: any connection fails.
    result = _parse_in_subprocess(["unshare", "--net"])
    assert result["errors"] == {} and set(result["dags"]) == EXPECTED_DAG_IDS


def test_params_live_on_the_dag_alone(dagbag) -> None:
    """No task carries a copy of the Params (the dag-processor would validate every copy on every parse);
    at run time Airflow merges the DAG's Params into each task's, so every task still sees them all."""
    from airflow.sdk.definitions.param import process_params

    for dag in dagbag.dags.values():
        assert dag.params, dag.dag_id
        assert [t.task_id for t in dag.tasks if t.params] == [], dag.dag_id
        defaults = {name: dag.params[name] for name in dag.params}
        for task in dag.tasks:
            assert process_params(dag, task, {}, suppress_exception=False) == defaults, task.task_id
