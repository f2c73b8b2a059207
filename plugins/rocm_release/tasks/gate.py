"""The smoke-test gate of ``rocm_nightly_release``: per variant, after the builds (or the reuse), before
anything public moves.

``tag_cache_images`` gives the digests their cache tags first: a night whose test fails keeps its images
findable, so the next night rebuilds only what a fix changes. Then, on the ROCm pool (the build hosts'
``queue`` and ``pool``), two containers run through the docker provider's ``DockerOperator``:

- ``test_release_image``: the release image, **by digest**, runs ``smoke_test.command``, network off, with
  the configured ``devices`` / ``group_add`` / ``shm_size_mb`` / ``environment``;
- ``test_wheels``: a clean container of the parent image (by digest) installs the project's and the base's
  wheels (read from the wheels images in the cache, never from the public index) with pip and imports
  ``smoke_test.imports``.

A failing container is fatal (no retry: the same bytes fail the same way); its output's tail is handed to
the release summary (XCom ``gate``). ``push_images`` and ``publish_wheels`` run only when neither failed.
The daemon is the build host's (``$DOCKER_HOST``, or ``build.docker_conn_id``'s host), the registry login the
provider's ``docker`` connection ``smoke_test.docker_conn_id`` (DockerHook) when one is configured.
"""

from __future__ import annotations

import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from rocm_release.core.errors import FatalError
from rocm_release.core.task_ids import XCOM_GATE, XCOM_TIMING
from rocm_release.tasks.policy import fail_fast

if TYPE_CHECKING:
    from rocm_release.core.config import ReleaseConfig, SmokeTest
    from rocm_release.core.plan import ReleasePlan, VariantPlan


class SmokeTestFailed(FatalError):
    """A gate container exited non-zero: the same image fails the same way, so no retry."""


def _plan_and_variant(context: Any, variant: str) -> tuple[ReleasePlan, VariantPlan]:
    from rocm_release.tasks.context import plan_from_xcom

    plan = plan_from_xcom(context)
    if variant not in [v.name for v in plan.variants]:
        raise AirflowSkipException(f"variant {variant} is not selected in this run")
    if plan.dry_run:
        raise AirflowSkipException("dry run: nothing is tagged, tested or published")
    return plan, plan.variant(variant)


def _refs(context: Any, plan: ReleasePlan, variant: str) -> dict[str, str]:
    """The pinned refs of a variant's four images (``tasks.context.current_variant_refs``)."""
    from rocm_release.tasks.context import current_variant_refs

    return current_variant_refs(context, plan, variant)


class _GateOperator(BaseOperator):
    """A gate test: one container on the ROCm pool whose image and command are known only at run time.

    The container is the docker provider's ``DockerOperator`` (``tasks.gate_container.GateContainer``), made
    and run inside ``execute``: the provider imports the docker SDK, which parsing the DAG must not (about
    50 ms more per parse). What it runs comes from the run's frozen plan (``plan.config.smoke_test``), never
    from the config file; the DAG file gives where the task runs (queue, pool) and its timeout."""

    ui_color = "#fef9e7"

    def __init__(self, *, variant: str, config: ReleaseConfig, **kwargs: Any) -> None:
        kwargs.setdefault("queue", config.build.queue)
        kwargs.setdefault("pool", config.build.pool)
        # A daemon or registry outage is retried; a failing test is fatal (SmokeTestFailed).
        kwargs.setdefault("retries", 2)
        kwargs.setdefault("retry_delay", timedelta(seconds=30))
        minutes = config.smoke_test.timeout_minutes if config.smoke_test else 30
        kwargs.setdefault("execution_timeout", timedelta(minutes=minutes))
        super().__init__(**kwargs)
        self.variant = variant

    def _gated(self, context: Any) -> tuple[ReleasePlan, VariantPlan, SmokeTest]:
        """The plan, the variant and the smoke test config; skip (handing on why) when there is nothing to test."""
        from rocm_release.core.smoke import gate_result
        from rocm_release.tasks.context import decision_from_xcom

        plan, v = _plan_and_variant(context, self.variant)
        decision = decision_from_xcom(context, self.variant)
        why = ""
        if plan.skip_tests:
            why = "SKIPPED by the skip_tests Param of this manual run: published UNTESTED"
        elif plan.config.smoke_test is None:
            why = "SKIPPED: the config has no smoke_test section; this release is not gated"
        elif decision.reuse and decision.wheels_published.present and not plan.force_rebuild:
            # Nothing new tonight: these digests were published, so they passed the gate on the night that
            # published them. Testing again would pull the release image (many GB) onto a build host per no-op
            # night and change nothing.
            why = ("not run: nothing new tonight (every image reused, the wheels published already); these "
                   "digests passed the gate on the night that published them")
        if why:
            (self.log.warning if "SKIPPED" in why else self.log.info)("%s: %s", self.task_id, why)
            context["ti"].xcom_push(key=XCOM_GATE, value=gate_result(self.task_id, passed=True, why=why, ran=False))
            raise AirflowSkipException(why)
        assert plan.config.smoke_test is not None
        return plan, v, plan.config.smoke_test

    def _run(self, context: Any, plan: ReleasePlan, smoke: SmokeTest, what: str, **container: Any) -> None:
        """Run the container; hand the outcome on; a failed test fails the task at once."""
        from rocm_release.adapters.smoke import docker_host, pull_for_test
        from rocm_release.core.smoke import gate_result, tail
        from rocm_release.tasks.gate_container import DockerContainerFailedException, GateContainer

        shm = smoke.shm_size_mb * 1024 * 1024 if smoke.shm_size_mb else None
        run = GateContainer(task_id=f"{self.task_id}.container", docker_url=docker_host(plan.config),
                            docker_conn_id=smoke.docker_conn_id, environment=dict(smoke.environment), shm_size=shm,
                            devices=list(smoke.devices), group_add=list(smoke.group_add), **container)
        started = time.monotonic()
        try:
            pull_for_test(plan, run.image, self.log.info)
            self.log.info("%s: %s: running %s in %s", self.variant, what, run.command, run.image)
            run.execute(context)
        except DockerContainerFailedException as exc:
            lines = [str(line) for line in (exc.logs or [])]
            result = gate_result(self.task_id, passed=False, output=lines, why=f"{what} failed: {exc}")
            context["ti"].xcom_push(key=XCOM_GATE, value=result)
            last = "\n".join(tail(lines))
            raise SmokeTestFailed(f"{self.variant}: {what} failed ({exc}); nothing public moves. Its last "
                                  f"lines:\n{last}") from exc
        finally:
            context["ti"].xcom_push(key=XCOM_TIMING, value=round(time.monotonic() - started, 3))
        context["ti"].xcom_push(key=XCOM_GATE, value=gate_result(self.task_id, passed=True, why=f"{what} passed"))


class TestReleaseImageOperator(_GateOperator):
    """``smoke_test.command`` in the release image, pulled by digest, on a build host."""

    __test__ = False  # not a pytest test class

    @fail_fast
    def execute(self, context: Any) -> None:
        """Run the smoke command in ``<cache repository>@<release digest>``."""
        plan, _v, smoke = self._gated(context)
        image = _refs(context, plan, self.variant)["release"]
        self._run(context, plan, smoke, "the release image's smoke command", image=image, command=list(smoke.command))


class TestWheelsOperator(_GateOperator):
    """The project's and the base's wheels, installed with pip into a clean container of the parent image."""

    __test__ = False

    @fail_fast
    def execute(self, context: Any) -> None:
        """Read both wheels images' /dist from the cache, mount them read-only, install and import."""
        from rocm_release.adapters.smoke import stage_wheels
        from rocm_release.core.smoke import WHEELS_MOUNT, wheels_test_command
        from rocm_release.tasks.gate_container import bind_read_only

        plan, v, smoke = self._gated(context)
        refs = _refs(context, plan, self.variant)
        with tempfile.TemporaryDirectory(prefix="rocm-nightly-wheels-test-") as folder:
            stage_wheels(plan, v, refs, Path(folder), self.log.info)
            self._run(context, plan, smoke, "the wheels test", image=v.parent_image,
                      command=wheels_test_command(smoke.imports), mounts=[bind_read_only(folder, WHEELS_MOUNT)])


__all__ = ["SmokeTestFailed", "TestReleaseImageOperator", "TestWheelsOperator"]
