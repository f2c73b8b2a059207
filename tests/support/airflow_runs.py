"""Nightly runs in an Airflow home's database, made the way the scheduler makes them, for retention tests.

``add_run`` creates a ``rocm_nightly_release`` run (its task instances too, as ``create_dagrun`` does)
in a given state and stores XComs for its tasks, in a subprocess with that home's environment (the
test's own process keeps its own Airflow home). The DAGs must be in the database first:
``reserialize``; ``set_state`` ends a run. ``release_plan`` is a real ``ReleasePlan`` for a commit, as
``resolve_release`` hands it on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tests.support.demo import AIRFLOW

_ADD_RUN = """
import json, sys
from datetime import datetime, timezone
from airflow.models.serialized_dag import SerializedDagModel
from airflow.models.xcom import XComModel
from airflow.sdk.serde import serialize
from airflow.utils.session import create_session
from airflow.utils.state import DagRunState
from airflow.utils.types import DagRunTriggeredByType, DagRunType

args = json.loads(sys.argv[1])
with create_session() as session:
    dag = SerializedDagModel.get_dag(args["dag_id"], session=session)
    assert dag is not None, f"{args['dag_id']} is not in the database: reserialize first"
    dag.create_dagrun(run_id=args["run_id"], run_after=datetime.now(timezone.utc), run_type=DagRunType.MANUAL,
                      triggered_by=DagRunTriggeredByType.TEST, state=DagRunState(args["state"]), session=session)
    for task_id, value in args["xcoms"].items():  # stored as a task's return value is: serde, not json.dumps
        XComModel.set("return_value", serialize(value), dag_id=args["dag_id"], task_id=task_id,
                      run_id=args["run_id"], serialize=False, session=session)
"""


_SET_STATE = """
import json, sys
from sqlalchemy import update
from airflow.models.dagrun import DagRun
from airflow.utils.session import create_session

args = json.loads(sys.argv[1])
with create_session() as session:
    session.execute(update(DagRun).where(DagRun.dag_id == args["dag_id"], DagRun.run_id == args["run_id"])
                    .values(state=args["state"]))
"""


def _python(env: Mapping[str, str], script: str, args: Mapping[str, Any]) -> None:
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(dict(args))], env=dict(env),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def set_state(env: Mapping[str, str], dag_id: str, run_id: str, state: str) -> None:
    """Put a run in ``state`` (``success`` ends it for good: retention no longer sees it in progress)."""
    _python(env, _SET_STATE, {"dag_id": dag_id, "run_id": run_id, "state": state})


def reserialize(env: Mapping[str, str]) -> None:
    """``airflow dags reserialize``: every DAG file parsed into the database of ``env``'s home."""
    proc = subprocess.run([AIRFLOW, "dags", "reserialize"], env=dict(env), capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def add_run(env: Mapping[str, str], dag_id: str, run_id: str, state: str,
            xcoms: Mapping[str, Any] | None = None) -> None:
    """A run of ``dag_id`` in ``state`` (``queued``, ``running``…), with ``xcoms`` (task id → return value)."""
    _python(env, _ADD_RUN, {"dag_id": dag_id, "run_id": run_id, "state": state, "xcoms": dict(xcoms or {})})


def release_plan(config: Any, commit: str) -> dict[str, Any]:
    """The JSON of a real ReleasePlan for ``commit`` (a manual run of today), as ``resolve_release`` hands it on."""
    from rocm_release.core.params import parse_params
    from rocm_release.core.plan import make_plan

    parents = {ref: f"{ref.split('@')[0]}@sha256:{'0' * 64}"
               for ref in {config.project.parent_image, *(v.parent_image for v in config.variants if v.parent_image)}}
    plan = make_plan(config, commit=commit, run_kind="manual", as_of=datetime.now(UTC),
                     params=parse_params({}, config), base_dockerfile=b"FROM scratch\n",
                     base_inputs={path: b"" for path in config.project.base_inputs}, parent_images=parents)
    document: dict[str, Any] = plan.model_dump(mode="json")
    return document
