"""The `rocm_nightly_release` DAG under Airflow's own services, in a world of a test module's own.

What `airflow standalone` runs — `airflow db migrate`, then the scheduler (LocalExecutor, SQLite), the
dag-processor, the api-server and the triggerer — runs on 127.0.0.1 with a config, registries, wheel
store, git history and Airflow home of the world's own (``World``). The parts are started one by one
rather than through `standalone`, whose scheduler and triggerer also serve task logs on every interface
(see COMPONENTS). ``running_world`` starts one, unpaused, and stops every process it started afterwards.
Used by tests/e2e/test_scheduler.py (the REST API) and tests/browser/ (the web UI in a real browser).

The scheduler runs with `[scheduler] use_job_schedule = False`: the wall clock is weeks after the demo
history (2026-11-01..04), and with `catchup=False` unpausing the DAG would otherwise start the latest
scheduled night at once (today 02:00, the tip `source_change_2`, on a new base) and move `nightly`
before a test can observe anything. Manual runs and backfills do not depend on that switch.
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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from rocm_release.adapters.config_file import load_config
from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.core.plan import LABEL_COMMIT, nightly_wheels_prefix, public_tag, wheels_prefix
from tests.support.airflow_api import AirflowApi, wait_for
from tests.support.demo import (
    airflow_env,
    demo_config,
    import_pools_and_connections,
    local_path,
    make_history,
    write_config,
)
from tests.support.net import free_port

BIN = Path(sys.executable).parent
DAG_ID = "rocm_nightly_release"
VARIANT = "rocm710"  # a manual run selects only this one, as a user would in the trigger form
OTHER = "rocm723"  # configured too (demo.yaml has both)
POOL = "rocm_builders"
# The demo history's nights a backfill covers (the DAG's cron is "0 2 * * *") and the commit that was the tip at each.
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
    """A config, registries, store, git history and Airflow home of a test module's own, and the Airflow
    services running on them (``start``/``stop``); ``timings`` collects how long each step took."""

    def __init__(self, root: Path, repository_prefix: str, timings: dict[str, float | int] | None = None, *,
                 config: dict[str, Any] | None = None, extra_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.timings: dict[str, float | int] = {} if timings is None else timings
        demo = demo_config(root, f"{repository_prefix}-{uuid.uuid4().hex[:8]}")
        assert [v["name"] for v in demo["variants"]] == [VARIANT, OTHER]
        demo["sensors"]["poke_interval"] = SENSOR_POKE_INTERVAL
        demo["sensors"]["max_wait"] = SENSOR_MAX_WAIT
        demo.update(config or {})  # e.g. alerts
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
            **(extra_env or {}),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.user = ""
        self.password = ""

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
        self.user, self.password = next(iter(json.loads(passwords.read_text()).items()))
        self.login(self.user, self.password)
        wait_for(f"the dag-processor to serialize {DAG_ID}", self._dag_parsed, STARTUP_TIMEOUT, alive=self.alive)
        self.timings["startup (db migrate until DAG listed)"] = time.monotonic() - started
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
        self.timings["backfill creation attempts (SQLite 503s + 1)"] = len(attempts)
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


@contextmanager
def running_world(root: Path, repository_prefix: str, timings: dict[str, float | int], *,
                  config: dict[str, Any] | None = None,
                  extra_env: dict[str, str] | None = None) -> Iterator[World]:
    """A started ``World`` in ``root`` with the DAG unpaused; at exit every process it started is stopped
    and ``timings`` (plus teardown and module wall time) printed as `timings:` lines and written to
    ``root/timings.txt``."""
    began = time.monotonic()
    w = World(root, repository_prefix, timings, config=config, extra_env=extra_env)
    try:
        w.start()
        assert w.get(f"/pools/{POOL}")["slots"] == 1  # imported from include/airflow/pools.json
        assert w.send("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})["is_paused"] is False
        yield w
    finally:
        stopping = time.monotonic()
        w.stop()
        timings["teardown (stop every process)"] = time.monotonic() - stopping
        timings["module wall time"] = time.monotonic() - began
        lines = [f"timings: {what}: {value:.1f} s" if isinstance(value, float) else f"timings: {what}: {value}"
                 for what, value in timings.items()]
        (root / "timings.txt").write_text("\n".join(lines) + "\n")
        print("\n" + "\n".join(lines))
