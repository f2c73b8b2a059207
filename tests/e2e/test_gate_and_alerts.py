"""The smoke-test gate and the alerts, end to end: real `airflow dags test` runs of `rocm_nightly_release`
against the local registries and dockerd, and a real SMTP server (aiosmtpd) on 127.0.0.1.

1. a night whose release image fails its smoke command: the run fails at `test_release_image`, nothing
   public changes (the public registry's storage and the store byte for byte), the cache keeps the images
   (tagged), and an e-mail names the failed task, the commit, the task's log URL and its triage line;
2. the next night, the smoke command fixed (same commit): it reuses the cached images (no build), passes
   both tests, publishes, and sends one "recovered" e-mail;
3. a dry run alerts nobody; a third good night sends nothing (recovered is said once).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from rocm_release.adapters.config_file import load_config
from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.core.plan import public_tag, release_tag, wheels_prefix
from tests.support.demo import airflow_env, dags_test, demo_config, local_path, make_history, migrate, write_config
from tests.support.smtp import Inbox, smtp_server

pytestmark = pytest.mark.e2e

DAG_ID = "rocm_nightly_release"
VARIANT = "rocm710"
TO = "release-eng@example.test"
BROKEN = ["python3", "-c", "import sys, tinyllm; sys.exit('smoke: tinyllm ' + tinyllm.__version__ + ' is broken')"]


class World:
    def __init__(self, root: Path, smtp_port: int, inbox: Inbox) -> None:
        self.root, self.inbox = root, inbox
        self.document = demo_config(root, f"e2e-gate-{uuid.uuid4().hex[:8]}", [VARIANT])
        self.document["alerts"] = {"email": {"smtp_conn_id": "smtp_e2e", "to": [TO],
                                             "from_email": "rocm-nightly@example.test"}}
        self.good_command = list(self.document["smoke_test"]["command"])
        self.config_file = write_config(root / "config.yaml", self.document)
        self.config = load_config(self.config_file)
        self.store = local_path(self.config.wheel_store.url)
        self.store.mkdir()
        self.commits = make_history(root / "tinyllm.git")
        self.env = airflow_env(root / "airflow", self.config_file, cache_dir=root / "cache", unit_test_mode=True)
        # One Fernet key for every run, as a deployment has: the last outcome (an Airflow Variable, stored
        # encrypted) written by one night must be readable by the next.
        self.env["AIRFLOW__CORE__FERNET_KEY"] = Fernet.generate_key().decode()
        # The SMTP provider's connection, as a deployment would define it (here: no TLS, no login).
        self.env["AIRFLOW_CONN_SMTP_E2E"] = json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": smtp_port,
            "extra": {"disable_tls": True, "disable_ssl": True, "timeout": 10, "retry_limit": 1}})
        self.cache = OciRegistry(self.config.cache_registry.host, scheme="http")
        self.public = OciRegistry(self.config.public_registry.host, scheme="http")
        self.public_storage = Path(os.environ["ROCM_NIGHTLY_PUBLIC_REGISTRY_STORAGE"]) / "docker" / "registry" / \
            "v2" / "repositories" / self.config.public_registry.repository.split("/")[0]
        migrate(self.env)

    def smoke(self, command: list[str]) -> None:
        self.document["smoke_test"]["command"] = command
        write_config(self.config_file, self.document)

    def run(self, **conf: Any) -> tuple[int, str]:
        proc = dags_test(self.env, DAG_ID, {"commit": self.commits["initial"], "promote": True, **conf})
        return proc.returncode, proc.stdout + proc.stderr

    def notes(self) -> list[str]:
        """The notes of this DAG's runs, oldest first, read from Airflow's database (the UI shows each on its run)."""
        with sqlite3.connect(self.root / "airflow" / "airflow.db") as db:
            rows = db.execute("SELECT n.content FROM dag_run r JOIN dag_run_note n ON n.dag_run_id = r.id "
                              "WHERE r.dag_id = ? ORDER BY r.id", (DAG_ID,)).fetchall()
        return [str(r[0]) for r in rows]

    def public_snapshot(self) -> dict[str, str]:
        """sha256 of every file of this test's public repositories and of the store."""
        files = {}
        for folder in (self.public_storage, self.store):
            for path in sorted(folder.rglob("*")) if folder.exists() else []:
                if path.is_file():
                    files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        return files


@pytest.fixture(scope="module")
def world(services: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with smtp_server() as (port, inbox):
        yield World(tmp_path_factory.mktemp("gate"), port, inbox)


@pytest.fixture(scope="module")
def failed_night(world: World) -> tuple[int, str, dict[str, str], dict[str, str]]:
    world.smoke(BROKEN)
    before = world.public_snapshot()
    code, output = world.run()
    return code, output, before, world.public_snapshot()


def test_a_failing_smoke_test_publishes_nothing_and_keeps_the_cache(world: World, failed_night: Any) -> None:
    code, output, before, after = failed_night
    assert code != 0, output[-4000:]
    assert "smoke: tinyllm" in output and "is broken" in output, "the container's output is in the task log"
    assert after == before, "the public registry or the store changed after a failed gate"
    commit = world.commits["initial"]
    assert world.cache.lookup(world.config.cache_registry.repository, release_tag(commit, VARIANT)).present
    nightly = public_tag(world.config.public_tags.nightly, variant=VARIANT, commit="")
    assert not world.public.lookup(world.config.public_registry.repository, nightly).present
    assert not (local_path(wheels_prefix(world.config.wheel_store.url, commit, VARIANT)) / "index.html").exists()


def test_the_failed_night_mails_the_failed_task_the_commit_and_its_triage(world: World, failed_night: Any) -> None:
    assert len(world.inbox.messages) == 1, [m["Subject"] for m in world.inbox.messages]
    message = world.inbox.messages[0]
    text = Inbox.text(message)
    commit = world.commits["initial"]
    assert message["To"] == TO and "FAILED" in message["Subject"]
    assert f"{VARIANT}.test_release_image" in message["Subject"] and commit[:12] in message["Subject"]
    assert commit in text
    assert f"/dags/{DAG_ID}/runs/" in text and f"/tasks/{VARIANT}.test_release_image" in text
    assert "Triage: `test_release_image` or `test_wheels` failed" in text


def test_the_failed_runs_note_says_which_test_failed(world: World, failed_night: Any) -> None:
    (note,) = world.notes()
    assert note.startswith("**FAILED**: tinyllm `" + world.commits["initial"][:12] + "`"), note
    assert "gate: test_release_image FAILED, test_wheels passed" in note


def test_the_next_good_night_reuses_publishes_and_says_recovered_once(world: World, failed_night: Any) -> None:
    world.smoke(world.good_command)
    code, output = world.run()
    assert code == 0, output[-6000:]
    commit = world.commits["initial"]
    report = json.loads((world.store / commit / "RELEASE.json").read_text())["variants"][VARIANT]
    assert report["path"] == "reused: no build", report["path"]
    assert [(g["task"], g["passed"], g["why"]) for g in report["gate"]] == [
        (f"{VARIANT}.test_release_image", True, "the release image's smoke command passed"),
        (f"{VARIANT}.test_wheels", True, "the wheels test passed")]
    assert (local_path(wheels_prefix(world.config.wheel_store.url, commit, VARIANT)) / "index.html").exists()
    subjects = [str(m["Subject"]) for m in world.inbox.messages]
    assert len(subjects) == 2 and "RECOVERED" in subjects[1], subjects
    note = world.notes()[-1]
    assert note.startswith("**published**") and "gate: test_release_image passed, test_wheels passed" in note
    assert f"Full report: {world.config.wheel_store.public_url}/{commit}/RELEASE.md" in note, note

    assert world.run(dry_run=True)[0] == 0
    assert world.run()[0] == 0
    assert len(world.inbox.messages) == 2, "a dry run or a second good night alerted"
