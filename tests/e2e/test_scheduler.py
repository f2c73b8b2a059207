"""The real `rocm_nightly_release` DAG through Airflow's own services, driven as users drive them.

What `airflow standalone` runs — `airflow db migrate`, then the scheduler
(LocalExecutor, SQLite), the dag-processor, the api-server and the triggerer —
runs on 127.0.0.1 with a config, registries, wheel store, git history and
Airflow home of this module's own. The parts are started one by one rather
than through `standalone`, whose scheduler and triggerer also serve task logs
on every interface (see COMPONENTS). Everything below goes through the public
REST API (`/api/v2`, JWT from `POST /auth/token` with the password the
SimpleAuthManager generated):

1. a manual run triggered like the UI form does (`logical_date: null`, Params
   in `conf`: commit `initial`, promote, variants [rocm710]) builds, publishes
   and promotes that commit; the configured variant it left out (rocm723) is
   skipped throughout. While it runs, the wheel store gives
   `check_wheels_published` an error that is neither "present" nor "absent"
   (its `index.html` is unreadable) until the test repairs it, so that sensor
   really goes `up_for_reschedule` under the scheduler, pokes again, and ends
   `success` with the store's definitive answer in the same try;
2. a backfill of 2026-11-02 and 2026-11-03 (02:00 UTC, the DAG's cron; after
   its start_date 2026-01-01), both variants, `max_active_runs` 1, releases
   the commit that was the branch tip at each date (`initial`, then
   `source_change`), builds only what is missing, publishes both, and leaves
   the `nightly` aliases (public image tag and wheel index) exactly where the
   manual run put them; rocm723, never promoted, still has none;
3. build tasks carry pool `rocm_builders` and queue `rocm` (LocalExecutor
   ignores queues: the attribute is what is checked), never overlap in the
   one-slot pool, and on 11-03 one variant's build, ready, waited `scheduled`
   for the slot the other's held; every sensor of a selected variant ended
   `success`, every other one `skipped`; only 127.0.0.1 is listened on.

The scheduler runs with `[scheduler] use_job_schedule = False`: the wall
clock is weeks after the demo history (2026-11-01..04), and with
`catchup=False` unpausing the DAG would otherwise start the latest scheduled
night at once (today 02:00, the tip `source_change_2`, on a new base) and move
`nightly` before the test can observe anything. Manual runs and backfills do
not depend on that switch.

The three steps are module-scoped fixtures (`manual_run`, then `backfill`), each done once, when a
test first asks for it, so that every test can also run alone: the backfill test gets the manual run
first, the pool test both.

Wall time, 2 cores, services up, 7 passing module runs: 106-147 s in all
(startup: db migrate until the DAG is listed 12-30 s; manual run 40-56 s, of
which 15-29 s are the rescheduled sensor's wait; backfill 36-66 s; teardown
4-13 s). The module prints these as `timings:` lines at teardown (`pytest -s`)
and writes them to timings.txt in its tmp folder.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from rocm_release.adapters.config_file import load_config
from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.core.plan import LABEL_COMMIT, nightly_wheels_prefix, public_tag, wheels_prefix
from tests.support.airflow_api import RUN_TIMEOUT, AirflowApi, wait_for
from tests.support.demo import (
    airflow_env,
    demo_config,
    import_pools_and_connections,
    local_path,
    make_history,
    write_config,
)
from tests.support.net import free_port

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
DAG_ID = "rocm_nightly_release"
VARIANT = "rocm710"  # the manual run selects only this one, as a user would in the trigger form
OTHER = "rocm723"  # configured too (demo.yaml has both): skipped in the manual run, built by the backfill
POOL = "rocm_builders"
QUEUE = "rocm"
SENSORS = ("check_base_image", "check_wheels_image", "check_release_image", "check_wheels_published")
BUILDS = ("build_base_image", "build_wheels", "build_release_image")
# The backfill's nights (the DAG's cron is "0 2 * * *") and the commit that was the tip at each.
BACKFILL = {"2026-11-02T02:00:00+00:00": "initial", "2026-11-03T02:00:00+00:00": "source_change"}
# demo.yaml pokes every 2 s (backoff cap 10 s); rocm_release's default, used by vllm.yaml, is 30 s (cap 600 s).
# Under a real scheduler a short reschedule interval trips apache/airflow#71172 (open on 3.3.2; fix proposed
# in PR #71194): a reschedule keeps the try_number, and when the scheduler re-queues the sensor before it
# has drained the executor's "success" event of the poke that rescheduled, it takes that stale event for a
# task killed externally and fails the sensor ("finished with state success, but the task instance's state
# attribute is queued"). Here that event lags the poke by up to ~6 s: the task supervisor notices its
# child's exit only at its next select() timeout ([workers] min_heartbeat_interval, 5 s) once the child's
# sockets are closed. Seen here with 2 s (first reschedule after 1 s) and 10 s (after 5 s). At 30 s (cap
# 30 s) the first reschedule is 15-29 s away, well after the event.
SENSOR_POKE_INTERVAL = 30
SENSOR_MAX_WAIT = 30
STATE_MISMATCH = "but the task instance's state attribute is"
STARTUP_TIMEOUT = 180
TIMINGS: dict[str, float | int] = {}
# What `airflow standalone` runs, minus its log servers: standalone's scheduler and triggerer serve task
# logs on 0.0.0.0:8793 / [::]:8794 (utils/serve_logs/core.py binds every interface, and the only switch is
# --skip-serve-logs). The api-server reads the logs from $AIRFLOW_HOME/logs on this host anyway.
COMPONENTS = {
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
    "api-server": ["api-server"],
}

class World(AirflowApi):
    """This module's config, registries, store, git history and its running Airflow services."""

    def __init__(self, root: Path) -> None:
        self.root = root
        demo = demo_config(root, f"e2e-sched-{uuid.uuid4().hex[:8]}")
        assert [v["name"] for v in demo["variants"]] == [VARIANT, OTHER]
        demo["sensors"]["poke_interval"] = SENSOR_POKE_INTERVAL
        demo["sensors"]["max_wait"] = SENSOR_MAX_WAIT
        self.config_file = write_config(root / "config.yaml", demo)
        self.config = load_config(self.config_file)
        self.store_url = self.config.wheel_store.url
        self.store = root / "wheels"
        self.store.mkdir()
        self.commits = make_history(root / "tinyllm.git")
        self.public = OciRegistry(self.config.public_registry.host, scheme="http")
        self.public_repo = self.config.public_registry.repository
        self.home = root / "airflow"
        self.home.mkdir()
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}", DAG_ID)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env = {
            **airflow_env(self.home, self.config_file, cache_dir=root / "cache", base=env),
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__WORKERS": "1",
            # The dag-processor parses the DAG folder as it starts; this is how soon it sees a new file.
            # (Re-parsing sooner than the default 30 s would only add writers to the SQLite database.)
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ the services

    def start(self) -> None:
        """Airflow's services, each in a session and process group of its own; ready when the API
        answers, a token is issued and the DAG is serialized."""
        started = time.monotonic()
        migrate = subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=self.env, cwd=self.root,
                                 capture_output=True, text=True, timeout=STARTUP_TIMEOUT, check=False)
        assert migrate.returncode == 0, (migrate.stdout + migrate.stderr)[-4000:]
        # The pool (rocm_builders, one slot) and the placeholder connections, from the deployment files.
        import_pools_and_connections(BIN / "airflow", self.env, cwd=self.root)
        for name, args in COMPONENTS.items():
            with (self.root / f"{name}.log").open("wb") as log:
                self.procs[name] = subprocess.Popen([str(BIN / "airflow"), *args], env=self.env, cwd=self.root,
                                                    stdin=subprocess.DEVNULL, stdout=log,
                                                    stderr=subprocess.STDOUT, start_new_session=True)
        health = wait_for("the api-server, scheduler, dag-processor and triggerer", self._healthy,
                          STARTUP_TIMEOUT, alive=self.alive)
        passwords = self.home / "simple_auth_manager_passwords.json.generated"
        wait_for(str(passwords), passwords.exists, 30, alive=self.alive)
        user, password = next(iter(json.loads(passwords.read_text()).items()))
        self.login(user, password)
        wait_for(f"the dag-processor to serialize {DAG_ID}", self._dag_parsed, STARTUP_TIMEOUT, alive=self.alive)
        TIMINGS["startup (db migrate until DAG listed)"] = time.monotonic() - started
        assert health["metadatabase"]["status"] == "healthy"

    def _healthy(self) -> dict[str, Any] | None:
        try:
            answer = httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
        except httpx.TransportError:
            return None
        if answer.status_code != 200:
            return None
        health: dict[str, Any] = answer.json()
        parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
        return health if all((health.get(p) or {}).get("status") == "healthy" for p in parts) else None

    def _dag_parsed(self) -> bool:
        errors = self.get("/importErrors")["import_errors"]
        assert not errors, f"import errors: {errors}"
        return self.api("GET", f"/dags/{DAG_ID}").status_code == 200

    def alive(self) -> None:
        """Fail at once, with the end of its output, if one of Airflow's services exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"airflow {name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, chars: int = 6000) -> str:
        log = self.root / f"{name}.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""

    def stop(self) -> None:
        """SIGTERM each service's process group, then SIGKILL what is left of them and of every process
        with our AIRFLOW_HOME in its environment (task processes: the task supervisor gives each a
        process group of its own)."""
        self.close()
        groups = [proc.pid for proc in self.procs.values()]
        for pgid in groups:
            _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while self._ours(groups) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pgid in groups:
            _signal_group(pgid, signal.SIGKILL)
        for pid in self._ours(groups):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs.values():
            proc.wait(timeout=30)
        left = self._ours(groups)
        assert not left, f"processes still running after teardown: {left}"

    def _ours(self, groups: list[int]) -> list[int]:
        """Live (non-zombie) processes in our groups or with our AIRFLOW_HOME in their environment."""
        marker = f"AIRFLOW_HOME={self.home}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] == "Z":
                    continue
                if int(fields[2]) in groups or marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
        return found

    def listening(self) -> set[str]:
        """The local addresses our processes listen on (TCP, from /proc/net)."""
        inodes = set()
        for pid in self._ours([proc.pid for proc in self.procs.values()]):
            try:
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
            except OSError:
                continue
        found = set()
        for table, width in (("tcp", 8), ("tcp6", 32)):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    found.add(_address(cols[1], width))
        return found

    # ------------------------------------------------------------------ the REST API

    def create_backfill(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /backfills, again while it answers 503 "Database is locked".

        Creating a backfill writes the backfill and its runs in one go; on SQLite that collides now
        and then with the scheduler's and dag-processor's writes, and the api-server then removes
        what it wrote and answers 503 (a retryable status; "not supported on SQLite under
        concurrent access. Please use PostgreSQL or MySQL"). A user retries; so does this.
        """
        attempts = []

        def attempt() -> dict[str, Any] | None:
            answer = self.api("POST", "/backfills", json=body)
            attempts.append(answer.status_code)
            if answer.status_code == 503 and "Database is locked" in answer.text:
                left = [b for b in self.get("/backfills", dag_id=DAG_ID)["backfills"] if not b["completed_at"]]
                assert not left, f"a refused backfill creation left an active backfill behind: {left}"
                return None
            assert answer.status_code == 200, f"POST /backfills {body}: {answer.status_code} {answer.text}"
            created: dict[str, Any] = answer.json()
            return created

        created = wait_for("the api-server to create the backfill", attempt, 60, alive=self.alive, interval=1)
        TIMINGS["backfill creation attempts (SQLite 503s + 1)"] = len(attempts)
        return created

    def failure_hint(self) -> str:
        if STATE_MISMATCH in self.tail("scheduler", 10**7):
            return ("\nthe scheduler failed a task on a stale executor event (apache/airflow#71172); "
                    f"see {self.root / 'scheduler.log'}")
        return ""

    # ------------------------------------------------------------------ what users see

    def nightly_commit(self, variant: str) -> str | None:
        """The commit the public `nightly-<variant>` image tag points to (its revision label)."""
        digest = self.nightly_digest(variant)
        return self.public.labels(self.public_repo, digest).get(LABEL_COMMIT) if digest else None

    def nightly_digest(self, variant: str) -> str | None:
        found = self.public.lookup(self.public_repo, public_tag(self.config.public_tags.nightly, variant=variant,
                                                                commit=""))
        return found.digest if found.present else None

    def nightly_index(self, variant: str) -> str | None:
        page = local_path(nightly_wheels_prefix(self.store_url, variant)) / "index.html"
        return page.read_text() if page.exists() else None

    def published(self, commit: str, variant: str) -> bool:
        """The commit's wheel index and its public image (``nightly-<commit>-<variant>``) are there."""
        tag = public_tag(self.config.public_tags.nightly_commit, variant=variant, commit=commit)
        return ((local_path(wheels_prefix(self.store_url, commit, variant)) / "index.html").exists()
                and self.public.lookup(self.public_repo, tag).present)

    def nightly_index_commit(self, variant: str) -> str | None:
        """The commit the `nightly/<variant>/` index names (meta rocm-nightly:commit)."""
        text = self.nightly_index(variant) or ""
        marker = 'name="rocm-nightly:commit" content="'
        return text.split(marker, 1)[1].split('"', 1)[0] if marker in text else None

    def release_report(self, commit: str) -> dict[str, Any]:
        report: dict[str, Any] = json.loads((self.store / commit / "RELEASE.json").read_text())
        return report


def _address(hex_address: str, width: int) -> str:
    """``0100007F:1F90`` (/proc/net/tcp, little-endian words) → ``127.0.0.1:8080``; IPv6 likewise."""
    host, port = hex_address.split(":")
    raw = b"".join(bytes.fromhex(host[i:i + 8])[::-1] for i in range(0, width, 8))
    return f"{ipaddress.ip_address(raw)}:{int(port, 16)}"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def world(services: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    began = time.monotonic()
    w = World(tmp_path_factory.mktemp("e2e-scheduler"))
    try:
        w.start()
        assert w.get(f"/pools/{POOL}")["slots"] == 1  # imported from include/airflow/pools.json
        assert w.send("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})["is_paused"] is False
        yield w
    finally:
        stopping = time.monotonic()
        w.stop()
        TIMINGS["teardown (stop every process)"] = time.monotonic() - stopping
        TIMINGS["module wall time"] = time.monotonic() - began
        lines = [f"timings: {what}: {value:.1f} s" if isinstance(value, float) else f"timings: {what}: {value}"
                 for what, value in TIMINGS.items()]
        (w.root / "timings.txt").write_text("\n".join(lines) + "\n")
        print("\n" + "\n".join(lines))


@dataclass(frozen=True)
class ManualRun:
    """The manual run's id and the RELEASE.json it wrote (a later backfill of the commit rewrites it)."""

    run_id: str
    report: dict[str, Any]


@pytest.fixture(scope="module")
def manual_run(world: World) -> ManualRun:
    """A manual run triggered like the UI form does, of `initial` (promote, rocm710 only).

    While it runs, the store gives no definitive answer about the commit's wheels (index.html unreadable)
    until the sensor has been rescheduled once; then it is repaired.
    """
    initial = world.commits["initial"]
    blocked = local_path(wheels_prefix(world.store_url, initial, VARIANT)) / "index.html"
    blocked.mkdir(parents=True)
    started = time.monotonic()
    run = world.send("POST", f"/dags/{DAG_ID}/dagRuns",
                     {"logical_date": None, "conf": {"commit": initial, "promote": True, "variants": [VARIANT]}})
    run_id: str = run["dag_run_id"]
    assert run["logical_date"] is None and run["run_type"] == "manual"

    sensor = f"{VARIANT}.check_wheels_published"
    wait_for(f"{sensor} to be up_for_reschedule",
             lambda: world.task_instances(run_id).get(sensor, {}).get("state") == "up_for_reschedule",
             RUN_TIMEOUT, alive=world.alive, interval=0.25)
    blocked.rmdir()
    world.finished(run_id)
    TIMINGS["manual run (initial, full rebuild of one variant)"] = time.monotonic() - started
    return ManualRun(run_id, world.release_report(initial))


@dataclass(frozen=True)
class Backfill:
    """The backfill of 11-02 and 11-03 (after the manual run): what the dry run planned, the backfill as
    created and as completed, and the `nightly` alias of rocm710 (image digest, index page) before it."""

    planned: dict[str, Any]
    created: dict[str, Any]
    done: dict[str, Any]
    nightly_digest: str | None
    nightly_index: str | None


def backfill_runs(world: World) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = world.get(f"/dags/{DAG_ID}/dagRuns", run_type=["backfill"])["dag_runs"]
    return found


@pytest.fixture(scope="module")
def backfill(world: World, manual_run: ManualRun) -> Backfill:
    """A backfill of 2026-11-02 and 2026-11-03, both variants, `max_active_runs` 1, after the manual run."""
    nightly_digest, nightly_index = world.nightly_digest(VARIANT), world.nightly_index(VARIANT)
    body = {
        "dag_id": DAG_ID,
        "from_date": "2026-11-02T02:00:00Z",
        "to_date": "2026-11-03T02:00:00Z",
        "dag_run_conf": {"variants": [VARIANT, OTHER]},
        "reprocess_behavior": "none",
        "max_active_runs": 1,
        "run_backwards": False,
    }
    planned = world.send("POST", "/backfills/dry_run", body)
    started = time.monotonic()
    created = world.create_backfill(body)
    wait_for("both backfill runs to finish", lambda: len(found := backfill_runs(world)) == len(BACKFILL) and all(
        r["state"] in ("success", "failed") for r in found), 2 * RUN_TIMEOUT, alive=world.alive, interval=1)
    done = wait_for("the backfill to be marked complete",
                    lambda: (b if (b := world.get(f"/backfills/{created['id']}"))["completed_at"] else None),
                    60, alive=world.alive)
    TIMINGS["backfill (2 nights, 2 variants)"] = time.monotonic() - started
    return Backfill(planned, created, done, nightly_digest, nightly_index)


def test_manual_run_with_params_through_the_api_publishes_promotes_and_reschedules_a_sensor(
    world: World, manual_run: ManualRun
) -> None:
    initial = world.commits["initial"]
    run_id = manual_run.run_id
    sensor = f"{VARIANT}.check_wheels_published"
    log = world.log(run_id, sensor)
    assert "No answer yet about wheels_published" in log and "ABSENT" in log, log[-3000:]
    tis = world.task_instances(run_id)
    assert tis[sensor]["state"] == "success" and tis[sensor]["try_number"] == 1  # a reschedule is not a retry
    assert tis[f"{VARIANT}.promote_nightly"]["state"] == "success"  # it moved the aliases
    # The variant the form left out: its sensors skip at their first poke, and so does everything after them.
    assert {t: ti["state"] for t, ti in tis.items() if t.startswith(f"{OTHER}.")} == \
        {t: "skipped" for t in tis if t.startswith(f"{OTHER}.")}

    plan = world.xcom(run_id, "resolve_release")
    assert plan["commit"] == initial and plan["run_kind"] == "manual" and plan["promote"] is True
    assert [v["variant"]["name"] for v in plan["variants"]] == [VARIANT]
    report = manual_run.report
    assert report["outcome"] == "published" and report["run_id"] == run_id and list(report["variants"]) == [VARIANT]
    entry = report["variants"][VARIANT]
    assert entry["path"] == "built: build_base_image, build_wheels, build_release_image"
    assert {w["filename"].split("-")[0] for w in entry["wheels"]} == {"tinyllm", "tinytorch"}
    assert entry["promotion"]["promoted"] is True
    assert [(g["task"], g["passed"]) for g in entry["gate"]] == [(f"{VARIANT}.test_release_image", True),
                                                                (f"{VARIANT}.test_wheels", True)]
    # The release summary on the run itself, where the UI shows it (the scheduler's run-note listener).
    note = world.run(run_id)["note"]
    assert note.startswith(f"**published**: tinyllm `{initial[:12]}` (manual run)"), note
    assert "gate: test_release_image passed, test_wheels passed; nightly: promoted" in note, note
    assert world.nightly_commit(VARIANT) == initial
    assert world.nightly_index_commit(VARIANT) == initial
    assert world.nightly_digest(OTHER) is None and world.nightly_index(OTHER) is None
    # Only the api-server listens, and only on 127.0.0.1.
    assert world.listening() == {f"127.0.0.1:{world.port}"}


def test_backfill_releases_the_tip_as_of_each_night_and_never_promotes(world: World, backfill: Backfill) -> None:
    assert backfill.nightly_digest and backfill.nightly_index  # the manual run promoted initial
    assert sorted(_utc(b["logical_date"]) for b in backfill.planned["backfills"]) == sorted(BACKFILL)
    assert backfill.created["max_active_runs"] == 1 and backfill.created["reprocess_behavior"] == "none"
    assert backfill.done["completed_at"]

    by_date = {_utc(r["logical_date"]): r for r in backfill_runs(world)}
    assert set(by_date) == set(BACKFILL)
    for date, label in BACKFILL.items():
        run = world.finished(by_date[date]["dag_run_id"])
        commit = world.commits[label]
        plan = world.xcom(run["dag_run_id"], "resolve_release")
        assert (plan["commit"], plan["run_kind"]) == (commit, "backfill"), f"{date}: {plan['commit']} is not {label}"
        assert _utc(plan["as_of"]) == date
        assert [v["variant"]["name"] for v in plan["variants"]] == [VARIANT, OTHER]
        summary = world.xcom(run["dag_run_id"], "release_summary")
        report = world.release_report(commit)
        assert summary["commit"] == report["commit"] == commit
        assert report["outcome"] == "published" and report["run_kind"] == "backfill"
        assert report["run_id"] == run["dag_run_id"] and list(report["variants"]) == [VARIANT, OTHER]
        tis = world.task_instances(run["dag_run_id"])
        for variant in (VARIANT, OTHER):
            entry = report["variants"][variant]
            assert entry["promotion"] == {"promoted": False, "why": "backfills never promote"}
            # It did nothing, and its state says so (not a green "success"); the summary ran all the same.
            assert tis[f"{variant}.promote_nightly"]["state"] == "skipped"
            assert world.published(commit, variant)
    initial, source_change = (world.release_report(world.commits[c])["variants"] for c in ("initial", "source_change"))
    # 11-02 is the commit the manual run built for rocm710: reused; rocm723 had nothing yet.
    assert initial[VARIANT]["path"] == "reused: no build"
    assert initial[OTHER]["path"] == "built: build_base_image, build_wheels, build_release_image"
    # 11-03 is a source-only change: both variants rebuild wheels and release image on their base.
    assert source_change[VARIANT]["path"] == source_change[OTHER]["path"] == "built: build_wheels, build_release_image"
    # The nightly aliases did not move, although source_change is newer than what they name, and
    # rocm723 (never promoted) still has none.
    assert world.nightly_commit(VARIANT) == world.commits["initial"]
    assert world.nightly_digest(VARIANT) == backfill.nightly_digest
    assert world.nightly_index_commit(VARIANT) == world.commits["initial"]
    assert world.nightly_index(VARIANT) == backfill.nightly_index
    assert world.nightly_digest(OTHER) is None and world.nightly_index(OTHER) is None


def test_builds_use_the_pool_and_queue_and_every_sensor_succeeded(world: World, backfill: Backfill) -> None:
    runs = world.get(f"/dags/{DAG_ID}/dagRuns")["dag_runs"]
    assert sorted(r["run_type"] for r in runs) == ["backfill", "backfill", "manual"]  # no scheduled run
    builds = []
    for run in runs:
        tis = world.task_instances(run["dag_run_id"])
        selected = (VARIANT,) if run["run_type"] == "manual" else (VARIANT, OTHER)
        for variant in (VARIANT, OTHER):
            for sensor in SENSORS:
                ti = tis[f"{variant}.{sensor}"]
                assert ti["operator"] == "ArtifactSensor"
                expected = "success" if variant in selected else "skipped"
                assert ti["state"] == expected, (run["dag_run_id"], ti["task_id"], ti["state"])
            for build in BUILDS:
                ti = tis[f"{variant}.{build}"]
                assert (ti["pool"], ti["pool_slots"], ti["queue"]) == (POOL, 1, QUEUE), ti
                assert ti["state"] in ("success", "skipped"), (run["dag_run_id"], ti["task_id"], ti["state"])
                if ti["state"] == "success":
                    builds.append({k: _when(ti[k]) for k in ("scheduled_when", "queued_when", "start_date", "end_date")}
                                  | {"task": f"{run['dag_run_id']} {ti['task_id']}"})
        assert (tis["resolve_release"]["pool"], tis["resolve_release"]["queue"]) == ("default_pool", "default")
    # manual: 3 (rocm710); 11-02: 3 (rocm723); 11-03: 2 + 2.
    assert len(builds) == 10
    builds.sort(key=lambda b: b["start_date"])
    for first, second in zip(builds, builds[1:], strict=False):
        assert first["end_date"] <= second["start_date"], f"{first['task']} and {second['task']} overlapped"
    # On 11-03 both variants' builds were ready together: one stayed `scheduled` (ready) while the other
    # held the single slot, and was queued only once that build had ended.
    waited = [(a["task"], b["task"]) for a in builds for b in builds
              if a is not b and b["scheduled_when"] < a["end_date"] <= b["queued_when"]]
    assert waited, "no build ever waited for the pool's slot"
    pool = world.get(f"/pools/{POOL}")
    assert pool["slots"] == 1 and pool["running_slots"] == 0 and pool["queued_slots"] == 0


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _utc(stamp: str) -> str:
    """An API timestamp, normalised: ISO 8601 in UTC with an explicit offset."""
    return _when(stamp).astimezone(UTC).isoformat()
