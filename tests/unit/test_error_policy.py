"""One error policy, per operator class: a fatal error fails at once (AirflowFailException, which
Airflow never retries), a transient one propagates so the task's retries apply (a sensor pokes again).

The errors come from real parts on 127.0.0.1: a registry (and S3 endpoint) that answers 401 to every
request, a port with nothing listening, a git repository without the named commit, a path that is no
repository. The run's context is a stand-in for Airflow's (``Run`` below: XComs in a dict), not a
mock of our code. ``choose_path`` and ``reuse_cached_images`` do no I/O: they have only the fatal half.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rocm_release.adapters.config_file import REPO_ROOT, load_config
from rocm_release.core import task_ids as ids
from rocm_release.core.config import ReleaseConfig
from rocm_release.core.decision import Observation, decide
from rocm_release.core.errors import TransientError
from rocm_release.core.params import ReleaseParams
from rocm_release.core.plan import ReleasePlan, make_plan
from rocm_release.tasks.nightly import (
    BuildImageOperator,
    ChoosePathOperator,
    PromoteNightlyOperator,
    PublishWheelsOperator,
    PushImagesOperator,
    ReleaseSummaryOperator,
    ResolveReleaseOperator,
    ReuseCachedImagesOperator,
)
from rocm_release.tasks.retention import ApplyRetentionOperator, PlanRetentionOperator
from rocm_release.tasks.sensors import ArtifactSensor
from tests.support.net import closed_port

COMMIT = "0123456789abcdef0123456789abcdef01234567"
VARIANT = "rocm710"
DIGESTS = {kind: "sha256:" + c * 64 for kind, c in
           (("base", "1"), ("base_wheels", "2"), ("wheels", "3"), ("release", "4"))}


class _Refuse(BaseHTTPRequestHandler):
    """Answers every request with 401: credentials refused (a registry or an S3 endpoint)."""

    def _refuse(self) -> None:
        body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _refuse

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def refusing() -> Iterator[str]:
    """``127.0.0.1:<port>`` of a server that refuses every request with 401."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def silent() -> str:
    """``127.0.0.1:<port>`` where nothing listens (connection refused: an outage)."""
    return f"127.0.0.1:{closed_port()}"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real git repository with one commit on main (file:// URL)."""
    path = tmp_path_factory.mktemp("repo")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=env)
    (path / "README").write_text("x\n")
    subprocess.run(["git", "-C", str(path), "add", "README"], check=True, env=env)
    subprocess.run(["git", "-C", str(path), "commit", "-q", "-m", "one"], check=True, env=env)
    return f"file://{path}"


@pytest.fixture(autouse=True)
def _host_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROCM_NIGHTLY_CACHE_DIR", str(tmp_path / "cache"))


def config_with(tmp_path: Path, *, registry: str, git_url: str = "file:///nonexistent/repo.git") -> ReleaseConfig:
    """The demo config with both registries at ``registry``, a git URL and a local store."""
    base = load_config(REPO_ROOT / "include" / "config" / "demo.yaml").model_dump(mode="json")
    base["project"]["git_url"] = git_url
    base["cache_registry"].update(host=registry, scheme="http")
    base["public_registry"].update(host=registry, scheme="http")
    base["wheel_store"]["url"] = f"file://{tmp_path}/store"
    # An outage is retried inside the task for this window, then raised as transient (Airflow retries it).
    base["retry"] = {"window_seconds": 1, "first_delay_seconds": 1, "max_delay_seconds": 1}
    return ReleaseConfig.model_validate(base)


def plan_for(config: ReleaseConfig, **params: Any) -> ReleasePlan:
    parents = {v.parent_image or config.project.parent_image for v in config.variants}
    kind = params.pop("run_kind", "manual")
    return make_plan(
        config, commit=COMMIT, run_kind=kind, as_of=datetime(2026, 12, 1, tzinfo=UTC),
        params=ReleaseParams.model_validate(params), base_dockerfile=b"FROM scratch\n",
        base_inputs={p: b"x" for p in config.project.base_inputs},
        parent_images={p: f"{p.rsplit(':', 1)[0]}@{'sha256:' + 'ab' * 32}" for p in parents},
    )


@dataclass
class Run:
    """A stand-in for the run's context: XComs by (task id, key), Params, the run type."""

    xcoms: dict[tuple[str, str], Any] = field(default_factory=dict)
    run_type: str = "manual"
    conf: dict[str, Any] = field(default_factory=dict)

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        return self.xcoms.get((task_ids, key))

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[("pushed", key)] = value

    @staticmethod
    def get_dr_count(dag_id: str, states: list[str]) -> int:
        """No nightly run in progress (what retention asks the execution API first)."""
        return 0

    def context(self) -> dict[str, Any]:
        dag_run = type("DagRun", (), {"run_type": self.run_type, "conf": self.conf,
                                      "run_after": datetime(2026, 12, 1, tzinfo=UTC)})()
        return {"ti": self, "dag_run": dag_run, "params": {}, "run_id": "manual__test", "outlet_events": {}}


def present(digest: str, **extra: Any) -> dict[str, Any]:
    return Observation(present=True, digest=digest, **extra).model_dump(mode="json")


def run_with_plan(plan: ReleasePlan, *, reuse: bool = True, pushed: bool = False) -> Run:
    """A run whose resolve_release, sensors and choose_path handed on what a reuse night hands on."""
    run = Run()
    run.xcoms[(ids.RESOLVE_RELEASE, "return_value")] = plan.model_dump(mode="json")
    v = plan.variant(VARIANT)
    labels = {"dev.rocm-nightly.base-key": v.base_key, "dev.rocm-nightly.base-digest": DIGESTS["base"]}
    seen = {
        "base_image": Observation(present=True, digest=DIGESTS["base"], paired_digest=DIGESTS["base_wheels"]),
        "wheels_image": Observation(present=True, digest=DIGESTS["wheels"], labels=labels),
        "release_image": Observation(present=True, digest=DIGESTS["release"], labels=labels),
        "wheels_published": Observation(present=False),
    }
    for artifact, task in ids.SENSORS.items():
        run.xcoms[(ids.in_group(VARIANT, task), "return_value")] = seen[artifact].model_dump(mode="json")
    decision = decide(base=seen["base_image"], wheels_image=seen["wheels_image"],
                      release_image=seen["release_image"], wheels_published=seen["wheels_published"],
                      base_key=v.base_key, force_rebuild=False)
    assert decision.reuse is reuse
    run.xcoms[(ids.in_group(VARIANT, ids.CHOOSE_PATH), ids.XCOM_DECISION)] = decision.model_dump(mode="json")
    if pushed:
        run.xcoms[(ids.in_group(VARIANT, ids.PUSH_IMAGES), "return_value")] = {
            "digests": DIGESTS, "public": {}, "bytes_copied": 0, "blobs_copied": 0, "blobs_skipped": 0}
    return run


def both_halves(make_op: Any, fatal_run: Run, transient_run: Run, *, fatal_match: str) -> None:
    """The fatal run fails at once; the transient run raises a TransientError (Airflow retries it)."""
    with pytest.raises(AirflowFailException, match=fatal_match):
        make_op().execute(fatal_run.context())
    with pytest.raises(TransientError):
        make_op().execute(transient_run.context())


# --------------------------------------------------------------------------- the nightly DAG


def test_resolve_release_unknown_commit_fails_now_unreachable_remote_retries(tmp_path: Path, repo: str,
                                                                            silent: str) -> None:
    unknown = "f" * 40
    fatal = Run(conf={"commit": unknown})
    transient = Run(conf={"commit": unknown})

    def op(git_url: str) -> ResolveReleaseOperator:
        return ResolveReleaseOperator(task_id=ids.RESOLVE_RELEASE, config=config_with(
            tmp_path, registry=silent, git_url=git_url))

    with pytest.raises(AirflowFailException, match=f"resolve_release: unknown commit or ref '{unknown}'"):
        op(repo).execute(fatal.context())
    with pytest.raises(TransientError, match="fetching"):
        op(f"http://{silent}/tinyllm.git").execute(transient.context())


def test_resolve_release_bad_params_fail_before_any_side_effect(tmp_path: Path, silent: str) -> None:
    op = ResolveReleaseOperator(task_id=ids.RESOLVE_RELEASE, config=config_with(
        tmp_path, registry=silent, git_url=f"http://{silent}/never-fetched.git"))
    with pytest.raises(AirflowFailException, match="param 'variants'"):
        op.execute(Run(conf={"variants": ["rocm999"]}).context())
    assert not (tmp_path / "cache").exists()  # no mirror was even created


def test_choose_path_without_observations_fails_now(tmp_path: Path, silent: str) -> None:
    run = run_with_plan(plan_for(config_with(tmp_path, registry=silent)))
    del run.xcoms[(ids.in_group(VARIANT, ids.CHECK_RELEASE_IMAGE), "return_value")]
    op = ChoosePathOperator(task_id=ids.CHOOSE_PATH, variant=VARIANT)
    with pytest.raises(AirflowFailException, match="left no observation"):
        op.choose_branch(run.context())


def test_reuse_without_a_digest_fails_now(tmp_path: Path, silent: str) -> None:
    run = run_with_plan(plan_for(config_with(tmp_path, registry=silent)))
    key = (ids.in_group(VARIANT, ids.CHOOSE_PATH), ids.XCOM_DECISION)
    decision = dict(run.xcoms[key])
    decision["release_image"] = Observation(present=False).model_dump(mode="json")
    run.xcoms[key] = decision
    op = ReuseCachedImagesOperator(task_id=ids.REUSE_CACHED_IMAGES, variant=VARIANT)
    with pytest.raises(AirflowFailException, match=r"no digest observed for \['release'\]"):
        op.execute(run.context())


def test_build_refused_source_fails_now_unreachable_source_retries(tmp_path: Path, silent: str) -> None:
    fatal = run_with_plan(plan_for(config_with(tmp_path, registry=silent, git_url="file:///nonexistent/x.git")))
    transient = run_with_plan(plan_for(config_with(tmp_path, registry=silent, git_url=f"http://{silent}/x.git")))
    config = config_with(tmp_path, registry=silent)
    both_halves(lambda: BuildImageOperator(task_id=ids.BUILD_WHEELS, stage="wheels", variant=VARIANT, config=config),
                fatal, transient, fatal_match="does not appear to be a git repository")


def test_push_images_refused_fails_now_outage_retries(tmp_path: Path, refusing: str, silent: str) -> None:
    both_halves(lambda: PushImagesOperator(task_id=ids.PUSH_IMAGES, variant=VARIANT),
                run_with_plan(plan_for(config_with(tmp_path, registry=refusing))),
                run_with_plan(plan_for(config_with(tmp_path, registry=silent))),
                fatal_match="credentials missing or refused")


def test_publish_wheels_refused_fails_now_outage_retries(tmp_path: Path, refusing: str, silent: str) -> None:
    both_halves(lambda: PublishWheelsOperator(task_id=ids.PUBLISH_WHEELS, variant=VARIANT),
                run_with_plan(plan_for(config_with(tmp_path, registry=refusing))),
                run_with_plan(plan_for(config_with(tmp_path, registry=silent))),
                fatal_match="credentials missing or refused")


def test_promote_nightly_refused_fails_now_outage_retries(tmp_path: Path, repo: str, refusing: str,
                                                          silent: str) -> None:
    def run(registry: str) -> Run:
        plan = plan_for(config_with(tmp_path, registry=registry, git_url=repo), run_kind="scheduled")
        # A commit of the release branch: promotion asks git before any registry.
        head = subprocess.run(["git", "-C", repo.removeprefix("file://"), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
        return run_with_plan(plan.model_copy(update={"commit": head}), pushed=True)

    both_halves(lambda: PromoteNightlyOperator(task_id=ids.PROMOTE_NIGHTLY, variant=VARIANT),
                run(refusing), run(silent), fatal_match="credentials missing or refused")


def test_release_summary_refused_fails_now_outage_retries(tmp_path: Path, refusing: str, silent: str) -> None:
    both_halves(lambda: ReleaseSummaryOperator(task_id=ids.RELEASE_SUMMARY),
                run_with_plan(plan_for(config_with(tmp_path, registry=refusing), variants=[VARIANT]), pushed=True),
                run_with_plan(plan_for(config_with(tmp_path, registry=silent), variants=[VARIANT]), pushed=True),
                fatal_match="credentials missing or refused")


def test_sensor_refused_fails_now_outage_pokes_again(tmp_path: Path, refusing: str, silent: str) -> None:
    def sensor() -> ArtifactSensor:
        return ArtifactSensor(task_id=ids.CHECK_BASE_IMAGE, artifact="base_image", variant=VARIANT)

    with pytest.raises(AirflowFailException, match="credentials missing or refused"):
        sensor().poke(run_with_plan(plan_for(config_with(tmp_path, registry=refusing))).context())
    assert sensor().poke(run_with_plan(plan_for(config_with(tmp_path, registry=silent))).context()) is False


# --------------------------------------------------------------------------- a task that did nothing


@pytest.mark.parametrize(("params", "why"), [
    ({"run_kind": "backfill"}, "backfills never promote"),
    ({"run_kind": "manual", "promote": False}, "did not ask to promote"),
    ({"run_kind": "scheduled", "dry_run": True}, "dry run: nothing is promoted"),
])
def test_promote_nightly_that_does_not_promote_is_skipped_and_hands_on_why(tmp_path: Path, silent: str,
                                                                           params: dict[str, Any], why: str) -> None:
    """Skipped, not green: the reason is in the skip and, under its own XCom key, for release_summary.
    Nothing is asked of git or a registry (both point at a port where nothing listens)."""
    plan = plan_for(config_with(tmp_path, registry=silent, git_url=f"http://{silent}/x.git"), **params)
    run = run_with_plan(plan, pushed=True)
    with pytest.raises(AirflowSkipException, match=f"not promoted: .*{why}"):
        PromoteNightlyOperator(task_id=ids.PROMOTE_NIGHTLY, variant=VARIANT).execute(run.context())
    handed_on = run.xcoms[("pushed", ids.XCOM_PROMOTION)]
    assert handed_on["promoted"] is False and why in handed_on["why"]


# --------------------------------------------------------------------------- the retention DAG


def test_plan_retention_refused_fails_now_outage_retries(tmp_path: Path, refusing: str, silent: str) -> None:
    run = Run(run_type="manual")
    with pytest.raises(AirflowFailException, match="credentials missing or refused"):
        PlanRetentionOperator(task_id=ids.PLAN_RETENTION,
                              config=config_with(tmp_path, registry=refusing)).execute(run.context())
    with pytest.raises(TransientError):
        PlanRetentionOperator(task_id=ids.PLAN_RETENTION,
                              config=config_with(tmp_path, registry=silent)).execute(run.context())


def test_apply_retention_refused_fails_now_outage_retries(tmp_path: Path, refusing: str, silent: str) -> None:
    def run(registry: str) -> Run:
        config = config_with(tmp_path, registry=registry)
        deletion = {"action": "delete", "target": "tag", "location": f"{registry}/tinyllm/tinyllm-rocm",
                    "name": f"nightly-{COMMIT}-{VARIANT}", "kind": "nightly_commit", "commit": COMMIT}
        planned = {"dry_run": False, "keep_commits": 1, "summary": {}, "delete": [deletion],
                   "config": config.model_dump(mode="json")}
        return Run(xcoms={(ids.PLAN_RETENTION, "return_value"): planned})

    both_halves(lambda: ApplyRetentionOperator(task_id=ids.APPLY_RETENTION), run(refusing), run(silent),
                fatal_match="credentials missing or refused")
