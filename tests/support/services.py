"""Where the local services listen: ``.state/services.json`` and ``.state/services.env``.

They are started by ``make services-up`` (include/scripts/services.py), never by the tests or the
benchmarks, which only read what ``up`` wrote.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".state"
SERVICES_JSON = STATE / "services.json"
SERVICES_ENV = STATE / "services.env"


def read_services_env(path: Path = SERVICES_ENV) -> dict[str, str]:
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
