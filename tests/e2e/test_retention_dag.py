"""Whole runs of the real `rocm_release_retention` DAG (`airflow dags test`) against the local registries.

A manual run without Params is a dry run: it prints every decision and changes nothing (registries and
store compared before and after). With `dry_run=false` and `keep_commits` it deletes exactly what must go.
The history (tests/support/retention_history.py) is pushed to repositories of this module's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from rocm_release.adapters.registry.oci import OciRegistry
from tests.conftest import REPO, TEST_ENV
from tests.support.retention_history import History, OciPusher, build_history, build_store, expected_tags

pytestmark = pytest.mark.e2e

AIRFLOW = str(Path(sys.executable).parent / "airflow")
DAG_ID = "rocm_release_retention"
KEEP = 3


class Scene:
    """Config, registries, store and the history pushed into them."""

    def __init__(self, root: Path) -> None:
        from airflow.sdk import ObjectStoragePath

        run = uuid.uuid4().hex[:8]
        demo = yaml.safe_load((REPO / "include" / "config" / "demo.yaml").read_text())
        demo["cache_registry"]["repository"] = f"retention-e2e-{run}/tinyllm"
        demo["public_registry"]["repository"] = f"retention-e2e-{run}/tinyllm-rocm"
        demo["wheel_store"]["url"] = f"file://{root}/wheels"
        (root / "wheels").mkdir()
        self.config_file = root / "config.yaml"
        self.config_file.write_text(yaml.safe_dump(demo))
        self.hosts = {"cache": demo["cache_registry"]["host"], "public": demo["public_registry"]["host"]}
        self.repos = {"cache": demo["cache_registry"]["repository"], "public": demo["public_registry"]["repository"]}
        self.store = root / "wheels"
        self.history: History = build_history(
            OciPusher({r: f"http://{h}" for r, h in self.hosts.items()}, self.repos),
            n=12, keep=KEEP, public_recent=5, boundary=lambda: None)
        build_store(ObjectStoragePath(demo["wheel_store"]["url"]), demo["wheel_store"]["url"], self.history, root)
        self.env = {**os.environ, **TEST_ENV, "AIRFLOW_HOME": str(root / "airflow"),
                    "ROCM_NIGHTLY_CONFIG": str(self.config_file)}
        subprocess.run([AIRFLOW, "db", "migrate"], env=self.env, capture_output=True, check=True, timeout=300)

    def run(self, conf: dict[str, Any] | None = None) -> str:
        """One successful `airflow dags test`; its output (task logs included)."""
        args = [AIRFLOW, "dags", "test", DAG_ID] + (["-c", json.dumps(conf)] if conf else [])
        proc = subprocess.run(args, env=self.env, capture_output=True, text=True, check=False, timeout=600)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-6000:]
        return output

    def tags(self) -> dict[str, set[str]]:
        return {role: set(OciRegistry(self.hosts[role], scheme="http").tag_names(self.repos[role]))
                for role in self.hosts}

    def folders(self) -> set[str]:
        return {p.name for p in self.store.iterdir() if p.is_dir()}


@pytest.fixture(scope="module")
def scene(services: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Scene:
    return Scene(tmp_path_factory.mktemp("retention-e2e"))


def test_a_manual_run_is_a_dry_run_that_changes_nothing(scene: Scene) -> None:
    before_tags, before_folders = scene.tags(), scene.folders()

    output = scene.run()

    assert "DRY RUN: nothing is deleted." in output
    assert "WOULD DELETE" in output and "KEEP " in output
    assert "dry run: nothing deleted" in output  # apply_retention skipped itself
    assert scene.tags() == before_tags and scene.folders() == before_folders


def test_dry_run_false_deletes_exactly_what_must_go(scene: Scene) -> None:
    h = scene.history

    output = scene.run({"dry_run": False, "keep_commits": KEEP})

    assert "WOULD DELETE" not in output
    left = scene.tags()
    for role in ("cache", "public"):
        assert left[role] == expected_tags(h, role, by_digest=True), role
    assert scene.folders() == h.kept_commits | {"nightly"}
