"""Issue #11, defect 6, acceptance: a registry stopped for 60 s during a night does not fail the night.

Whole runs of the real ``rocm_nightly_release`` DAG (``airflow dags test``, default retry settings)
against a world of this module's own: two *throwaway* registries (cache and public, ``LocalRegistry``
on free ports), a private dockerd, the demo history and a ``file://`` store. The shared registries
are never stopped; the parent image is read from the shared cache registry, as the demo config says.

The run's output is read line by line as it comes (task logs included); a line marks the moment one
registry is stopped (``tests.support.outages.Outage``), and a timer starts it again 60 s later:

* build stage — the cache registry, when ``build_wheels`` starts building (so its ``docker push``
  meets the outage): the push is retried, the image built once;
* ``push_images`` — the public registry, when the task starts: the tags and copies wait it out;
* ``publish_wheels`` — the cache registry (the wheels images are read from it), when the task starts.

Each night must end green, with the task in question run once (no Airflow retry), the public tags on
the cache digests, the wheels published and verified. Each night releases its own commit, so any
test runs alone or in any order.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rocm_release.adapters.config_file import load_config
from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.adapters.store import observe_published, store_root
from rocm_release.core.config import ReleaseConfig
from rocm_release.core.plan import public_tag, release_tag, wheels_prefix
from tests.support.demo import AIRFLOW, airflow_env, demo_config, local_path, make_history, migrate, write_config
from tests.support.dockerd import PrivateDockerd
from tests.support.outages import Outage
from tests.support.registries import LocalRegistry

pytestmark = pytest.mark.e2e

DAG_ID = "rocm_nightly_release"
VARIANT = "rocm710"
OUTAGE_SECONDS = 60.0
NIGHT_TIMEOUT = 1200.0


@dataclass
class World:
    """This module's registries, daemon, config, history and Airflow home."""

    root: Path
    cache: LocalRegistry
    public: LocalRegistry
    config: ReleaseConfig
    commits: dict[str, str]
    env: dict[str, str]

    def night(self, label: str, outage: Outage) -> tuple[int, list[str], float]:
        """One ``airflow dags test`` of the commit (promote: true), its output fed to ``outage`` line by line."""
        conf = {"commit": self.commits[label], "promote": True}
        started = time.monotonic()
        proc = subprocess.Popen([AIRFLOW, "dags", "test", DAG_ID, "-c", json.dumps(conf)], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        watchdog = threading.Timer(NIGHT_TIMEOUT, proc.kill)  # a hung night fails instead of hanging the suite
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                outage.log(line.rstrip("\n"))
            code = proc.wait()
        finally:
            watchdog.cancel()
            outage.finish()
        return code, outage.lines, time.monotonic() - started

    def report(self, label: str) -> dict[str, Any]:
        commit = self.commits[label]
        report = json.loads((local_path(self.config.wheel_store.url) / commit / "RELEASE.json").read_text())
        return dict(report)

    def check_published(self, label: str) -> None:
        """Green and complete: the report says published, public tags on the cache digests, wheels verified."""
        commit, config = self.commits[label], self.config
        report = self.report(label)
        assert report["outcome"] == "published", report
        cache = OciRegistry(self.cache.host, scheme="http")
        public = OciRegistry(self.public.host, scheme="http")
        cached = cache.lookup(config.cache_registry.repository, release_tag(commit, VARIANT))
        published = public.lookup(config.public_registry.repository,
                                  public_tag(config.public_tags.nightly_commit, variant=VARIANT, commit=commit))
        assert cached.present and published.digest == cached.digest
        folder = wheels_prefix(config.wheel_store.url, commit, VARIANT)
        observed = observe_published(store_root(folder), folder)
        assert observed.present, observed.reason


@pytest.fixture(scope="module")
def world(services: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("faults")
    cache, public = LocalRegistry(root / "cache"), LocalRegistry(root / "public")
    daemon = PrivateDockerd(root, "faults")
    try:
        for registry in (cache, public):
            registry.root.mkdir()
            registry.start()
        daemon.start()
        document = demo_config(root, f"faults-{uuid.uuid4().hex[:8]}", [VARIANT])
        document["cache_registry"]["host"] = cache.host
        document["public_registry"]["host"] = public.host
        assert "retry" not in document  # the defaults: what a deployment gets
        local_path(document["wheel_store"]["url"]).mkdir()
        config_file = write_config(root / "config.yaml", document)
        commits = make_history(root / "tinyllm.git")
        env = airflow_env(root / "airflow", config_file, cache_dir=root / "cache-dir", unit_test_mode=True)
        env["DOCKER_HOST"] = daemon.host  # builds on this module's daemon (services.env names the shared one)
        migrate(env)
        yield World(root, cache, public, load_config(config_file), commits, env)
    finally:
        daemon.stop()
        cache.stop()
        public.stop()


def _task_runs(lines: list[str], task: str) -> int:
    return sum(1 for line in lines if f"[DAG TEST] starting task_id={VARIANT}.{task} " in line)


def _report(what: str, outage: Outage, seconds: float, lines: list[str]) -> None:
    failed = outage.failed_attempts()
    print(f"\n{what}: down {outage.down_seconds:.1f} s; night {seconds:.1f} s; {len(failed)} failed attempts"
          + (f", first: {failed[0][-160:]}" if failed else ""))


def _night_waits_out(world: World, outage: Outage, label: str, night: str, task: str, attempts: str) -> list[str]:
    """Run ``night`` with ``outage``; assert it ended green, the outage lasted its 60 s and met ``task``'s
    in-task retries (attempts logged as ``attempts…``), the task ran once, and the night is published."""
    code, lines, seconds = world.night(night, outage)
    _report(label, outage, seconds, lines)
    assert code == 0, "\n".join(lines[-80:])
    assert outage.down_seconds >= OUTAGE_SECONDS
    assert outage.failed_attempts(attempts), f"{task} never met the outage"
    assert _task_runs(lines, task) == 1
    world.check_published(night)
    return lines


def test_the_cache_registry_down_for_60_s_during_build_wheels_push(world: World) -> None:
    outage = Outage(world.cache, OUTAGE_SECONDS, stop_on="building wheels (", from_stop=True)
    lines = _night_waits_out(world, outage, "cache registry during build_wheels", "initial", "build_wheels",
                             "docker push of ")
    assert sum(1 for line in lines if "building wheels (" in line) == 1, "the wheels image was built twice"


def test_the_public_registry_down_for_60_s_during_push_images(world: World) -> None:
    outage = Outage(world.public, OUTAGE_SECONDS, stop_on=f"[DAG TEST] starting task_id={VARIANT}.push_images ",
                    from_stop=True)
    _night_waits_out(world, outage, "public registry during push_images", "source_change", "push_images", "")


def test_the_cache_registry_down_for_60_s_during_publish_wheels(world: World) -> None:
    outage = Outage(world.cache, OUTAGE_SECONDS, stop_on=f"[DAG TEST] starting task_id={VARIANT}.publish_wheels ",
                    from_stop=True)
    _night_waits_out(world, outage, "cache registry during publish_wheels", "source_change_2", "publish_wheels",
                     "read of /dist of ")
