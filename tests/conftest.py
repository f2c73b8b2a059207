"""Test-wide settings: an Airflow home of our own, our DAGs and plugins, the demo config.

Set before anything imports Airflow, which reads its config at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
AIRFLOW_HOME = REPO / ".state" / "airflow-test"
AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
TEST_ENV = {
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
    "ROCM_NIGHTLY_CONFIG": str(REPO / "include" / "config" / "demo.yaml"),
}
os.environ.update(TEST_ENV)


def pytest_collection_finish(session: pytest.Session) -> None:
    """A run that collects no tests is a failure, not a pass."""
    if not session.items and not session.config.option.collectonly:
        raise pytest.UsageError("no tests were collected")
