"""Whole nights of the real ``rocm_nightly_release`` DAG for the night benchmarks (3 and 4).

Like ``tests/e2e/test_nightly_dag.py``'s ``Nights``: a config derived from
``include/config/demo.yaml`` with repositories of our own (``bench-<id>/…``), a
temporary ``file://`` wheel store, the sample project's reproducible history in
a temporary git repository, and an Airflow home of our own; each night is one
``airflow dags test`` run. Two differences:

* the parent image is the base OS image retagged into our own namespace
  (``bench-<id>/debian``; a cross-repository mount, no bytes move), so that every
  registry request a night makes names one of our repositories and can be
  counted in the shared access logs;
* builds go to a private, empty dockerd per night (``docker_host``), so that no
  layer cache of other work on the machine helps or hurts a measured night.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from local_services import Services, bench_prefix, registry_client, run_id

from tests.support.demo import airflow_env, dags_test, demo_config, make_history, migrate, write_config
from tests.support.registries import remove_tags

DAG_ID = "rocm_nightly_release"
BUILD_TASKS = ("build_base_image", "build_wheels", "build_release_image")
NIGHT_TIMEOUT = 1800


@dataclass
class Night:
    """One finished run: its wall time, its output and the release report."""

    conf: dict[str, Any]
    seconds: float
    output: str
    report: dict[str, Any]
    tasks: dict[str, float]  # task id → seconds (from Airflow's own records)

    def builds(self) -> dict[str, list[str]]:
        """Per variant, the build tasks that ran (from RELEASE.json's path)."""
        out = {}
        for name, variant in self.report["variants"].items():
            path = variant["path"]
            out[name] = [] if path.startswith("reused") else path.removeprefix("built: ").split(", ")
        return out

    def build_seconds(self) -> float:
        """Sum of the build tasks' durations over all variants (RELEASE.json ``durations``)."""
        return sum(secs for variant in self.report["variants"].values()
                   for task, secs in variant.get("durations", {}).items() if task in BUILD_TASKS)

    def task_seconds(self) -> float:
        """Sum of every task's duration (Airflow's start/end records)."""
        return sum(self.tasks.values())


class NightWorld:
    """Config, repositories, store, git history and Airflow home of one benchmark run."""

    def __init__(self, services: Services, variants: list[str]) -> None:
        self.services = services
        self.rid = run_id()
        self.prefix = bench_prefix(self.rid)
        self.root = Path(tempfile.mkdtemp(prefix="rocm-nightly-bench-night-"))
        self.cache_repo = f"{self.prefix}/tinyllm"
        self.public_repo = f"{self.prefix}/tinyllm-rocm"
        self.parent_repo = f"{self.prefix}/debian"
        self.store = self.root / "wheels"
        self.variants = variants

    def setup(self) -> None:
        from rocm_release.adapters.registry.image_copy import copy_image

        self.store.mkdir()
        self.commits = make_history(self.root / "tinyllm.git")
        base_ref = self.services.base_os_image
        base_repo, _, base_digest = base_ref.split("/", 1)[1].partition("@")
        with registry_client(self.services.cache_host) as cache:
            copy_image(cache, base_repo, base_digest, cache, self.parent_repo, ["bookworm"])
        config = demo_config(self.root, self.prefix, self.variants)
        config["project"]["parent_image"] = f"{self.services.cache_host}/{self.parent_repo}:bookworm"
        assert (config["cache_registry"]["repository"], config["public_registry"]["repository"]) == (
            self.cache_repo, self.public_repo)
        assert config["wheel_store"]["url"] == f"file://{self.store}"
        self.config_file = write_config(self.root / "config.yaml", config)
        self.env = airflow_env(self.root / "airflow", self.config_file, cache_dir=self.root / "cache",
                               base=self.services.docker_env())
        migrate(self.env)

    def conf(self, label: str, **extra: Any) -> dict[str, Any]:
        return {"commit": self.commits[label], "promote": True, "variants": self.variants, **extra}

    def night(self, conf: dict[str, Any], docker_host: str, *, wrapper: list[str] | None = None) -> Night:
        """One ``airflow dags test`` run that must succeed (``wrapper``: e.g. strace, prepended)."""
        env = {**self.env, "DOCKER_HOST": docker_host}
        started = time.monotonic()
        proc = dags_test(env, DAG_ID, conf, timeout=NIGHT_TIMEOUT, wrapper=wrapper or ())
        seconds = time.monotonic() - started
        output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise RuntimeError(f"the night {conf} failed ({proc.returncode}):\n{output[-6000:]}")
        report = json.loads((self.store / conf["commit"] / "RELEASE.json").read_text())
        return Night(conf=conf, seconds=seconds, output=output, report=report, tasks=self.last_run_tasks())

    def last_run_tasks(self) -> dict[str, float]:
        """Task id → seconds of the newest run, from Airflow's metadata database (SQLite)."""
        db = self.root / "airflow" / "airflow.db"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            row = con.execute("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1",
                              (DAG_ID,)).fetchone()
            rows = con.execute("SELECT task_id, start_date, end_date FROM task_instance "
                               "WHERE dag_id = ? AND run_id = ?", (DAG_ID, row[0])).fetchall()
        tasks = {}
        for task_id, start, end in rows:
            if start and end:
                tasks[task_id] = (_when(end) - _when(start)).total_seconds()
        return tasks

    def cleanup(self) -> list[str]:
        """Delete our tags in both registries and the temporary folder; return problems."""
        problems = remove_tags(self.services.cache_host, [self.cache_repo, self.parent_repo])
        problems += remove_tags(self.services.public_host, [self.public_repo])
        shutil.rmtree(self.root, ignore_errors=True)
        return problems


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value)
