"""`make demo`: run the real nightly DAG on the sample project against the local services.

Prepares an Airflow home under .state/airflow-demo (SQLite), the sample
project's git history, and runs ``airflow dags test rocm_nightly_release``
with the demo config. Every command is an argument list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".state"
VENV_BIN = Path(sys.executable).parent
AIRFLOW_HOME = STATE / "airflow-demo"
DAG_ID = "rocm_nightly_release"


def demo_env() -> dict[str, str]:
    """The environment of every Airflow command the demo runs (also printed for `airflow standalone`)."""
    env = dict(os.environ)
    services = STATE / "services.env"
    if not services.exists():
        raise SystemExit("the local services are not up: run `make services-up` first")
    for line in services.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key] = value
    env.update({
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "ROCM_NIGHTLY_CONFIG": str(REPO / "include" / "config" / "demo.yaml"),
        "ROCM_NIGHTLY_CACHE_DIR": str(STATE / "cache"),
        "AIRFLOW__API__HOST": "127.0.0.1",  # the web UI of `airflow standalone`: loopback only
    })
    return env


def run(args: list[str], env: dict[str, str]) -> None:
    """Run one command, streaming its output; stop the demo if it fails."""
    print("+", " ".join(args), flush=True)
    subprocess.run(args, env=env, check=True)


def main() -> int:
    """Prepare, then run tonight's release as a dry run (the build tasks land with their issues)."""
    env = demo_env()
    AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [sys.executable, str(REPO / "include" / "demo" / "make_history.py")],
        env=env, check=True, capture_output=True, text=True,
    )
    commits = json.loads(out.stdout.strip().splitlines()[-1])
    print("sample project history:", json.dumps(commits, indent=2))
    run([str(VENV_BIN / "airflow"), "db", "migrate"], env)
    run([str(VENV_BIN / "airflow"), "dags", "test", DAG_ID, "-c", json.dumps({"dry_run": True})], env)
    print(
        "\nTo open the same DAG in the web UI with the demo config:\n"
        + "".join(f"  export {k}={env[k]}\n" for k in (
            "AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER",
            "AIRFLOW__CORE__LOAD_EXAMPLES", "ROCM_NIGHTLY_CONFIG", "ROCM_NIGHTLY_CACHE_DIR",
            "AIRFLOW__API__HOST", "DOCKER_HOST"))
        + f"  {VENV_BIN / 'airflow'} standalone   # then http://127.0.0.1:8080, admin password in "
        + f"{AIRFLOW_HOME}/simple_auth_manager_passwords.json.generated\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
