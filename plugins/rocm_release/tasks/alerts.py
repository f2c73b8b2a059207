"""Alerts of ``rocm_nightly_release``: a failed night, the first good night after one, a night past its deadline.

``notify_outcome`` is the DAG's last task, a **teardown** after ``release_summary`` (trigger rule: all done), so
it runs whatever happened and its own state never decides the run's. It reads the run's task states and the plan
through the Task SDK (a task has what a DAG-level callback under ``airflow dags test`` has not: the execution API),
decides with ``core.alerts`` and sends through the providers' notifiers (``SmtpNotifier``; ``SlackNotifier`` when
configured). The last outcome is an Airflow Variable, so "recovered" is sent once. A dry run never alerts.

The deadline (``alerts.deadline_minutes`` after the run was queued) is Airflow's own ``DeadlineAlert``; its
callback is the same notifier, run by the triggerer.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from rocm_release.core.task_ids import NIGHTLY_DAG_ID, NOTIFY_OUTCOME, RELEASE_SUMMARY, RESOLVE_RELEASE
from rocm_release.tasks.policy import fail_fast

if TYPE_CHECKING:
    from rocm_release.core.config import Alerts, ReleaseConfig

LAST_OUTCOME_VARIABLE = "rocm_nightly_release.last_outcome"


def _notifiers(alerts: Alerts, subject: str, body: str) -> list[Any]:
    """The providers' notifiers for the configured destinations."""
    notifiers: list[Any] = []
    if alerts.email is not None:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        notifiers.append(SmtpNotifier(to=list(alerts.email.to), from_email=alerts.email.from_email, subject=subject,
                                      html_content=body, smtp_conn_id=alerts.email.smtp_conn_id))
    if alerts.slack is not None:
        try:
            from airflow.providers.slack.notifications.slack import SlackNotifier
        except ImportError as exc:  # an optional provider: the config names it, the deployment must install it
            from rocm_release.core.config import ConfigError

            raise ConfigError("alerts.slack needs apache-airflow-providers-slack installed on the workers") from exc
        notifiers.append(SlackNotifier(slack_conn_id=alerts.slack.slack_conn_id, channel=alerts.slack.channel,
                                       text=f"{subject}\n{body}"))
    return notifiers


class NotifyOutcomeOperator(BaseOperator):
    """Tell the configured people when a night failed, and once when it recovered."""

    ui_color = "#f5eef8"

    def __init__(self, *, config: ReleaseConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Used only when resolve_release failed (no plan to read plan.config from): who to tell.
        self.alerts = config.alerts

    @fail_fast
    def execute(self, context: Any) -> dict[str, Any]:
        """Decide from the run's task states; send; remember the outcome."""
        from airflow.sdk import Variable

        from rocm_release.core.alerts import alert_kind, compose, failed_tasks
        from rocm_release.core.plan import ReleasePlan
        from rocm_release.tasks.context import raw_params

        ti, dag = context["ti"], context["dag"]
        raw_plan = ti.xcom_pull(task_ids=RESOLVE_RELEASE)
        plan = ReleasePlan.model_validate(raw_plan) if raw_plan else None
        if plan.dry_run if plan else bool(raw_params(context).get("dry_run")):
            raise AirflowSkipException("dry run: nothing alerts")
        alerts = plan.config.alerts if plan else self.alerts
        if alerts is None:
            raise AirflowSkipException("no alerts in the config: nobody is told")
        run_id = str(context["run_id"])
        states = ti.get_task_states(dag_id=dag.dag_id, run_ids=[run_id]).get(run_id, {})
        failed = failed_tasks(states, ignore=self.task_id, consequence=RELEASE_SUMMARY)
        previous = Variable.get(LAST_OUTCOME_VARIABLE, default=None)
        kind = alert_kind(night_failed=bool(failed), previous=previous)
        self.log.info("night %s: failed tasks %s; the previous night %s; alert: %s", run_id, failed or "none",
                      previous or "unknown", kind or "none")
        if kind is not None:
            run_url = ti.log_url.split("/tasks/", 1)[0]
            subject, body = compose(kind, dag_id=dag.dag_id, run_id=run_id, commit=plan.commit if plan else None,
                                    failed=failed, log_urls={t: f"{run_url}/tasks/{t}" for t in failed},
                                    doc_md=dag.doc_md or "", run_url=run_url)
            for notifier in _notifiers(alerts, subject, body):
                notifier.notify(context)
            self.log.info("sent: %s", subject)
        Variable.set(LAST_OUTCOME_VARIABLE, "failed" if failed else "ok")
        return {"alert": kind, "failed": failed}


def deadline_alert(config: ReleaseConfig) -> Any:
    """Airflow's DeadlineAlert for a night still not finished ``alerts.deadline_minutes`` after it was queued;
    None when not configured. Its callback is the e-mail notifier (run by the triggerer)."""
    alerts = config.alerts
    if alerts is None or alerts.deadline_minutes is None or alerts.email is None:
        return None
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    minutes = alerts.deadline_minutes
    # Plain text: what the callback's context holds differs from a task's, and a template that fails to render
    # would lose the alert.
    subject = f"[rocm-nightly] LATE: a {NIGHTLY_DAG_ID} run is not finished {minutes} min after it was queued"
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=minutes),
        callback=AsyncCallback(SmtpNotifier, kwargs={
            "to": list(alerts.email.to), "from_email": alerts.email.from_email,
            "smtp_conn_id": alerts.email.smtp_conn_id,
            "subject": subject,
            "html_content": f"<p>The night is past its deadline ({minutes} minutes after it was queued): look at the "
                            "running tasks in the grid.</p>"}),
    )


__all__ = ["LAST_OUTCOME_VARIABLE", "NotifyOutcomeOperator", "deadline_alert", "NOTIFY_OUTCOME"]
