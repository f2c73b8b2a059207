"""The demo project in a world of a test's (or a benchmark's) own: config, git history, Airflow home, DAG runs.

``demo_config`` derives a config from include/config/demo.yaml with repositories, a ``file://`` wheel
store and a git history under one folder; ``make_history`` writes the sample project's reproducible
history (include/demo/make_history.py); ``airflow_env`` is the environment of an Airflow home of its
own; ``dags_test`` is one ``airflow dags test`` run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.services import REPO

DEMO_CONFIG = REPO / "include" / "config" / "demo.yaml"
MAKE_HISTORY = REPO / "include" / "demo" / "make_history.py"
AIRFLOW = str(Path(sys.executable).parent / "airflow")


def make_history(bare: Path) -> dict[str, str]:
    """The demo history in the bare repository ``bare``; label (``initial``, ``source_change``…) → sha."""
    out = subprocess.run([sys.executable, str(MAKE_HISTORY), str(bare)], capture_output=True, text=True,
                         check=True).stdout
    shas: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    return shas


def demo_document() -> dict[str, Any]:
    """include/config/demo.yaml as a document to change."""
    document: dict[str, Any] = yaml.safe_load(DEMO_CONFIG.read_text())
    return document


def demo_config(root: Path, repository_prefix: str, variants: Sequence[str] | None = None) -> dict[str, Any]:
    """The demo config for a world in ``root``: the git history ``root/tinyllm.git``, the wheel store
    ``file://root/wheels``, the repositories ``<prefix>/tinyllm`` (cache) and ``<prefix>/tinyllm-rocm``
    (public); only ``variants`` when given."""
    config = demo_document()
    config["project"]["git_url"] = f"file://{root}/tinyllm.git"
    if variants is not None:
        config["variants"] = [v for v in config["variants"] if v["name"] in variants]
    config["cache_registry"]["repository"] = f"{repository_prefix}/tinyllm"
    config["public_registry"]["repository"] = f"{repository_prefix}/tinyllm-rocm"
    config["wheel_store"]["url"] = f"file://{root}/wheels"
    return config


def local_path(url: str) -> Path:
    """The folder of a ``file://`` URL (a wheel store's, or a folder in it)."""
    if not url.startswith("file://"):
        raise ValueError(f"not a file:// URL: {url}")
    return Path(url.removeprefix("file://"))


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(config)))
    return path


def airflow_env(home: Path | str, config_file: Path | str, *, cache_dir: Path | None = None,
                base: Mapping[str, str] | None = None, unit_test_mode: bool = False) -> dict[str, str]:
    """``base`` (default: this process's environment) with an Airflow home of its own, our DAGs and plugins,
    no examples, and ``config_file`` as the rocm-nightly config (``cache_dir``: the git mirror cache)."""
    env = dict(os.environ if base is None else base)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "ROCM_NIGHTLY_CONFIG": str(config_file),
    })
    if unit_test_mode:
        env["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
    if cache_dir is not None:
        env["ROCM_NIGHTLY_CACHE_DIR"] = str(cache_dir)
    return env


def migrate(env: Mapping[str, str], timeout: float = 300) -> None:
    """``airflow db migrate`` of the home in ``env``, then the deployment's pool and connection files
    imported into it, as a deployment (and the demo) does."""
    proc = subprocess.run([AIRFLOW, "db", "migrate"], env=dict(env), capture_output=True, text=True, check=False,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    import_pools_and_connections(AIRFLOW, env)


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


def dags_test(env: Mapping[str, str], dag_id: str, conf: Mapping[str, Any] | None = None, *, timeout: float = 900,
              wrapper: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """One ``airflow dags test`` run with these Params, whatever its outcome (``wrapper``: e.g. strace)."""
    args = [*wrapper, AIRFLOW, "dags", "test", dag_id] + (["-c", json.dumps(conf)] if conf is not None else [])
    return subprocess.run(args, env=dict(env), capture_output=True, text=True, check=False, timeout=timeout)
