"""Test-wide settings: an Airflow home of our own, our DAGs and plugins, the demo config.

Set before anything imports Airflow, which reads its config at import time. Also the
``services`` fixture of the integration and e2e tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.demo import DEMO_CONFIG, airflow_env
from tests.support.moto import moto_server
from tests.support.services import REPO, SERVICES_ENV, SERVICES_JSON, read_services_env

AIRFLOW_HOME = REPO / ".state" / "airflow-test"
AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
TEST_ENV = airflow_env(AIRFLOW_HOME, DEMO_CONFIG, base={}, unit_test_mode=True)
os.environ.update(TEST_ENV)


def pytest_collection_finish(session: pytest.Session) -> None:
    """A run that collects no tests is a failure, not a pass."""
    if not session.items and not session.config.option.collectonly:
        raise pytest.UsageError("no tests were collected")


@pytest.fixture(scope="session")
def services() -> Iterator[dict[str, Any]]:
    """The running services as described by ``.state/services.json``; exports services.env."""
    missing = [p for p in (SERVICES_JSON, SERVICES_ENV) if not p.exists()]
    if missing:
        pytest.fail(
            f"{', '.join(str(p) for p in missing)} missing: the local services are not up; "
            "run make services-up",
            pytrace=False,
        )
    document: dict[str, Any] = json.loads(SERVICES_JSON.read_text())
    patch = pytest.MonkeyPatch()
    for key, value in read_services_env().items():
        patch.setenv(key, value)
    try:
        yield document
    finally:
        patch.undo()


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server process of the test module's own on 127.0.0.1 (not the shared one of services-up)."""
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url
