"""The four artifact sensors: thin Airflow adapters around ``rocm_release.adapters.observe``.

Mode: **reschedule**, not deferrable. Between pokes the sensor holds no worker
slot, Airflow enforces its timeout from the first poke's time stored in the
DB, and the same code path runs under the scheduler and under ``dag.test()``
(which runs triggers inline and ignores a deferral timeout, so an outage
longer than the timeout could not be tested there). A poke is a handful of
HTTP requests, so starting a task process per poke costs little next to the
minutes between pokes.

Outcomes: a definitive answer (present/absent) ends the sensor and goes to
XCom with digest, labels and reason; a transient error logs and pokes again
with exponential backoff until the timeout, then the task fails (never
"absent"); a fatal error fails at once, naming registry, repository and
connection.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSkipException

from rocm_release.core.errors import TransientError
from rocm_release.tasks.policy import fail_fast

if TYPE_CHECKING:
    from rocm_release.core.task_ids import Artifact


class ArtifactSensor(BaseSensorOperator):
    """Waits for a definitive answer about one artifact of one variant."""

    ui_color = "#d6eaf8"

    def __init__(self, *, artifact: Artifact, variant: str, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("exponential_backoff", True)
        # A timeout or a fatal error never retries (Airflow fails those at once). The one retry
        # absorbs apache/airflow#71172: under the real scheduler a reschedule can be reported late
        # and the task marked failed though its poke succeeded.
        kwargs.setdefault("retries", 1)
        kwargs.setdefault("retry_delay", timedelta(seconds=kwargs.get("poke_interval", 60)))
        super().__init__(**kwargs)
        self.artifact = artifact
        self.variant = variant

    @fail_fast
    def poke(self, context: Any) -> bool | PokeReturnValue:
        """One observation: PokeReturnValue on an answer, False on an outage, fail on a fatal error."""
        from rocm_release.adapters.steps import observe_artifact
        from rocm_release.tasks.context import plan_from_xcom

        plan = plan_from_xcom(context)
        if self.variant not in [v.name for v in plan.variants]:
            raise AirflowSkipException(f"variant {self.variant} is not selected in this run")
        v = plan.variant(self.variant)
        try:
            found = observe_artifact(plan, v, self.artifact)
        except TransientError as exc:
            self.log.warning("No answer yet about %s of %s (poking again): %s", self.artifact, v.name, exc)
            return False
        self.log.info(
            "%s of %s: %s%s%s", self.artifact, v.name, "PRESENT" if found.present else "ABSENT",
            f" {found.digest}" if found.digest else "", f" — {found.reason}" if found.reason else "",
        )
        return PokeReturnValue(is_done=True, xcom_value=found.model_dump(mode="json"))
