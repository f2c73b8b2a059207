"""The error policy on a whole run: a manual run naming a commit that does not exist fails in
``resolve_release`` at once — no retry, the commit named — and nothing else runs.

Before the policy, the unknown commit was retried three times with exponential backoff (minutes).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from rocm_release.core import task_ids as ids
from tests.conftest import REPO, TEST_ENV

pytestmark = pytest.mark.e2e

AIRFLOW = str(Path(sys.executable).parent / "airflow")
DAG_ID = "rocm_nightly_release"
UNKNOWN = "f" * 40


def test_unknown_commit_fails_in_resolve_release_at_once(services: dict[str, Any], tmp_path: Path) -> None:
    demo = yaml.safe_load((REPO / "include" / "config" / "demo.yaml").read_text())
    demo["project"]["git_url"] = f"file://{tmp_path}/tinyllm.git"
    demo["wheel_store"]["url"] = f"file://{tmp_path}/wheels"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(demo))
    subprocess.run([sys.executable, str(REPO / "include" / "demo" / "make_history.py"), str(tmp_path / "tinyllm.git")],
                   capture_output=True, check=True)
    env = {**os.environ, **TEST_ENV, "AIRFLOW_HOME": str(tmp_path / "airflow"), "ROCM_NIGHTLY_CONFIG": str(config),
           "ROCM_NIGHTLY_CACHE_DIR": str(tmp_path / "cache")}
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, check=True)

    proc = subprocess.run([AIRFLOW, "dags", "test", DAG_ID, "-c", json.dumps({"commit": UNKNOWN})], env=env,
                          capture_output=True, text=True, check=False, timeout=600)
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
