"""The real ArtifactSensor under Airflow (``dag.test()``, SQLite) against real registries.

Each test builds a small DAG here (not in dags/): ``resolve_release`` returns a real
``make_plan(...)`` for a config written into tmp_path whose ``cache_registry`` is a registry
of this module (a fresh ``docker-registry`` on 127.0.0.1, or a moto server for ECR), and the
``check_*`` tasks are the real ``ArtifactSensor`` in its default mode (reschedule, exponential
backoff), built from the config's ``sensors`` block as the nightly DAG builds them. Nothing in
the sensor, the observation or the registry clients is patched — except, for ECR, the one call
moto lacks (GetDownloadUrlForLayer, see below).

How the DAG gets to run: ``dag.test()`` runs only DAGs that are serialized in the metadata DB,
and it writes them by parsing the configured DAG bundles. ``run_dag`` writes our DAG into the DB
itself, under a bundle of this module's own (an empty folder, configured next to
``dags-folder`` for this module only): ``dag.test()`` then re-syncs only that bundle, so it
neither parses dags/ nor needs our DAG to live there.

How reschedule works under ``dag.test()`` (airflow/sdk/definitions/dag.py, ``test``): tasks
run in this process, one at a time. A poke that returns False raises
AirflowRescheduleException: the TI goes to ``up_for_reschedule`` and gets a TaskReschedule row.
The loop then finds nothing runnable and sleeps 1 s per round ("No tasks to run") until the
reschedule date has passed, and pokes again. The sensor's timeout counts from the first
TaskReschedule row, so it holds across pokes. With poke_interval 1 s and max_wait 2 s a run
takes seconds; nothing here waits by sleeping: the outage test restarts its registry from a
thread that polls the DB for the sensor's first reschedule.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.configuration import conf
from airflow.dag_processing.bundles.manager import DagBundlesManager
from airflow.dag_processing.collection import update_dag_parsing_results_in_db
from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.models.taskreschedule import TaskReschedule
from airflow.models.xcom import XComModel
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, timezone
from airflow.serialization.serialized_objects import LazyDeserializedDAG
from airflow.utils.session import create_session
from airflow.utils.state import TaskInstanceState
from airflow.utils.types import DagRunType
from sqlalchemy import func, select

from rocm_release.adapters.config_file import CONFIG_ENV, load_config
from rocm_release.adapters.registry.ecr import EcrRegistry
from rocm_release.core.config import ReleaseConfig
from rocm_release.core.decision import Observation
from rocm_release.core.params import ReleaseParams
from rocm_release.core.plan import (
    LABEL_BASE_DIGEST,
    LABEL_BASE_KEY,
    LABEL_COMMIT,
    LABEL_DIST_SUMS,
    LABEL_SCHEMA,
    LABEL_VARIANT,
    SCHEMA_VERSION,
    ReleasePlan,
    VariantPlan,
    make_plan,
)
from rocm_release.core.task_ids import RESOLVE_RELEASE as RESOLVE_TASK
from rocm_release.core.task_ids import Artifact
from rocm_release.tasks.sensors import ArtifactSensor
from tests.conftest import TEST_ENV
from tests.support.demo import demo_document
from tests.support.ecr import BlobServer, ecr_image, put_image, stub_download_url
from tests.support.moto import MOTO_ECR_HOST as ECR_HOST
from tests.support.moto import admin_client, moto_api, set_connection
from tests.support.registries import (
    REGISTRY_BIN,
    LocalRegistry,
    RequestLog,
    TestImage,
    TokenServer,
    make_image,
    running_registry,
    unique_repo,
)
from tests.support.registries import token_registry as running_token_registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not REGISTRY_BIN.exists(), reason="needs Debian docker-registry (/usr/bin/docker-registry)"),
]

COMMIT = "0123456789abcdef0123456789abcdef01234567"
AS_OF = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
PARENT_DIGEST = "sha256:" + "ab" * 32
VARIANT = "rocm710"
BUNDLE = "rocm-nightly-sensor-tests"
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
ECR_CONN = "ecr_sensor_moto"
WHEEL = "x-1.0-py3-none-any.whl"


# --------------------------------------------------------------------------------------------
# Airflow: a migrated DB, our own DAG bundle, the test DAG and one run of it


@pytest.fixture(scope="session")
def metadata_db() -> None:
    """``airflow db migrate`` once, on the test AIRFLOW_HOME's SQLite (idempotent)."""
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "db", "migrate"], env={**os.environ, **TEST_ENV},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"airflow db migrate failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def dag_bundle(metadata_db: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A DAG bundle of this module's own (an empty folder), configured next to the default ones."""
    bundles = json.loads(conf.get("dag_processor", "dag_bundle_config_list"))
    bundles.append({"name": BUNDLE, "classpath": LOCAL_BUNDLE,
                    "kwargs": {"path": str(tmp_path_factory.mktemp("dag-bundle"))}})
    patch = pytest.MonkeyPatch()
    patch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    DagBundlesManager().sync_bundles_to_db()
    yield BUNDLE
    patch.undo()


def plan_for(config: ReleaseConfig) -> ReleasePlan:
    """The plan of this module's fixed commit: real ``make_plan``, fixed inputs instead of git."""
    parents = {config.project.parent_image, *(v.parent_image for v in config.variants if v.parent_image)}
    return make_plan(
        config,
        commit=COMMIT,
        run_kind="manual",
        as_of=AS_OF,
        params=ReleaseParams(),
        base_dockerfile=b"FROM scratch\n",
        base_inputs={p: f"{p}\n".encode() for p in config.project.base_inputs},
        parent_images={p: f"{p.rsplit(':', 1)[0]}@{PARENT_DIGEST}" for p in parents},
    )


def resolve_release() -> dict[str, Any]:
    """The test DAG's ``resolve_release``: the plan for the config ``$ROCM_NIGHTLY_CONFIG`` names."""
    return plan_for(load_config()).model_dump(mode="json")


def sensor_dag(dag_id: str, config: ReleaseConfig, artifacts: Sequence[Artifact] = ("base_image",)) -> DAG:
    """``resolve_release`` >> one ArtifactSensor per artifact, wired as dags/ wires them (config.sensors)."""
    sensing = config.sensors
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False) as dag:
        resolve = PythonOperator(task_id=RESOLVE_TASK, python_callable=resolve_release)
        for artifact in artifacts:
            resolve >> ArtifactSensor(
                task_id=f"check_{artifact}", artifact=artifact, variant=VARIANT,
                poke_interval=sensing.poke_interval, max_wait=timedelta(seconds=sensing.max_wait),
                timeout=sensing.timeout,
            )
    return dag


@dataclass
class SensorRun:
    """What one ``dag.test()`` left in the metadata DB."""

    run_id: str
    state: str
    seconds: float
    states: dict[str, str | None]
    try_numbers: dict[str, int]
    reschedules: dict[str, int]
    xcom: dict[str, Any]

    def observation(self, task_id: str = "check_base_image") -> Observation:
        assert self.states[task_id] == TaskInstanceState.SUCCESS, self.states
        return Observation.model_validate(self.xcom[task_id])


def run_dag(dag: DAG, bundle: str, during: Callable[[str], object] | None = None) -> SensorRun:
    """Serialize ``dag`` into the DB under ``bundle``, run it with ``dag.test()``, read what it left.

    ``during(run_id)`` is called just before the run starts (to start a watcher thread).
    """
    with create_session() as session:
        update_dag_parsing_results_in_db(bundle, None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(),
                                         session=session)
    when = timezone.utcnow()
    run_id = DagRun.generate_run_id(run_type=DagRunType.MANUAL, logical_date=when, run_after=when)
    if during is not None:
        during(run_id)
    started = time.monotonic()
    dr = dag.test(run_after=when, logical_date=when)
    seconds = time.monotonic() - started
    assert dr.run_id == run_id
    with create_session() as session:
        tis = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag.dag_id,
                                                         TaskInstance.run_id == run_id)).all()
        reschedules = {
            ti.task_id: session.scalar(select(func.count()).select_from(TaskReschedule)
                                       .where(TaskReschedule.ti_id == ti.id)) or 0
            for ti in tis
        }
        xcom = {x.task_id: XComModel.deserialize_value(x)
                for x in session.scalars(XComModel.get_many(run_id=run_id, dag_ids=dag.dag_id, key="return_value"))}
        return SensorRun(
            run_id=run_id, state=str(dr.state), seconds=seconds,
            states={ti.task_id: ti.state for ti in tis}, try_numbers={ti.task_id: ti.try_number for ti in tis},
            reschedules=reschedules, xcom=xcom,
        )


def logged(capfd: pytest.CaptureFixture[str]) -> str:
    """What the run wrote (task logs go to this process's stdout under ``dag.test()``)."""
    captured = capfd.readouterr()
    return captured.out + captured.err


# --------------------------------------------------------------------------------------------
# Config and images


def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_registry: dict[str, Any],
                 *, timeout: int) -> ReleaseConfig:
    """include/config/demo.yaml with our cache registry and fast sensors; ``$ROCM_NIGHTLY_CONFIG`` names it."""
    document = demo_document()
    document["cache_registry"] = cache_registry
    document["sensors"] = {"poke_interval": 1, "max_wait": 2, "timeout": timeout}
    path = tmp_path / "rocm-nightly.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    monkeypatch.setenv(CONFIG_ENV, str(path))
    return load_config()


def oci_config(registry: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *,
               timeout: int = 30, connection_id: str | None = None) -> ReleaseConfig:
    """A config whose cache registry is ``registry``, with a repository of this test's own."""
    block: dict[str, Any] = {"kind": "oci", "scheme": "http", "host": registry.host,
                             "repository": unique_repo("rocm-nightly/tinyllm")}
    if connection_id:
        block["connection_id"] = connection_id
    return write_config(tmp_path, monkeypatch, block, timeout=timeout)


def labels_for(v: VariantPlan, **extra: str) -> dict[str, str]:
    """The labels a build puts on a base-unit image of this plan (plan.py's constants)."""
    return {LABEL_SCHEMA: str(SCHEMA_VERSION), LABEL_BASE_KEY: v.base_key, LABEL_VARIANT: v.name, **extra}


def commit_labels(v: VariantPlan, base_digest: str) -> dict[str, str]:
    """The labels of a wheels or release image of this plan's commit."""
    return {**labels_for(v), LABEL_COMMIT: COMMIT, LABEL_BASE_DIGEST: base_digest}


def push_base_unit(registry: LocalRegistry, plan: ReleasePlan, *, base_labels: dict[str, str] | None = None,
                   paired_digest: str | None = None, sums_label: bool = False) -> tuple[TestImage, TestImage]:
    """The base image and its base wheels image, labelled as a build labels them (or as asked); with
    ``sums_label`` the base wheels image carries a SHA256SUMS label, as builds since issue #13 put on it."""
    v = plan.variant(VARIANT)
    repo = plan.cache_repository
    base = make_image(registry.url, repo, v.cache_tags.base, labels=base_labels or labels_for(v))
    sums = {LABEL_DIST_SUMS: f"{'1' * 64}  base-1.0-py3-none-any.whl\n"} if sums_label else {}
    wheels = make_image(registry.url, repo, v.cache_tags.base_wheels,
                        labels={**labels_for(v), LABEL_BASE_DIGEST: paired_digest or base.digest, **sums})
    return base, wheels


def wheels_layer(wheel: bytes, listed_sha256: str | None = None) -> bytes:
    """A tar.gz layer with /dist/<wheel> and /dist/SHA256SUMS (``sha256sum`` format)."""
    sums = f"{listed_sha256 or hashlib.sha256(wheel).hexdigest()}  {WHEEL}\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in ((f"dist/{WHEEL}", wheel), ("dist/SHA256SUMS", sums)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def push_wheels_image(registry: LocalRegistry, plan: ReleasePlan, base_digest: str,
                      listed_sha256: str | None = None, *, sums_label: bool = False) -> TestImage:
    """A FROM-scratch-shaped wheels image (one layer: /dist) at this commit; with ``sums_label`` it carries
    its SHA256SUMS as a label (builds since issue #13), without it it is an image built before that."""
    v = plan.variant(VARIANT)
    wheel = b"PK\x03\x04 not really a zip; only its sha256 matters here"
    layer = wheels_layer(wheel, listed_sha256)
    labels = commit_labels(v, base_digest)
    if sums_label:
        labels[LABEL_DIST_SUMS] = f"{hashlib.sha256(wheel).hexdigest()}  {WHEEL}\n"
    return make_image(registry.url, plan.cache_repository, v.cache_tags.wheels, labels=labels, layers=[layer])


# --------------------------------------------------------------------------------------------
# Registries


@pytest.fixture(scope="module")
def cache_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """The cache registry of most tests (each test uses a repository of its own)."""
    with running_registry(tmp_path_factory.mktemp("sensor-cache")) as registry:
        yield registry


@pytest.fixture
def flaky_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    """A registry this test may stop and restart (same port, same storage)."""
    with running_registry(tmp_path / "flaky") as registry:
        yield registry


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRegistry, TokenServer]]:
    """A registry with ``auth: token`` and its token issuer (one user: alice / s3cret)."""
    with running_token_registry(tmp_path_factory.mktemp("sensor-token"), {"alice": "s3cret"}) as both:
        yield both


# --------------------------------------------------------------------------------------------
# (1)-(3) the base unit: present, absent, absent for a reason


def test_a_paired_base_unit_is_present_with_its_digest(
    dag_bundle: str, cache_registry: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = oci_config(cache_registry, tmp_path, monkeypatch)
    base, wheels = push_base_unit(cache_registry, plan_for(config))

    run = run_dag(sensor_dag("test_sensors_base_present", config), dag_bundle)

    assert run.state == "success"
    found = run.observation()
    assert found.present
    assert (found.digest, found.paired_digest) == (base.digest, wheels.digest)
    assert found.labels[LABEL_BASE_KEY] == plan_for(config).variant(VARIANT).base_key
    assert run.reschedules["check_base_image"] == 0  # an answer at the first poke


def test_a_missing_base_image_is_absent_with_a_reason(
    dag_bundle: str, cache_registry: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    config = oci_config(cache_registry, tmp_path, monkeypatch)
    tag = plan_for(config).variant(VARIANT).cache_tags.base

    run = run_dag(sensor_dag("test_sensors_base_absent", config), dag_bundle)

    assert run.state == "success"  # "absent" is an answer: the sensor succeeds with it
    found = run.observation()
    assert not found.present and found.digest is None
    assert f"{tag} is not in {cache_registry.host}/{config.cache_registry.repository}" == found.reason
    assert f"base_image of {VARIANT}: ABSENT — {found.reason}" in logged(capfd)


def _base_of_another_key(registry: LocalRegistry, plan: ReleasePlan) -> str:
    push_base_unit(registry, plan, base_labels=labels_for(plan.variant(VARIANT), **{LABEL_BASE_KEY: "f" * 16}))
    return f"label {LABEL_BASE_KEY}='{'f' * 16}', expected '{plan.variant(VARIANT).base_key}'"


def _wheels_of_another_base(registry: LocalRegistry, plan: ReleasePlan) -> str:
    other = "sha256:" + "e" * 64
    base, wheels = push_base_unit(registry, plan, paired_digest=other)
    return f"base wheels image {wheels.digest}: label {LABEL_BASE_DIGEST}='{other}', expected '{base.digest}'"


def _base_without_its_wheels(registry: LocalRegistry, plan: ReleasePlan) -> str:
    v = plan.variant(VARIANT)
    make_image(registry.url, plan.cache_repository, v.cache_tags.base, labels=labels_for(v))
    return f"{v.cache_tags.base} exists but {v.cache_tags.base_wheels} does not: the pair is rebuilt"


@pytest.mark.parametrize("scene", [_base_of_another_key, _wheels_of_another_base, _base_without_its_wheels],
                         ids=["base-of-another-key", "wheels-of-another-base", "base-without-its-wheels"])
def test_a_base_unit_that_does_not_match_the_plan_is_absent_and_says_why(
    scene: Callable[[LocalRegistry, ReleasePlan], str], dag_bundle: str, cache_registry: LocalRegistry,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
) -> None:
    config = oci_config(cache_registry, tmp_path, monkeypatch)
    why = scene(cache_registry, plan_for(config))

    run = run_dag(sensor_dag("test_sensors_base_mismatch", config), dag_bundle)

    found = run.observation()
    assert not found.present and found.digest is None
    assert why in found.reason
    assert f"base_image of {VARIANT}: ABSENT — {found.reason}" in logged(capfd)  # logged, with the reason


# --------------------------------------------------------------------------------------------
# (4) a wheels image built before the sums label: present only when SHA256SUMS verifies (read whole);
#     the labelled case (no layer read) is tests/integration/test_wheels_label.py


@pytest.mark.parametrize("sums", ["right", "wrong"])
def test_a_wheels_image_is_present_only_if_its_sha256sums_verify(
    sums: str, dag_bundle: str, cache_registry: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = oci_config(cache_registry, tmp_path, monkeypatch)
    plan = plan_for(config)
    base, _ = push_base_unit(cache_registry, plan)
    image = push_wheels_image(cache_registry, plan, base.digest, None if sums == "right" else "0" * 64)

    run = run_dag(sensor_dag("test_sensors_wheels_image", config, ["wheels_image"]), dag_bundle)

    found = run.observation("check_wheels_image")
    if sums == "right":
        assert found.present and found.digest == image.digest
        assert found.reason == f"verified by reading /dist (no {LABEL_DIST_SUMS} label: built before it): {WHEEL}"
    else:
        assert not found.present and found.digest is None
        assert found.reason.startswith(f"wheels image {image.digest} does not verify")
        assert f"sha256 of ['{WHEEL}'] does not match SHA256SUMS" in found.reason


# --------------------------------------------------------------------------------------------
# (5)-(6) outages: waited out, never "absent"


@dataclass
class RestartAfterFirstReschedule:
    """Restarts a stopped registry once the sensor has poked it and been rescheduled (a thread).

    Polls the metadata DB for the sensor's TaskInstance in ``up_for_reschedule`` or with a
    TaskReschedule row — the proof that a poke ran against the dead registry — then restarts
    the registry on the same port with the same storage. Gives up at its deadline or when
    the run has ended without a reschedule (``finish``).
    """

    registry: LocalRegistry
    dag_id: str
    task_id: str
    deadline_s: float = 20.0
    seen: str | None = None
    error: BaseException | None = None
    ended: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = field(default=None, repr=False)

    def start(self, run_id: str) -> None:
        self.thread = threading.Thread(target=self._run, args=(run_id,), daemon=True)
        self.thread.start()

    def _rescheduled(self, run_id: str) -> str | None:
        with create_session() as session:
            ti = session.scalar(select(TaskInstance).where(TaskInstance.dag_id == self.dag_id,
                                                           TaskInstance.run_id == run_id,
                                                           TaskInstance.task_id == self.task_id))
            if ti is None:
                return None
            rows = session.scalar(select(func.count()).select_from(TaskReschedule)
                                  .where(TaskReschedule.ti_id == ti.id)) or 0
            if ti.state == TaskInstanceState.UP_FOR_RESCHEDULE or rows:
                return f"state={ti.state} reschedule_rows={rows}"
            return None

    def _run(self, run_id: str) -> None:
        try:
            deadline = time.monotonic() + self.deadline_s
            while (seen := self._rescheduled(run_id)) is None:
                if self.ended.is_set():
                    return  # the run ended without ever being rescheduled; the test says so
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.task_id} was not rescheduled within {self.deadline_s} s")
                self.ended.wait(0.1)  # the polling interval of a condition with a deadline
            self.seen = seen
            self.registry.start()
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc

    def finish(self) -> None:
        """Stop watching (the run is over) and surface what the thread saw or raised."""
        self.ended.set()
        assert self.thread is not None
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def test_an_outage_is_waited_out_and_the_restarted_registry_answers(
    dag_bundle: str, flaky_registry: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    config = oci_config(flaky_registry, tmp_path, monkeypatch, timeout=30)
    base, wheels = push_base_unit(flaky_registry, plan_for(config))
    flaky_registry.stop()
    port = flaky_registry.port
    dag = sensor_dag("test_sensors_outage_recovers", config)
    restarter = RestartAfterFirstReschedule(flaky_registry, dag.dag_id, "check_base_image")

    run = run_dag(dag, dag_bundle, during=restarter.start)
    restarter.finish()

    assert restarter.seen is not None, f"never rescheduled: {run}"  # it poked the dead registry first
    assert flaky_registry.port == port  # same address, same storage
    assert run.state == "success"
    found = run.observation()
    assert found.present and (found.digest, found.paired_digest) == (base.digest, wheels.digest)
    assert run.reschedules["check_base_image"] >= 1
    assert run.try_numbers["check_base_image"] == 1  # rescheduled, never retried
    out = logged(capfd)
    assert "No answer yet about base_image of rocm710 (poking again)" in out and "ConnectError" in out


def test_an_outage_past_the_timeout_fails_the_sensor_and_never_says_absent(
    dag_bundle: str, flaky_registry: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    config = oci_config(flaky_registry, tmp_path, monkeypatch, timeout=4)
    push_base_unit(flaky_registry, plan_for(config))  # present, but nobody can tell
    flaky_registry.stop()

    run = run_dag(sensor_dag("test_sensors_outage_times_out", config), dag_bundle)

    assert run.state == "failed"
    assert run.states["check_base_image"] == TaskInstanceState.FAILED
    assert "check_base_image" not in run.xcom  # no answer at all: neither absent nor present
    assert run.reschedules["check_base_image"] >= 2  # it kept poking until the timeout
    out = logged(capfd)
    assert "Sensor has timed out" in out
    assert "ABSENT" not in out and "PRESENT" not in out


# --------------------------------------------------------------------------------------------
# (7) refused credentials: fatal at the first poke


@pytest.mark.parametrize("credentials", ["wrong-password", "anonymous"])
def test_refused_credentials_fail_the_sensor_at_the_first_poke(
    credentials: str, dag_bundle: str, token_registry: tuple[LocalRegistry, TokenServer], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
) -> None:
    registry, tokens = token_registry
    if credentials == "wrong-password":
        # The token issuer answers 401 to alice's wrong password.
        monkeypatch.setenv("AIRFLOW_CONN_SENSOR_REGISTRY",
                           json.dumps({"conn_type": "generic", "login": "alice", "password": "wrong"}))
        config = oci_config(registry, tmp_path, monkeypatch, connection_id="sensor_registry")
        expected = "refused the credentials (HTTP 401)"
    else:
        # No connection: an anonymous token that grants nothing, so the registry itself answers 401.
        config = oci_config(registry, tmp_path, monkeypatch)
        expected = "HTTP 401"
    tokens.requests.clear()

    run = run_dag(sensor_dag("test_sensors_refused", config), dag_bundle)

    assert run.state == "failed"
    assert run.states["check_base_image"] == TaskInstanceState.FAILED
    assert run.reschedules["check_base_image"] == 0  # failed at once: never rescheduled
    assert run.try_numbers["check_base_image"] == 1
    assert len(tokens.requests) == 1  # each poke builds a fresh client that asks for one token: one poke
    assert "check_base_image" not in run.xcom
    out = logged(capfd)
    assert expected in out and "ABSENT" not in out
    if credentials == "wrong-password":
        assert "(connection 'sensor_registry')" in out


# --------------------------------------------------------------------------------------------
# The cost of a full check of one variant, in registry requests


def test_a_full_check_of_one_variant_costs_at_most_17_small_registry_requests(
    dag_bundle: str, cache_registry: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = oci_config(cache_registry, tmp_path, monkeypatch)
    plan = plan_for(config)
    v = plan.variant(VARIANT)
    base, base_wheels = push_base_unit(cache_registry, plan, sums_label=True)
    wheels = push_wheels_image(cache_registry, plan, base.digest, sums_label=True)
    make_image(cache_registry.url, plan.cache_repository, v.cache_tags.release, labels=commit_labels(v, base.digest))
    dag = sensor_dag("test_sensors_full_check", config, ["base_image", "wheels_image", "release_image"])

    log = RequestLog(cache_registry)
    run = run_dag(dag, dag_bundle)
    requests = log.close()

    assert all(run.observation(f"check_{a}").present for a in ("base_image", "wheels_image", "release_image"))
    assert all(r.status == 200 for r in requests)
    by_kind = sorted(f"{r.method} {r.path.split('/')[-2]}" for r in requests)
    print(f"\nfull check of {VARIANT}: {len(requests)} registry requests: {by_kind}")
    # Measured: 17 = base unit 9 (HEAD base, HEAD base-wheels, manifest + config blob of each, the base
    # wheels manifest again + a HEAD of each of its 2 layers) + wheels image 5 (HEAD, manifest + config
    # blob for the labels, manifest again + a HEAD of its one layer) + release image 3 (HEAD, manifest +
    # config blob). No token round trips (the registry has no auth). Fewer is fine; more means a sensor
    # started asking twice. No layer is read (issue #13): HEADs only, so no wheel byte is answered.
    assert len(requests) <= 17
    layers = {d for image in (base_wheels, wheels) for d, _ in image.layers}
    assert not [r for r in requests if r.method == "GET" and r.path.rsplit("/", 1)[-1] in layers]
    assert sorted(r.path.rsplit("/", 1)[-1] for r in requests if r.method == "HEAD" and r.kind == "blob") == sorted(
        layers)


# --------------------------------------------------------------------------------------------
# (8) ECR: the same base-unit answers against a moto server


@dataclass
class EcrScene:
    config: ReleaseConfig
    plan: ReleasePlan
    admin: Any
    blobs: BlobServer


@pytest.fixture
def ecr(moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EcrScene]:
    """A clean moto, the connection to it (``AIRFLOW_CONN_ECR_SENSOR_MOTO``), an ECR config, a blob server."""
    moto_api(moto_url, "reset")
    set_connection(monkeypatch.setenv, ECR_CONN, moto_url)
    config = write_config(tmp_path, monkeypatch, {"kind": "ecr", "host": ECR_HOST, "repository": "rocm-nightly/tinyllm",
                                                  "connection_id": ECR_CONN}, timeout=4)
    admin = admin_client("ecr", moto_url)
    admin.create_repository(repositoryName=config.cache_registry.repository)
    with BlobServer() as blobs:
        yield EcrScene(config, plan_for(config), admin, blobs)


def ecr_push_base_unit(scene: EcrScene) -> tuple[str, str]:
    """Base image + base wheels image via PutImage; their config blobs go to the blob server."""
    v = scene.plan.variant(VARIANT)
    repo = scene.plan.cache_repository
    base_raw, base_blob, media_type = ecr_image("base", labels_for(v))
    base = put_image(scene.admin, base_raw, media_type, v.cache_tags.base, repo=repo)
    wheels_raw, wheels_blob, _ = ecr_image("base-wheels", labels_for(v, **{LABEL_BASE_DIGEST: base}))
    wheels = put_image(scene.admin, wheels_raw, media_type, v.cache_tags.base_wheels, repo=repo)
    for blob in (base_blob, wheels_blob):
        scene.blobs.add(blob)
    return base, wheels


def serve_layers_from(blobs: BlobServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every EcrRegistry the sensor builds gets GetDownloadUrlForLayer answered by ``blobs``.

    moto does not implement that one call (it answers HTTP 500); the stub (tests/support/ecr.py)
    answers it through botocore's before-call event with a URL on the local blob server. The
    other calls (DescribeImages, BatchGetImage) and the blob GET are real. The sensor builds its
    registry inside poke(), so the stub goes on where the client is built.
    """
    build = EcrRegistry._build_client

    def build_and_stub(self: EcrRegistry) -> Any:
        self._client = build(self)
        stub_download_url(self, blobs)
        return self._client

    monkeypatch.setattr(EcrRegistry, "_build_client", build_and_stub)


@pytest.mark.parametrize("pushed", [True, False], ids=["present", "absent"])
def test_ecr_base_unit_is_present_or_absent(
    pushed: bool, dag_bundle: str, ecr: EcrScene, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_layers_from(ecr.blobs, monkeypatch)
    digests = ecr_push_base_unit(ecr) if pushed else None

    run = run_dag(sensor_dag("test_sensors_ecr_base", ecr.config), dag_bundle)

    assert run.state == "success"
    found = run.observation()
    if digests is not None:
        assert found.present and (found.digest, found.paired_digest) == digests
        assert len(ecr.blobs.requests) == 2  # both config blobs were read: the labels were checked
    else:
        tag = ecr.plan.variant(VARIANT).cache_tags.base
        assert not found.present and found.reason == f"{tag} is not in {ECR_HOST}/{ecr.plan.cache_repository}"


def test_ecr_labels_that_cannot_be_read_keep_the_sensor_poking_until_it_times_out(
    dag_bundle: str, ecr: EcrScene, capfd: pytest.CaptureFixture[str]
) -> None:
    """Both images exist but plain moto cannot hand out the config blob (HTTP 500): not known yet."""
    ecr_push_base_unit(ecr)

    run = run_dag(sensor_dag("test_sensors_ecr_unreadable", ecr.config), dag_bundle)

    assert run.state == "failed"
    assert run.states["check_base_image"] == TaskInstanceState.FAILED
    assert "check_base_image" not in run.xcom
    assert run.reschedules["check_base_image"] >= 2
    out = logged(capfd)
    assert "GetDownloadUrlForLayer" in out and "Sensor has timed out" in out
    assert "ABSENT" not in out
