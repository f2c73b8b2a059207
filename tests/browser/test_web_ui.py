"""The Airflow web UI in a real browser: Playwright driving Debian's chromium, headless.

The api-server, scheduler, dag-processor and triggerer run as in tests/e2e/test_scheduler.py
(tests/support/airflow_world.py: LocalExecutor, SQLite, a config, registries, wheel store, git
history and Airflow home of this module's own; the DAG unpaused, no scheduled runs). Playwright
launches `/usr/bin/chromium` (`executable_path`: no browser is downloaded; `make test` installs the
Debian package through `make services-up`), and everything below is done as a user does it:

1. sign in with the SimpleAuthManager's user and generated password (the login form);
2. open `rocm_nightly_release` and trigger it through the trigger FORM: a commit of the test's git
   history (`initial`), one variant chosen in the Variants multi-select (rocm723 removed), `Dry run`
   switched on; the run succeeds and resolve_release's log, shown in the UI, holds the plan
   ("DRY RUN"), and nothing is published;
3. a malformed commit (`not a commit!`) is refused by the form's Trigger with the rule in words
   (core/names.py COMMITISH_RULE), and no run is created;
4. the trigger dialog's Backfill mode creates a backfill of 2026-11-02 and 2026-11-03 (02:00 UTC, the
   demo history's nights), whose two runs publish both commits WITHOUT moving `nightly`: the public
   `nightly-<variant>` tags and the `nightly/<variant>/` wheel indexes are what they were before
   (`initial`, put there by a promoting manual run through the API first; the backfill's second night
   releases the newer `source_change`, where a promoting run would move `nightly`).

Run states, XComs and logs are also read through the REST API (``World``), which is how the tests
wait: every wait polls a condition with a deadline (Playwright's auto-waiting ``expect`` in the page,
``wait_for`` on the API), never a fixed sleep.

Screenshots (PNG) of the trigger form, the refused commit, the plan in the log, the backfill dialog
and the grid after the nights are written to ``.state/test-artifacts/browser/`` (ignored by git), and
``failed-<test>.png`` of what the page showed when a test failed.

Wall time, 2 cores shared with another test run, services up, 5 passing module runs: 115-196 s (startup
until the DAG is listed 22-36 s; the dry run from the form 15-24 s; the backfill 45-81 s; teardown
4-11 s). The module prints these as `timings:` lines at teardown (`pytest -s`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, StorageState, ViewportSize, expect, sync_playwright

from rocm_release.core.names import COMMITISH_RULE
from tests.support.airflow_api import RUN_TIMEOUT, wait_for
from tests.support.airflow_world import BACKFILL, DAG_ID, OTHER, VARIANT, World, running_world
from tests.support.services import STATE

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = STATE / "test-artifacts" / "browser"
VIEWPORT: ViewportSize = {"width": 1400, "height": 1000}
# Playwright's auto-wait for an element, a URL or an expectation (the UI answers in well under a second).
UI_TIMEOUT_MS = 30_000
TIMINGS: dict[str, float | int] = {}
expect.set_options(timeout=UI_TIMEOUT_MS)


@pytest.fixture(scope="module")
def world(services: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("browser"), "browser", TIMINGS) as w:
        yield w


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless, through Playwright (never a browser Playwright downloads)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (Debian package chromium, through "
                    "`make services-up`); or `apt-get install chromium`", pytrace=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield found
        finally:
            found.close()


@pytest.fixture(scope="module")
def signed_in(world: World, browser: Browser) -> StorageState:
    """Sign in through the login form once; the session (cookies) every test's page starts from."""
    context = browser.new_context(viewport=VIEWPORT, timezone_id="UTC", locale="en-US")
    try:
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.goto(world.base_url)
        expect(page).to_have_url(re.compile(r"/auth/login"))  # not signed in: sent to the login form
        page.get_by_label("Username").fill(world.user)
        page.get_by_label("Password").fill(world.password)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{world.base_url}/")
        expect(page.get_by_role("heading", name="Health")).to_be_visible()
        return context.storage_state()
    finally:
        context.close()


@pytest.fixture
def page(browser: Browser, signed_in: StorageState, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh tab of a signed-in session, in UTC (the UI's date fields), English; when the test fails,
    what it showed is kept as ``failed-<test>.png``."""
    context = browser.new_context(viewport=VIEWPORT, timezone_id="UTC", locale="en-US",
                                  storage_state=signed_in)
    tab = context.new_page()
    tab.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield tab
        if getattr(request.node, "rep_call", None) and request.node.rep_call.failed:
            shot(tab, f"failed-{request.node.name}")
    finally:
        context.close()


def shot(target: Page | Locator, name: str) -> Path:
    """A PNG of the page or of one element, kept as a test artifact."""
    path = ARTIFACTS / f"{name}.png"
    target.screenshot(path=path)
    return path


def open_trigger_dialog(world: World, page: Page) -> Locator:
    page.goto(f"{world.base_url}/dags/{DAG_ID}")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading", name=f"Trigger Dag - {DAG_ID}")).to_be_visible()
    return dialog


def field(dialog: Locator, label: str) -> Locator:
    """One field's row of the form: the group holding its label (a required one's ends with " *")."""
    label_text = dialog.page.get_by_text(re.compile(rf"^\s*{re.escape(label)}\s*\*?\s*$"))
    return dialog.get_by_role("group").filter(has=label_text)


def fill_single_run_form(dialog: Locator, commit: str) -> None:
    """Commit typed in, rocm723 removed from the Variants multi-select, Dry run switched on."""
    field(dialog, "Commit").get_by_role("textbox").fill(commit)
    dialog.get_by_label(f"Remove {OTHER}").click()
    variants = field(dialog, "Variants")
    expect(variants.get_by_label(f"Remove {VARIANT}")).to_be_visible()
    expect(variants.get_by_label(f"Remove {OTHER}")).to_have_count(0)
    dry_run = dialog.get_by_role("checkbox", name="Dry run")
    dry_run.press("Space")  # a switch: its checkbox is visually hidden; the keyboard toggles it as a user's would
    expect(dry_run).to_be_checked()
    expect(dialog.get_by_role("checkbox", name="Promote to nightly")).not_to_be_checked()


def run_ids(world: World) -> set[str]:
    runs = world.get(f"/dags/{DAG_ID}/dagRuns")["dag_runs"]
    return {r["dag_run_id"] for r in runs}


def test_sign_in_shows_the_dag(world: World, page: Page) -> None:
    page.goto(f"{world.base_url}/dags")
    expect(page.get_by_role("link", name=DAG_ID).first).to_be_visible()
    page.get_by_role("link", name=DAG_ID).first.click()
    expect(page).to_have_url(f"{world.base_url}/dags/{DAG_ID}")
    for group in ("resolve_release", VARIANT, OTHER, "release_summary"):
        expect(page.get_by_text(group, exact=True).first).to_be_visible()


def test_the_trigger_form_runs_a_dry_run_of_one_commit_and_one_variant(world: World, page: Page) -> None:
    initial = world.commits["initial"]
    dialog = open_trigger_dialog(world, page)
    fill_single_run_form(dialog, initial)
    shot(page, "trigger-form")
    started = time.monotonic()
    dialog.get_by_role("button", name="Trigger").click()
    # The UI opens the new run's page: /dags/<dag>/runs/<run id>.
    expect(page).to_have_url(re.compile(rf"/dags/{DAG_ID}/runs/manual__"))
    run_id = page.url.split("/runs/", 1)[1].strip("/")
    run = world.finished(run_id)
    TIMINGS["dry run from the form"] = time.monotonic() - started
    assert run["run_type"] == "manual" and run["triggered_by"] == "ui"
    assert run["conf"] == {"commit": initial, "variants": [VARIANT], "force_rebuild": False, "promote": False,
                           "dry_run": True, "skip_tests": False}

    plan = world.xcom(run_id, "resolve_release")
    assert (plan["commit"], plan["run_kind"], plan["dry_run"], plan["promote"]) == (initial, "manual", True, False)
    assert [v["variant"]["name"] for v in plan["variants"]] == [VARIANT]
    assert "DRY RUN: the plan follows" in world.log(run_id, "resolve_release")
    tis = world.task_instances(run_id)
    assert {t: ti["state"] for t, ti in tis.items() if t.startswith(f"{OTHER}.")} == \
        {t: "skipped" for t in tis if t.startswith(f"{OTHER}.")}
    # A dry run builds, pushes and uploads nothing.
    assert not world.published(initial, VARIANT)
    assert world.nightly_digest(VARIANT) is None and world.nightly_index(VARIANT) is None

    # The plan, in the task's log as the UI shows it.
    page.goto(f"{world.base_url}/dags/{DAG_ID}/runs/{run_id}/tasks/resolve_release")
    line = page.get_by_text("DRY RUN: the plan follows")
    expect(line).to_have_count(1)
    line.evaluate("line => line.scrollIntoView({block: 'start'})")  # the plan's first line at the top
    expect(line).to_be_visible()
    expect(page.get_by_text(f'"commit": "{initial}"').first).to_be_attached()
    shot(page, "dry-run-log")


def test_a_malformed_commit_is_refused_in_words(world: World, page: Page) -> None:
    before = run_ids(world)
    dialog = open_trigger_dialog(world, page)
    fill_single_run_form(dialog, "not a commit!")
    dialog.get_by_role("button", name="Trigger").click()
    refusal = dialog.get_by_text("Invalid input for param commit")
    expect(refusal).to_be_visible()
    shown = refusal.inner_text()
    assert "'not a commit!' does not match" in shown, shown
    # jsonschema pretty-prints the sub-schema, cutting the rule into quoted pieces: join them again.
    assert f"must be {COMMITISH_RULE}" in re.sub(r"""['"]\s+['"]""", "", shown), shown
    expect(page).to_have_url(f"{world.base_url}/dags/{DAG_ID}")  # still on the form, no run page
    refusal.scroll_into_view_if_needed()
    shot(page, "malformed-commit")
    assert run_ids(world) == before  # the API refused it: no run was created


def pick_date(dialog: Locator, which: str, day: str) -> None:
    """The backfill dialog's From/To: a popover with a date (YYYY/MM/DD) and a time (HH:mm) field, in UTC."""
    page = dialog.page
    field(dialog, which).get_by_test_id("datetime-input").click()
    popover = page.get_by_role("dialog").filter(has=page.get_by_role("textbox", name="HH:mm"))
    expect(popover.get_by_text("UTC")).to_be_visible()
    popover.get_by_role("textbox", name=which).fill(day)
    popover.get_by_role("textbox", name="HH:mm").fill("02:00")
    page.keyboard.press("Escape")  # closes the popover, not the dialog
    expect(popover).to_have_count(0)


def test_a_backfill_from_the_dialog_publishes_both_nights_and_never_moves_nightly(world: World, page: Page) -> None:
    # First `nightly` must exist to be moved: a promoting manual run of `initial` (through the API; the form is
    # the test above). The backfill's second night releases `source_change`, newer on the branch: a run that
    # promoted would move `nightly` there.
    initial = world.commits["initial"]
    promoted = world.send("POST", f"/dags/{DAG_ID}/dagRuns",
                          {"logical_date": None, "conf": {"commit": initial, "promote": True, "variants": [VARIANT]}})
    world.finished(promoted["dag_run_id"])
    assert world.nightly_commit(VARIANT) == initial
    before = {v: (world.nightly_digest(v), world.nightly_index(v)) for v in (VARIANT, OTHER)}
    assert before[VARIANT][0] is not None and before[VARIANT][1] is not None
    dialog = open_trigger_dialog(world, page)
    # The radio card's input is visually hidden (a forced check() of it was once refused as "outside of the
    # viewport" while the dialog settled): click the card's visible text, as a user does, then check the state.
    dialog.get_by_text("Run this Dag for a range of dates").click()
    expect(dialog.get_by_role("radio", name="Backfill")).to_be_checked()
    expect(dialog.get_by_role("heading", name=f"Run Backfill - {DAG_ID}")).to_be_visible()
    pick_date(dialog, "From", "2026/11/02")
    pick_date(dialog, "To", "2026/11/03")
    expect(field(dialog, "From")).to_contain_text("Nov 02, 2026 02:00")
    expect(field(dialog, "To")).to_contain_text("Nov 03, 2026 02:00")
    expect(dialog.get_by_text("2 runs will be triggered.")).to_be_visible()  # the dialog's own dry run
    expect(dialog.get_by_role("checkbox", name="Promote to nightly")).not_to_be_checked()
    shot(page, "backfill-dialog")
    started = time.monotonic()
    create_backfill(world, dialog)
    banner = page.get_by_text("Backfill in progress")
    expect(banner).to_be_visible()

    wait_for("both backfill runs to finish", lambda: len(found := backfill_runs(world)) == len(BACKFILL) and all(
        r["state"] in ("success", "failed") for r in found), 2 * RUN_TIMEOUT, alive=world.alive, interval=1)
    TIMINGS["backfill (2 nights, 2 variants)"] = time.monotonic() - started
    by_date = {r["logical_date"].replace("Z", "+00:00"): r for r in backfill_runs(world)}
    assert set(by_date) == set(BACKFILL)
    for date, label in BACKFILL.items():
        run = world.finished(by_date[date]["dag_run_id"])
        commit = world.commits[label]
        plan = world.xcom(run["dag_run_id"], "resolve_release")
        assert (plan["commit"], plan["run_kind"], plan["promote"]) == (commit, "backfill", False), date
        tis = world.task_instances(run["dag_run_id"])
        for variant in (VARIANT, OTHER):
            assert world.published(commit, variant), (date, variant)
            assert tis[f"{variant}.promote_nightly"]["state"] == "skipped"
            assert world.release_report(commit)["variants"][variant]["promotion"] == \
                {"promoted": False, "why": "backfills never promote"}
    # `nightly` did not move: the public tags and the nightly wheel indexes are what they were.
    assert {v: (world.nightly_digest(v), world.nightly_index(v)) for v in (VARIANT, OTHER)} == before
    assert world.nightly_commit(VARIANT) == initial

    # The grid after the nights: the banner is gone once the backfill is complete.
    wait_for("the backfill to be marked complete", lambda: all(
        b["completed_at"] for b in world.get("/backfills", dag_id=DAG_ID)["backfills"]), 60, alive=world.alive)
    page.goto(f"{world.base_url}/dags/{DAG_ID}")
    expect(page.get_by_text("Backfill in progress")).to_have_count(0)
    expect(page.get_by_role("link", name="resolve_release", exact=True)).to_be_visible()  # the grid is drawn
    expand = page.get_by_role("button", name="Expand all task groups")
    if expand.is_enabled():  # disabled when every group is open already
        expand.click()
    expect(page.get_by_role("link", name="promote_nightly", exact=True)).to_have_count(2)  # one per variant
    for date in BACKFILL:  # a column per night, each with a cell per task
        cell = page.locator(f'a[href$="/runs/{by_date[date]["dag_run_id"]}/tasks/{VARIANT}.promote_nightly"]')
        expect(cell).to_have_count(1)
    page.mouse.move(0, 0)  # no hover tooltip in the picture
    shot(page, "grid-after-backfill")


def backfill_runs(world: World) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = world.get(f"/dags/{DAG_ID}/dagRuns", run_type=["backfill"])["dag_runs"]
    return found


def create_backfill(world: World, dialog: Locator) -> None:
    """Press Run Backfill; again while the API answers 503 "Database is locked" (SQLite under concurrent
    writers: the api-server removes what it wrote and refuses, see ``World.create_backfill``), as a user
    would. The answer to the UI's own POST /api/v2/backfills says which it was."""
    statuses = []
    for _ in range(5):
        with dialog.page.expect_response(lambda r: r.request.method == "POST" and
                                         r.url.endswith("/api/v2/backfills")) as answer:
            dialog.get_by_role("button", name="Run Backfill").click()
        response = answer.value
        statuses.append(response.status)
        if response.status != 503 or "Database is locked" not in response.text():
            assert response.status == 200, f"POST /api/v2/backfills: {response.status} {response.text()}"
            TIMINGS["backfill creation attempts (SQLite 503s + 1)"] = len(statuses)
            return
        left = [b for b in world.get("/backfills", dag_id=DAG_ID)["backfills"] if not b["completed_at"]]
        assert not left, f"a refused backfill creation left an active backfill behind: {left}"
    raise AssertionError(f"the api-server refused the backfill {len(statuses)} times (Database is locked)")
