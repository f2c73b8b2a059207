"""What a night's alert says and when one goes out (core.alerts), and the alerts config.

The e-mails themselves go through a real SMTP server in tests/e2e/test_gate_and_alerts.py.
"""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from rocm_release.core.alerts import alert_kind, compose, failed_tasks, triage_for, triage_lines
from rocm_release.core.config import ConfigError, parse_config

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "include" / "config" / "demo.yaml"


def _doc_md() -> str:
    """The DAG's own doc (its module docstring), without importing the DAG file (which reads the config)."""
    source = (REPO / "dags" / "rocm_nightly_release.py").read_text()
    return source.split('"""', 2)[1]


@pytest.mark.parametrize(("failed", "previous", "kind"), [
    (True, None, "failed"), (True, "failed", "failed"), (True, "ok", "failed"),
    (False, "failed", "recovered"), (False, "ok", None), (False, None, None),
])
def test_a_failed_night_always_alerts_a_good_one_only_after_a_failure(failed: bool, previous: str | None,
                                                                         kind: str | None) -> None:
    assert alert_kind(night_failed=failed, previous=previous) == kind


def test_only_the_failed_tasks_are_causes() -> None:
    states = {"a.test_wheels": "failed", "a.push_images": "upstream_failed", "resolve_release": "success",
              "notify_outcome": "failed", "b.build_wheels": "failed"}
    assert failed_tasks(states, ignore="notify_outcome") == ["a.test_wheels", "b.build_wheels"]


def test_the_summary_is_named_only_when_nothing_else_failed() -> None:
    states = {"a.test_release_image": "failed", "release_summary": "failed", "a.push_images": "upstream_failed"}
    assert failed_tasks(states, consequence="release_summary") == ["a.test_release_image"]
    assert failed_tasks({"release_summary": "failed"}, consequence="release_summary") == ["release_summary"]


@pytest.mark.parametrize(("task", "start"), [
    ("rocm710.test_release_image", "`test_release_image` or `test_wheels` failed"),
    ("rocm710.test_wheels", "`test_release_image` or `test_wheels` failed"),
    ("rocm710.check_base_image", "A `check_*` sensor failed at once"),
    ("rocm710.publish_wheels", "`publish_wheels` failed"),
    ("rocm710.promote_nightly", "`promote_nightly` failed"),
])
def test_every_failing_task_finds_its_line_of_the_dags_triage_note(task: str, start: str) -> None:
    doc = _doc_md()
    assert len(triage_lines(doc)) >= 6
    assert triage_for(task, doc).startswith(start)


def test_the_failure_mail_names_task_commit_log_and_triage_and_escapes_what_it_quotes() -> None:
    doc = "**Where to look when it fails.**\n- `build_wheels` failed: <clear it>\n\n**Next.**\n"
    subject, body = compose("failed", dag_id="d", run_id="manual__<x>", commit="ab" * 20, failed=["v.build_wheels"],
                            log_urls={"v.build_wheels": "http://ui/dags/d/runs/r/tasks/v.build_wheels"}, doc_md=doc,
                            run_url="http://ui/dags/d/runs/r")
    assert subject == f"[rocm-nightly] FAILED: d manual__<x>: v.build_wheels (commit {'ab' * 6})"
    assert "ab" * 20 in body and 'href="http://ui/dags/d/runs/r/tasks/v.build_wheels"' in body
    assert "Triage: `build_wheels` failed: &lt;clear it&gt;" in body and "manual__&lt;x&gt;" in body


def test_a_night_that_failed_before_resolving_says_so() -> None:
    subject, body = compose("failed", dag_id="d", run_id="r", commit=None, failed=["resolve_release"], log_urls={},
                            doc_md="", run_url="http://ui/r")
    assert "commit unresolved" in subject and "resolve_release did not finish" in body


def _alerts(section: str) -> str:
    return DEMO.read_text() + textwrap.dedent(section)


@pytest.mark.parametrize(("section", "named"), [
    ("alerts: {}\n", "alerts needs a destination"),
    ("alerts:\n  email: {smtp_conn_id: s, to: []}\n", "alerts.email.to"),
    ("alerts:\n  email: {smtp_conn_id: s, to: [a@b.c]}\n", "alerts.email.from_email"),
    ("alerts:\n  email: {smtp_conn_id: s, to: ['not an address'], from_email: f@b.c}\n", "alerts.email.to.0"),
    ("alerts:\n  email: {smtp_conn_id: 's; rm', to: [a@b.c], from_email: f@b.c}\n", "alerts.email.smtp_conn_id"),
    ("alerts:\n  email: {smtp_conn_id: s, to: [a@b.c], from_email: f@b.c}\n  deadline_minutes: 0\n",
     "alerts.deadline_minutes"),
])
def test_a_bad_alerts_section_is_refused_naming_the_field(section: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse_config(_alerts(section), "demo.yaml", repo_root="/r")


def test_slack_is_a_config_alternative() -> None:
    config = parse_config(_alerts("alerts:\n  slack: {slack_conn_id: slack_api_default, channel: '#releases'}\n"),
                          "x", repo_root="/r")
    assert config.alerts is not None and config.alerts.slack is not None and config.alerts.email is None


def test_the_deadline_is_airflows_deadline_alert_with_the_smtp_notifier() -> None:
    from rocm_release.tasks.alerts import deadline_alert

    config = parse_config(_alerts("alerts:\n  email: {smtp_conn_id: smtp_default, to: [a@b.c], from_email: f@b.c}\n"
                                  "  deadline_minutes: 480\n"), "x", repo_root="/r")
    alert = deadline_alert(config)
    assert alert.interval == timedelta(minutes=480)
    assert type(alert.reference).__name__ == "DagRunQueuedAtDeadline"
    assert alert.callback.path == "airflow.providers.smtp.notifications.smtp.SmtpNotifier"
    assert alert.callback.kwargs["to"] == ["a@b.c"] and alert.callback.kwargs["smtp_conn_id"] == "smtp_default"
    assert deadline_alert(parse_config(DEMO.read_text(), "demo", repo_root="/r")) is None
