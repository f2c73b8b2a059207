"""The e2e tests use the same running services as the integration tests, and set up their Airflow
homes as a deployment does: `airflow db migrate`, then the pool and connection files imported."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from tests.conftest import REPO
from tests.integration.conftest import services  # noqa: F401 - a fixture, re-exported

__all__ = ["services", "import_pools_and_connections"]

POOLS_FILE = REPO / "include" / "airflow" / "pools.json"
CONNECTIONS_FILE = REPO / "include" / "airflow" / "connections.json"


def import_pools_and_connections(airflow: Path | str, env: Mapping[str, str], cwd: Path | None = None) -> None:
    """`airflow pools import` and `airflow connections import` of the deployment files, into the
    (migrated) database of ``env``'s AIRFLOW_HOME. The connections are placeholders for the ids the
    vLLM config names; the demo config the tests use names none, and a test's own AIRFLOW_CONN_*
    variables win over the database anyway (environment variables come first in Airflow 3's secrets
    search path, on the server and in the task SDK)."""
    for kind, path in (("pools", POOLS_FILE), ("connections", CONNECTIONS_FILE)):
        proc = subprocess.run([str(airflow), kind, "import", str(path)], env=dict(env), cwd=cwd,
                              capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, f"airflow {kind} import {path}:\n{(proc.stdout + proc.stderr)[-4000:]}"
