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
from typing import Any, Literal

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rocm_release.adapters.store import FatalStoreError, TransientStoreError
from rocm_release.core.plan import ReleasePlan
from rocm_release.core.registry import FatalRegistryError, TransientRegistryError

Artifact = Literal["base_image", "wheels_image", "release_image", "wheels_published"]
RESOLVE_TASK = "resolve_release"


def plan_from_xcom(context: Any) -> ReleasePlan:
    """The plan ``resolve_release`` computed; fails clearly when it is missing."""
    raw = context["ti"].xcom_pull(task_ids=RESOLVE_TASK)
    if not raw:
        raise AirflowFailException(f"no ReleasePlan in the XCom of {RESOLVE_TASK!r}; did it run?")
    return ReleasePlan.model_validate(raw)


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

    def poke(self, context: Any) -> bool | PokeReturnValue:
        """One observation: PokeReturnValue on an answer, False on an outage, fail on a fatal error."""
        from rocm_release.adapters import observe
        from rocm_release.adapters.config_file import load_config
        from rocm_release.adapters.registry.clients import blob_registry_for, registry_for
        from rocm_release.adapters.store import observe_published, store_root

        plan = plan_from_xcom(context)
        if self.variant not in [v.name for v in plan.variants]:
            raise AirflowSkipException(f"variant {self.variant} is not selected in this run")
        v = plan.variant(self.variant)
        config = load_config()
        try:
            if self.artifact == "wheels_published":
                folder = store_root(v.wheels_url, config.wheel_store.connection_id)
                found = observe_published(folder, v.wheels_url)
            elif self.artifact == "wheels_image":
                # Verifying SHA256SUMS reads the /dist layers: a client that streams blobs.
                found = observe.observe_wheels_image(blob_registry_for(config.cache_registry), plan, v)
            elif self.artifact == "base_image":
                found = observe.observe_base(registry_for(config.cache_registry), plan, v)
            else:
                found = observe.observe_release_image(registry_for(config.cache_registry), plan, v)
        except (TransientRegistryError, TransientStoreError) as exc:
            self.log.warning("No answer yet about %s of %s (poking again): %s", self.artifact, v.name, exc)
            return False
        except (FatalRegistryError, FatalStoreError) as exc:
            raise AirflowFailException(f"{self.artifact} of {v.name}: {exc}") from exc
        self.log.info(
            "%s of %s: %s%s%s", self.artifact, v.name, "PRESENT" if found.present else "ABSENT",
            f" {found.digest}" if found.digest else "", f" — {found.reason}" if found.reason else "",
        )
        return PokeReturnValue(is_done=True, xcom_value=found.model_dump(mode="json"))
