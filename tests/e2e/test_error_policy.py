"""The error policy on a whole run: a manual run naming a commit that does not exist fails in
``resolve_release`` at once — no retry, the commit named — and nothing else runs.

Before the policy, the unknown commit was retried three times with exponential backoff (minutes).
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from rocm_release.core import task_ids as ids
from tests.support.demo import airflow_env, dags_test, demo_config, make_history, migrate, write_config

pytestmark = pytest.mark.e2e

DAG_ID = "rocm_nightly_release"
UNKNOWN = "f" * 40


def test_unknown_commit_fails_in_resolve_release_at_once(services: dict[str, Any], tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", demo_config(tmp_path, f"policy-{uuid.uuid4().hex[:8]}"))
    make_history(tmp_path / "tinyllm.git")
    env = airflow_env(tmp_path / "airflow", config, cache_dir=tmp_path / "cache", unit_test_mode=True)
    migrate(env)

    proc = dags_test(env, DAG_ID, {"commit": UNKNOWN}, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-4000:]
    assert f"unknown commit or ref '{UNKNOWN}'" in output, output[-4000:]

    with sqlite3.connect(tmp_path / "airflow" / "airflow.db") as db:
        tis = dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (DAG_ID,)).fetchall())
        tries = db.execute("SELECT try_number FROM task_instance WHERE dag_id = ? AND task_id = ?",
                           (DAG_ID, ids.RESOLVE_RELEASE)).fetchone()[0]
        start, end = db.execute("SELECT start_date, end_date FROM dag_run WHERE dag_id = ?", (DAG_ID,)).fetchone()
    assert tis[ids.RESOLVE_RELEASE] == "failed"
    assert tries == 1, "a fatal error is never retried"
    assert not any(state == "success" for task, state in tis.items() if task != ids.RESOLVE_RELEASE), tis
    took = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    assert took <= 60, f"the run took {took:.0f} s to fail (Airflow's own start/end dates)"
