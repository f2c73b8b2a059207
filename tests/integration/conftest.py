"""Fixtures for tests against the real local services.

The services are started by ``make services-up`` (include/scripts/services.py), never by
the tests: the ``services`` fixture only reads what ``up`` wrote to ``.state``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".state"
SERVICES_JSON = STATE / "services.json"
SERVICES_ENV = STATE / "services.env"


def read_services_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and ``#`` comments are skipped."""
    env: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"{path}:{number}: not a KEY=VALUE line: {line!r}")
        env[key] = value
    return env


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
    env = read_services_env(SERVICES_ENV)
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    try:
        yield document
    finally:
        patch.undo()
