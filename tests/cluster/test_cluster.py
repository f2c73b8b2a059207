"""The nightly DAG on a distributed Airflow: CeleryExecutor, Postgres, Redis, two ROCm build hosts.

The cluster of `make cluster-up` (include/scripts/cluster.py): api-server, scheduler, dag-processor,
triggerer, a worker on the default queue (``airflow-worker``) and two on the ``rocm`` queue
(``rocm-host-a``, ``rocm-host-b``), each build host with a dockerd, git mirror cache, temp folder and
home of its own; the wheel store on S3 (moto), the source over ``git://``, task logs on S3. Everything
goes through the REST API, as a user's script would:

1. a full-rebuild night (both variants, promote): every build task and both smoke tests ran on a build
   host from the ``rocm`` queue and nothing else did; the two variants built in parallel, one on each host (their
   build intervals overlap; never more than the pool's 2 builds at once, never 2 on one host); the
   published wheels install with pip from the store's public URL;
2. a no-op night of the same commit: nothing built, nothing new in the cache registry;
3. a build task of night 1 cleared while the host that ran it is drained: it runs on the other host and
   reuses the image the first try pushed (its log says so, the digest is the same);
4. ``kill -9`` of the build host running a build (worker, task processes, dockerd): the scheduler
   notices the missing heartbeat (``task_instance_heartbeat_timeout``, 60 s here), fails the build
   (builds are not retried: ``retries`` 0), the run fails with nothing of the new commit public; the
   host comes back (``cluster.py up``) and the next night converges.

Each step is a module fixture, done once, in this order; timings are printed at the end (``pytest -s``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.airflow_api import wait_for
from tests.support.cluster import SCRIPT, Cluster

pytestmark = pytest.mark.cluster

VARIANTS = ("rocm710", "rocm723")
BUILDS = ("build_base_image", "build_wheels", "build_release_image")
GATE = ("test_release_image", "test_wheels")  # the smoke tests: on the build hosts too (their docker, their pool)
NIGHT_TIMEOUT = 1200
TIMINGS: dict[str, float] = {}


def is_build(task_id: str) -> bool:
    return task_id.rsplit(".", 1)[-1] in BUILDS


def on_build_host(task_id: str) -> bool:
    return task_id.rsplit(".", 1)[-1] in (*BUILDS, *GATE)


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Night:
    """One night's run id and its task instances as they ended (task id → task instance)."""

    run_id: str
    tis: dict[str, dict[str, Any]]
    seconds: float


def night(cluster: Cluster, title: str, conf: dict[str, Any], *, expect: str = "success") -> Night:
    started = time.monotonic()
    run_id = cluster.trigger(conf)
    cluster.finished(run_id, NIGHT_TIMEOUT, expect=expect)
    seconds = time.monotonic() - started
    TIMINGS[title] = seconds
    return Night(run_id, cluster.task_instances(run_id), seconds)


def ran(tis: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The task instances that ran (succeeded or failed): those that have a host."""
    return {t: ti for t, ti in tis.items() if ti["state"] in ("success", "failed")}


@pytest.fixture(scope="module")
def world(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with nothing cached or published; at the end, the timings (``pytest -s``, and a file)."""
    TIMINGS["cluster.py up (this session)"] = cluster.up_seconds
    assert cluster.get("/pools/rocm_builders")["slots"] == 2
    cluster.send("PATCH", f"/dags/{cluster.dag_id}", {"is_paused": False})
    cluster.reset()
    yield cluster
    lines = [f"timings: {what}: {seconds:.1f} s" for what, seconds in TIMINGS.items()]
    (cluster.m.LOGS / "test-timings.txt").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))


@pytest.fixture(scope="module")
def full_night(world: Cluster) -> Night:
    return night(world, "night 1: full rebuild, 2 variants", {"commit": world.commits["initial"], "promote": True})


@pytest.fixture(scope="module")
def noop_night(world: Cluster, full_night: Night) -> tuple[Night, set[str], set[str]]:
    before = world.cache_tags()
    done = night(world, "night 2: the same commit, nothing to do", {"commit": world.commits["initial"],
                                                                    "promote": True})
    return done, before, world.cache_tags()


def test_every_build_ran_on_a_rocm_host_and_nothing_else_did(world: Cluster, full_night: Night) -> None:
    tis = ran(full_night.tis)
    builds = {t: ti for t, ti in tis.items() if is_build(t)}
    assert sorted(builds) == sorted(f"{v}.{b}" for v in VARIANTS for b in BUILDS), "a full rebuild builds all"
    where = {t: (ti["hostname"], ti["queue"]) for t, ti in tis.items()}
    print("\nnight 1, task → (host, queue):\n" + "\n".join(f"  {t}: {h}" for t, h in sorted(where.items())))
    assert sorted(t for t in tis if on_build_host(t) and not is_build(t)) == sorted(
        f"{v}.{g}" for v in VARIANTS for g in GATE), "both smoke tests ran for each variant"
    for task, (host, queue) in where.items():
        if on_build_host(task):
            assert queue == "rocm" and host in world.build_hosts, (task, host, queue)
        else:
            assert queue == "default" and host == world.default_host, (task, host, queue)
    assert {host for t, (host, _) in where.items() if is_build(t)} == set(world.build_hosts)


def test_the_two_variants_built_in_parallel_one_on_each_host(world: Cluster, full_night: Night) -> None:
    builds = [(t, ti["hostname"], when(ti["start_date"]), when(ti["end_date"]))
              for t, ti in ran(full_night.tis).items() if is_build(t)]
    # The pool: at no instant more than 2 builds; a host: never 2 at once (each worker takes one task).
    for _, _, start, _ in builds:
        at_once = [b for b in builds if b[2] <= start < b[3]]
        assert len(at_once) <= 2, at_once
        assert len({b[1] for b in at_once}) == len(at_once), f"two builds on one host at once: {at_once}"
    overlaps = [(a, b) for a in builds for b in builds
                if a[0].split(".")[0] < b[0].split(".")[0] and a[2] < b[3] and b[2] < a[3]]
    assert overlaps, f"no build of one variant overlapped one of the other: {builds}"
    seconds = max(min(a[3], b[3]) - max(a[2], b[2]) for a, b in overlaps).total_seconds()
    TIMINGS["longest overlap of two variants' builds"] = seconds
    assert all(a[1] != b[1] for a, b in overlaps)


def test_the_published_wheels_install_with_pip(world: Cluster, full_night: Night) -> None:
    variant = VARIANTS[0]
    base = world.config.wheel_store.public_url
    assert base is not None
    # The project pages of the nightly index (moto serves objects, not a folder's index.html as a CDN would).
    pages = [arg for project in ("tinyllm", "tinytorch")
             for arg in ("--find-links", f"{base}/nightly/{variant}/{project}/index.html")]
    with tempfile.TemporaryDirectory(prefix="cluster-pip-") as venv:
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, capture_output=True)
        python = str(Path(venv) / "bin" / "python")
        # Only the store: no pip setting of this machine (a config file, PIP_FIND_LINKS) may add another source.
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PIP_")}, "PIP_CONFIG_FILE": os.devnull}
        install = subprocess.run([python, "-m", "pip", "install", "--no-cache-dir", "--no-index", *pages,
                                  world.config.project.name], env=env, capture_output=True, text=True, check=False)
        assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
        info = subprocess.run([python, "-c", "import tinyllm; print(tinyllm.info())"], capture_output=True,
                              text=True, check=False)
        assert info.returncode == 0, info.stderr


def test_a_noop_night_builds_nothing_and_runs_only_on_the_default_worker(
        world: Cluster, noop_night: tuple[Night, set[str], set[str]]) -> None:
    done, before, after = noop_night
    tis = ran(done.tis)
    assert not [t for t in tis if is_build(t)]
    assert {ti["hostname"] for ti in tis.values()} == {world.default_host}
    assert after == before, f"the no-op night changed the cache: {sorted(after ^ before)}"
    for variant in VARIANTS:
        assert world.nightly_commit(variant) == world.commits["initial"]


@pytest.fixture(scope="module")
def cleared(world: Cluster, full_night: Night, noop_night: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
    """``rocm710.build_wheels`` of night 1 cleared while the host of its first try is drained."""
    task = f"{VARIANTS[0]}.build_wheels"
    first = world.tries(full_night.run_id, task)[-1]
    pushed = world.xcom(full_night.run_id, task)
    world.drain(first["hostname"])
    try:
        started = time.monotonic()
        world.send("POST", f"/dags/{world.dag_id}/clearTaskInstances",
                   {"dry_run": False, "dag_run_id": full_night.run_id, "task_ids": [task], "only_failed": False,
                    "include_downstream": False, "include_upstream": False, "reset_dag_runs": True})
        wait_for(f"{task} to run again", lambda: world.tries(full_night.run_id, task)[-1]["try_number"] >
                 first["try_number"] and world.tries(full_night.run_id, task)[-1]["state"] in ("success", "failed"),
                 NIGHT_TIMEOUT, alive=world.alive, interval=1)
        world.finished(full_night.run_id, NIGHT_TIMEOUT)
        TIMINGS["cleared build, run again on the other host"] = time.monotonic() - started
    finally:
        world.undrain(first["hostname"])
    second = world.tries(full_night.run_id, task)[-1]
    assert world.xcom(full_night.run_id, task) == pushed
    return first, second, world.log(full_night.run_id, task, second["try_number"])


def test_a_cleared_build_runs_on_the_other_host_and_reuses_what_was_pushed(
        world: Cluster, cleared: tuple[dict[str, Any], dict[str, Any], str]) -> None:
    first, second, log = cleared
    assert second["state"] == "success"
    assert second["hostname"] != first["hostname"] and second["hostname"] in world.build_hosts
    assert "already pushed by this run" in log and "reusing it" in log, log[-3000:]
    assert "building wheels" not in log


@pytest.fixture(scope="module")
def killed(world: Cluster, cleared: Any) -> dict[str, Any]:
    """Night 3 (``source_change``: wheels and release image to build) with the host of its build killed."""
    commit = world.commits["source_change"]
    task = f"{VARIANTS[0]}.build_wheels"
    public_before, store_before = world.public_tags(), world.store_keys()
    started = time.monotonic()
    run_id = world.trigger({"commit": commit, "promote": True, "variants": [VARIANTS[0]]})
    running = wait_for(f"{task} to run on a build host", lambda: (
        ti if (ti := world.task_instances(run_id).get(task, {})).get("state") == "running" and ti.get("hostname")
        else None), NIGHT_TIMEOUT, alive=world.alive, interval=0.5)
    host = running["hostname"]
    killed_pids = world.kill_host(host)
    killed_at = time.monotonic()
    try:
        world.finished(run_id, NIGHT_TIMEOUT, expect="failed")
        noticed = time.monotonic() - killed_at
        tis = world.task_instances(run_id)
        public_after, store_after = world.public_tags(), world.store_keys()
        nightly = world.nightly_commit(VARIANTS[0])
    finally:
        up = subprocess.run([sys.executable, str(SCRIPT), "up"], capture_output=True, text=True, timeout=900,
                            check=False)
        world.dead.discard(host)
    assert up.returncode == 0, (up.stdout + up.stderr)[-4000:]
    TIMINGS["host killed → run failed"] = noticed
    TIMINGS["night 3 with a host killed"] = time.monotonic() - started
    converged = night(world, "night 4: the same commit again, after the host came back",
                      {"commit": commit, "promote": True, "variants": [VARIANTS[0]]})
    return {"host": host, "pids": killed_pids, "tis": tis, "public_before": public_before, "public_after": public_after,
            "store_before": store_before, "store_after": store_after, "nightly": nightly, "converged": converged,
            "commit": commit, "heartbeat_timeouts": world.get("/eventLogs", dag_id=world.dag_id, run_id=run_id,
                                                              task_id=task, event="heartbeat timeout")["event_logs"]}


def test_a_killed_build_host_fails_the_build_publishes_nothing_and_the_next_night_converges(
        world: Cluster, killed: dict[str, Any]) -> None:
    tis, commit = killed["tis"], killed["commit"]
    assert killed["pids"], "nothing was killed"
    build = tis[f"{VARIANTS[0]}.build_wheels"]
    assert build["state"] == "failed" and build["hostname"] == killed["host"]
    assert killed["heartbeat_timeouts"], "the scheduler did not record a heartbeat timeout of the build"
    # Nothing after the failed build ran; nothing of the new commit is public; nightly did not move.
    for task in ("push_images", "publish_wheels", "promote_nightly"):
        assert tis[f"{VARIANTS[0]}.{task}"]["state"] in ("upstream_failed", "skipped"), tis[f"{VARIANTS[0]}.{task}"]
    assert killed["public_after"] == killed["public_before"]
    assert killed["store_after"] == killed["store_before"]
    assert killed["nightly"] == world.commits["initial"]
    converged: Night = killed["converged"]
    assert world.published(commit, VARIANTS[0])
    assert world.nightly_commit(VARIANTS[0]) == commit
    built = {t: ti["hostname"] for t, ti in ran(converged.tis).items() if is_build(t)}
    assert sorted(built) == [f"{VARIANTS[0]}.build_release_image", f"{VARIANTS[0]}.build_wheels"], built
