"""Whole runs of the real `rocm_release_retention` DAG (`airflow dags test`) against the local registries.

A manual run without Params is a dry run: it prints every decision and changes nothing (registries and
store compared before and after). With `dry_run=false` and `keep_commits` it deletes exactly what must go.
The history (tests/support/retention_history.py) is pushed to repositories of this module's own; a test
that finds it changed by an earlier one (a run that deleted) gets a new history in new repositories, so
every test can run alone or in any order.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from rocm_release.adapters.config_file import load_config
from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.core.plan import release_tag, wheels_tag
from rocm_release.core.task_ids import NIGHTLY_DAG_ID, RESOLVE_RELEASE, REUSE_CACHED_IMAGES, in_group
from tests.support.airflow_runs import add_run, release_plan, reserialize, set_state
from tests.support.demo import airflow_env, dags_test, demo_config, migrate, write_config
from tests.support.retention_history import History, OciPusher, build_history, build_store, expected_tags

pytestmark = pytest.mark.e2e

DAG_ID = "rocm_release_retention"
KEEP = 3


class Scene:
    """Config, registries, store and the history pushed into them; an Airflow home of its own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config_file = root / "config.yaml"
        self.env = airflow_env(root / "airflow", self.config_file, unit_test_mode=True)
        migrate(self.env)
        self.pushed: tuple[dict[str, set[str]], set[str]] | None = None
        self.serialized = False  # the DAGs in the database (for runs of rocm_nightly_release made by a test)

    def new_history(self) -> None:
        """A history in new repositories and a new store; the config names them."""
        from airflow.sdk import ObjectStoragePath

        run = uuid.uuid4().hex[:8]
        folder = self.root / run
        config = demo_config(folder, f"retention-e2e-{run}")
        write_config(self.config_file, config)
        self.hosts = {"cache": config["cache_registry"]["host"], "public": config["public_registry"]["host"]}
        self.repos = {"cache": config["cache_registry"]["repository"],
                      "public": config["public_registry"]["repository"]}
        self.store = folder / "wheels"
        self.store.mkdir(parents=True)
        self.history: History = build_history(
            OciPusher({r: f"http://{h}" for r, h in self.hosts.items()}, self.repos),
            n=12, keep=KEEP, public_recent=5, boundary=lambda: None)
        build_store(ObjectStoragePath(config["wheel_store"]["url"]), config["wheel_store"]["url"], self.history,
                    folder)
        self.pushed = (self.tags(), self.folders())
        self.serialized = False

    def unchanged(self) -> bool:
        """Registries and store hold exactly the history as pushed."""
        return self.pushed is not None and self.pushed == (self.tags(), self.folders())

    def run(self, conf: dict[str, Any] | None = None) -> str:
        """One successful `airflow dags test`; its output (task logs included)."""
        proc = dags_test(self.env, DAG_ID, conf, timeout=600)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-6000:]
        return output

    def tags(self) -> dict[str, set[str]]:
        return {role: set(OciRegistry(self.hosts[role], scheme="http").tag_names(self.repos[role]))
                for role in self.hosts}

    def folders(self) -> set[str]:
        return {p.name for p in self.store.iterdir() if p.is_dir()}


@pytest.fixture(scope="module")
def world(services: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Scene:
    return Scene(tmp_path_factory.mktemp("retention-e2e"))


@pytest.fixture
def scene(world: Scene) -> Scene:
    """The world with its history as pushed: the same one as the test before, unless that one changed it."""
    if not world.unchanged():
        world.new_history()
    return world


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


def test_a_nightly_run_in_progress_keeps_the_commit_its_plan_names(scene: Scene) -> None:
    """A ``rocm_nightly_release`` run that is running (made in the database as the scheduler makes one, its
    plan in ``resolve_release``'s XCom) keeps its commit: the retention tasks read it through the Task SDK."""
    h = scene.history
    old = h.commits[3]  # not among the newest 3, nor named by an alias: it would go
    if not scene.serialized:
        reserialize(scene.env)
        scene.serialized = True
    run_id = f"manual__in_progress_{uuid.uuid4().hex[:8]}"
    reused = {kind: f"{scene.hosts['cache']}/{scene.repos['cache']}@{h.digests[('cache', tag(old, 'rocm710'))]}"
              for kind, tag in (("wheels", wheels_tag), ("release", release_tag))}
    add_run(scene.env, NIGHTLY_DAG_ID, run_id, "running",
            {RESOLVE_RELEASE: release_plan(load_config(scene.config_file), old),
             in_group("rocm710", REUSE_CACHED_IMAGES): reused})
    try:
        output = scene.run({"dry_run": False, "keep_commits": KEEP})
    finally:
        set_state(scene.env, NIGHTLY_DAG_ID, run_id, "success")

    assert f"in use by run {run_id} (running)" in output
    assert f"{NIGHTLY_DAG_ID} in progress: run {run_id} (running): commit {old}, 2 bases, 2 digests" in output
    mine = {role: {t for t in h.tags(role) if old in t} for role in ("cache", "public")}
    left = scene.tags()
    for role in ("cache", "public"):
        assert left[role] == expected_tags(h, role, by_digest=True) | mine[role], role
    assert scene.folders() == h.kept_commits | {old, "nightly"}
