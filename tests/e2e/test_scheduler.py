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
   `success` with the store's definitive answer in the same try. The repair
   waits for the config's alerts deadline (1 minute after the run was queued):
   Airflow's DeadlineAlert fires (the scheduler), the triggerer runs the SMTP
   notifier, and the LATE mail reaches a real SMTP server (aiosmtpd) while the
   run still runs. The finished run carries the release summary as its note;
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

The services and the world are tests/support/airflow_world.py's (shared with
tests/browser/, which drives the same DAG through the web UI); there the
scheduler runs with `[scheduler] use_job_schedule = False` (see its docstring).

The three steps are module-scoped fixtures (`manual_run`, then `backfill`), each done once, when a
test first asks for it, so that every test can also run alone: the backfill test gets the manual run
first, the pool test both.

Wall time, 2 cores, services up: 199 s in all with the gate and the deadline wait (startup 18 s; the
manual run 104 s, of which about 60 s are the held run waiting for its deadline; backfill 72 s;
teardown 4 s); 106-147 s over 7 runs before the gate and the alerts.
The module prints these as `timings:` lines at teardown (`pytest -s`)
and writes them to timings.txt in its tmp folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from rocm_release.core.plan import wheels_prefix
from tests.support.airflow_api import RUN_TIMEOUT, wait_for
from tests.support.airflow_world import BACKFILL, DAG_ID, OTHER, POOL, VARIANT, World, running_world
from tests.support.demo import local_path
from tests.support.smtp import Inbox, smtp_server

pytestmark = pytest.mark.e2e

QUEUE = "rocm"
SENSORS = ("check_base_image", "check_wheels_image", "check_release_image", "check_wheels_published")
BUILDS = ("build_base_image", "build_wheels", "build_release_image")
TIMINGS: dict[str, float | int] = {}


DEADLINE_MINUTES = 1  # the alerts' deadline: the manual run is held (its sensor blocked) until it has passed
LATE = "[rocm-nightly] LATE:"


@pytest.fixture(scope="module")
def mail() -> Iterator[tuple[int, Inbox]]:
    """A real SMTP server on 127.0.0.1 for the alerts (aiosmtpd)."""
    with smtp_server() as server:
        yield server


@pytest.fixture(scope="module")
def world(services: dict[str, Any], mail: tuple[int, Inbox],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    port, _ = mail
    alerts = {"alerts": {"email": {"smtp_conn_id": "smtp_e2e", "to": ["release-eng@example.test"],
                                   "from_email": "rocm-nightly@example.test"},
                         "deadline_minutes": DEADLINE_MINUTES}}
    smtp = {"AIRFLOW_CONN_SMTP_E2E": json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": {
        "disable_tls": True, "disable_ssl": True, "timeout": 10, "retry_limit": 1}})}
    with running_world(tmp_path_factory.mktemp("e2e-scheduler"), "e2e-sched", TIMINGS, config=alerts,
                       extra_env=smtp) as w:
        yield w


@dataclass(frozen=True)
class ManualRun:
    """The manual run's id and the RELEASE.json it wrote (a later backfill of the commit rewrites it)."""

    run_id: str
    report: dict[str, Any]


@pytest.fixture(scope="module")
def manual_run(world: World, mail: tuple[int, Inbox]) -> ManualRun:
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
    # Held until past its deadline: Airflow's DeadlineAlert (the scheduler sees it missed, the triggerer runs
    # the SMTP notifier) sends the LATE mail while the run still runs.
    _, inbox = mail
    wait_for("the deadline's LATE mail", lambda: [m for m in inbox.messages if str(m["Subject"]).startswith(LATE)],
             DEADLINE_MINUTES * 60 + 120, alive=world.alive, interval=1)
    assert world.run(run_id)["state"] == "running"
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
