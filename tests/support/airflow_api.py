"""A running Airflow driven through its public REST API (``/api/v2``), as a user's script drives it.

``AirflowApi`` logs in (``POST /auth/token`` with the SimpleAuthManager's user and password) and reads
and triggers DAG runs; ``wait_for`` polls a condition with a deadline, failing at once when a
``alive`` check says the services died. Used by tests/e2e/test_scheduler.py (LocalExecutor) and
tests/cluster/ (CeleryExecutor).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
RUN_TIMEOUT = 300


def wait_for(what: str, check: Callable[[], T | None], timeout: float, *, alive: Callable[[], None],
             interval: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds or if ``alive`` raises."""
    deadline = time.monotonic() + timeout
    while True:
        alive()
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class AirflowApi:
    """One DAG's runs, task instances, XComs and logs through the REST API of ``base_url``."""

    def __init__(self, base_url: str, dag_id: str) -> None:
        self.base_url = base_url
        self.dag_id = dag_id
        self.http: httpx.Client | None = None

    def login(self, user: str, password: str) -> None:
        token = httpx.post(f"{self.base_url}/auth/token", json={"username": user, "password": password}, timeout=30)
        assert token.status_code == 201, token.text
        self.http = httpx.Client(base_url=f"{self.base_url}/api/v2", timeout=60,
                                 headers={"Authorization": f"Bearer {token.json()['access_token']}"})

    def close(self) -> None:
        if self.http is not None:
            self.http.close()

    def alive(self) -> None:
        """Raise if the services died (the default: nothing to watch)."""

    def failure_hint(self) -> str:
        """A line added to a failed run's message (e.g. a known Airflow bug seen in a log)."""
        return ""

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        assert self.http is not None, "not logged in"
        return self.http.request(method, path, **kwargs)

    def get(self, path: str, **params: Any) -> Any:
        answer = self.api("GET", path, params=params)
        assert answer.status_code == 200, f"GET {path}: {answer.status_code} {answer.text}"
        return answer.json()

    def send(self, method: str, path: str, body: dict[str, Any], expect: int = 200) -> Any:
        answer = self.api(method, path, json=body)
        assert answer.status_code == expect, f"{method} {path} {body}: {answer.status_code} {answer.text}"
        return answer.json()

    def trigger(self, conf: dict[str, Any]) -> str:
        """A manual run, as the trigger form makes one (``logical_date`` null, the Params in ``conf``); its id."""
        run = self.send("POST", f"/dags/{self.dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        run_id: str = run["dag_run_id"]
        return run_id

    def run(self, run_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.get(f"/dags/{self.dag_id}/dagRuns/{run_id}")
        return found

    def task_instances(self, run_id: str) -> dict[str, dict[str, Any]]:
        """task_id → task instance of one run."""
        found = self.get(f"/dags/{self.dag_id}/dagRuns/{run_id}/taskInstances", limit=100)
        return {ti["task_id"]: ti for ti in found["task_instances"]}

    def tries(self, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every try of one task instance, oldest first (hostname, queue, state, start and end of each)."""
        found = self.get(f"/dags/{self.dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries")
        tries: list[dict[str, Any]] = sorted(found["task_instances"], key=lambda t: t["try_number"])
        return tries

    def xcom(self, run_id: str, task_id: str, key: str = "return_value") -> Any:
        value = self.get(f"/dags/{self.dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")["value"]
        return json.loads(value) if isinstance(value, str) and value[:1] in "{[\"" else value

    def log(self, run_id: str, task_id: str, try_number: int = 1) -> str:
        answer = self.api("GET", f"/dags/{self.dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                          params={"full_content": True}, headers={"Accept": "application/json"})
        assert answer.status_code == 200, answer.text
        return json.dumps(answer.json()["content"])

    def finished(self, run_id: str, timeout: float = RUN_TIMEOUT, *, expect: str = "success") -> dict[str, Any]:
        """Poll the run until it is success or failed; unless it ended ``expect``, say which tasks failed and why."""
        run = wait_for(f"run {run_id} to finish",
                       lambda: (r if (r := self.run(run_id))["state"] in ("success", "failed") else None),
                       timeout, alive=self.alive, interval=1)
        if run["state"] != expect:
            states = {t: ti["state"] for t, ti in self.task_instances(run_id).items()}
            logs = "\n".join(f"--- {t}\n{self.log(run_id, t)[-3000:]}" for t, s in states.items() if s == "failed")
            raise AssertionError(f"run {run_id} {run['state']}; task states: {states}{self.failure_hint()}\n{logs}")
        return run
