"""Fault matrix, processes and concurrency: a task killed mid-upload, dockerd stopped mid-build, two runs
at once, the git remote down or asked for a commit it does not have.

* The killed task is a child Python process running ``publish_variant_wheels`` against a moto bucket
  behind a ``TcpGate`` that holds the second wheel's PUT: the child is SIGKILLed while that upload is
  in flight, the held request is dropped.
* The build runs on a private ``dockerd`` of the test's own; its Dockerfile pulls nothing (``FROM
  scratch``) and ``ADD``s a URL of a server the test holds, so the build is certainly mid-step when
  the daemon is stopped.
* "Two runs at once": the publishing tasks of all runs share the one-slot pool ``rocm_publishing``
  (tests/dags/test_dag_integrity.py::test_writers_of_public_names_share_the_one_slot_pool). If two
  promotions interleave anyway (a pool resized, a task cleared by hand), the compare-and-swap of
  ``move_alias``/``move_nightly_index`` makes the one whose decision is stale fail with AliasMoved
  (transient), and its retry decides again. The interleaving is made exact by holding one run's
  request at a gate while the other run promotes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rocm_release.adapters.git import FatalSourceError, TransientSourceError
from rocm_release.adapters.steps import promote_variant, publish_variant_wheels, push_variant_images, resolve_plan
from rocm_release.adapters.store import observe_published, store_root
from rocm_release.adapters.wheels_alias import alias_commit
from rocm_release.core.build_commands import BuildError
from rocm_release.core.params import ReleaseParams
from rocm_release.core.plan import ReleasePlan
from rocm_release.core.promotion import AliasMoved
from tests.faults.conftest import Repo
from tests.faults.matrix import (
    AS_OF,
    PARENT,
    PARENT_DIGEST,
    VARIANT,
    Night,
    assert_converged,
    assert_truthful,
    plan_for,
    push_night,
    quiet,
    recovered,
    registry_lies,
    store_lies,
    tag_digest,
    world_config,
)
from tests.support.dockerd import DOCKERD, private_dockerd
from tests.support.gates import tcp_gate
from tests.support.git_http import git_http_server
from tests.support.moto import admin_client, set_connection
from tests.support.net import HttpServer, QuietHandler
from tests.support.registries import LocalRegistry
from tests.support.services import REPO

pytestmark = pytest.mark.faults

EVENT_DEADLINE = 60.0


def run_in(thread_result: dict[str, Any], step: Callable[[], Any]) -> threading.Thread:
    """Run ``step`` in a thread; its result or exception lands in ``thread_result``."""

    def target() -> None:
        try:
            thread_result["value"] = step()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            thread_result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------- the task process killed


CHILD = """
import json, sys
import tests.conftest  # the test Airflow environment, as the parent has it
from rocm_release.adapters.steps import publish_variant_wheels
from rocm_release.core.plan import ReleasePlan
job = json.loads(open(sys.argv[1]).read())
plan = ReleasePlan.model_validate(job["plan"])
publish_variant_wheels(plan, plan.variant(job["variant"]), job["refs"], lambda line: print(line, flush=True))
"""


def test_the_task_process_killed_mid_upload_leaves_the_folder_unpublished(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tcp_gate(int(moto_url.rsplit(":", 1)[1])) as gate:
        conn_id = f"faults_s3_{gate.port}"
        set_connection(monkeypatch.setenv, conn_id, gate.url)
        bucket = f"wheels-killed-{gate.port}"
        admin_client("s3", moto_url).create_bucket(Bucket=bucket)
        config = world_config(cache=cache.host, public=cache.host, store_url=f"s3://{bucket}/rocm",
                              store_conn=conn_id, git_url=repo.url)
        plan = plan_for(config, repo.commits[1])
        v = plan.variant(VARIANT)
        night = push_night(cache.url, plan, tmp_path)
        job = tmp_path / "job.json"
        job.write_text(json.dumps({"plan": plan.model_dump(mode="json"), "variant": VARIANT, "refs": night.refs}))
        held = gate.trap(f"PUT /{bucket}/rocm/{plan.commit}/{VARIANT}/".encode(), "hold", nth=2)

        env = {**os.environ, "PYTHONPATH": f"{REPO / 'plugins'}:{REPO}"}
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(job)], env=env, cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            assert held.sprung.wait(EVENT_DEADLINE), "the child never sent its second wheel"
            child.send_signal(signal.SIGKILL)  # the task process dies with the upload in flight
            assert child.wait(30) == -signal.SIGKILL
        finally:
            held.release(let_through=False)
            child.kill()
            output = child.communicate()[0].decode(errors="replace")
        assert "uploaded" in output  # the first wheel went up before the kill

        folder = store_root(v.wheels_url, conn_id)
        assert not observe_published(folder, v.wheels_url).present  # reads as not published, not as wrong
        assert store_lies(plan.store_url, conn_id) == []
        messages: list[str] = []
        with recovered("task process killed mid-upload (SIGKILL)", "publish_wheels"):
            publish_variant_wheels(plan, v, night.refs, messages.append)  # the task's retry
            assert observe_published(folder, v.wheels_url).present
            assert store_lies(plan.store_url, conn_id) == []
        assert sum("already there with sha256" in m for m in messages) == 1


# --------------------------------------------------------------------------- dockerd stopped mid-build


class _Held:
    """The file the Dockerfile ADDs, served only once ``release`` is set (``asked``: a request came)."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.release = threading.Event()
        held = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                held.asked.set()
                held.release.wait(EVENT_DEADLINE)
                body = b"slow but here\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_HEAD = do_GET

        self.server = HttpServer(Handler)

    def close(self) -> None:
        self.release.set()
        self.server.close()


@pytest.fixture
def held_file() -> Iterator[_Held]:
    held = _Held()
    yield held
    held.close()


@pytest.mark.skipif(not Path(DOCKERD).exists() or os.geteuid() != 0, reason="needs dockerd and root")
def test_dockerd_stopped_mid_build_fails_naming_the_daemon_and_pushes_nothing(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, held_file: _Held, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rocm_release.adapters.steps import build_variant_stage

    config = world_config(cache=cache.host, public=cache.host, store_url=f"file://{tmp_path}/store",
                          git_url=repo.url, build_args={"SLOW_URL": f"{held_file.server.url}/slow.txt"})
    plan = plan_for(config, repo.commits[1])
    v = plan.variant(VARIANT)
    monkeypatch.setenv("ROCM_NIGHTLY_DOCKER_CLI", "/usr/bin/docker")
    with private_dockerd(tmp_path, name="faults") as daemon:
        monkeypatch.setenv("DOCKER_HOST", daemon.host)
        lines: list[str] = []
        outcome: dict[str, Any] = {}
        build = run_in(outcome, lambda: build_variant_stage(plan, v, "base", run_id="faults-1", base_ref=None,
                                                            log=lines.append))
        assert held_file.asked.wait(EVENT_DEADLINE), "the build never reached its ADD step:\n" + "\n".join(lines)
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGTERM)  # dockerd stopped mid-build
        daemon.process.wait(60)
        build.join(EVENT_DEADLINE)
        assert not build.is_alive()

        error = outcome.get("error")
        assert isinstance(error, BuildError), outcome
        assert f"build on {daemon.host} failed" in str(error), str(error)
        assert "the daemon does not answer now" in str(error), str(error)
        assert tag_digest(cache.url, plan.cache_repository, v.cache_tags.base) is None  # nothing pushed
        assert registry_lies(cache.url, plan.cache_repository) == []

        held_file.release.set()
        daemon.start()  # the daemon is back (same data root and socket)
        with recovered("dockerd stopped mid-build", "build_base_image"):
            refs = build_variant_stage(plan, v, "base", run_id="faults-2", base_ref=None, log=quiet)
            assert set(refs) == {"base", "base_wheels"}
            for kind in refs:
                tag = v.cache_tags.base if kind == "base" else v.cache_tags.base_wheels
                assert plan.cache_ref(tag_digest(cache.url, plan.cache_repository, tag) or "") == refs[kind]
            assert registry_lies(cache.url, plan.cache_repository) == []


# --------------------------------------------------------------------------- two runs at once


def two_nights(tmp_path: Path, repo: Repo, cache: LocalRegistry, public_host: str,
               store_url: str = "", store_conn: str | None = None) -> tuple[list[ReleasePlan], list[Night],
                                                                            list[dict[str, str]]]:
    """Both commits' images pushed (cache and per-commit public tags) and wheels published; no alias yet."""
    if not store_url:
        (tmp_path / "store").mkdir()
        store_url = f"file://{tmp_path}/store/rocm"
    config = world_config(cache=cache.host, public=public_host, store_url=store_url, store_conn=store_conn,
                          git_url=repo.url)
    plans = [plan_for(config, commit) for commit in repo.commits]
    nights, digests = [], []
    for plan in plans:
        night = push_night(cache.url, plan, tmp_path)
        v = plan.variant(VARIANT)
        digests.append(push_variant_images(plan, v, night.refs, quiet).digests)
        publish_variant_wheels(plan, v, night.refs, quiet)
        nights.append(night)
    return plans, nights, digests


def test_two_promotions_at_once_the_stale_decision_fails_with_alias_moved(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, public: LocalRegistry
) -> None:
    """Images: run A (the older commit) decides while the alias is absent; before A writes, run B (the
    newer commit) promotes; A's compare-and-swap sees B's tag and fails; A's retry leaves B in place."""
    with tcp_gate(public.port) as gate:
        (old, new), nights, digests = two_nights(tmp_path, repo, cache, public.host)
        config_a = world_config(cache=cache.host, public=gate.host, store_url=old.store_url, git_url=repo.url)
        plan_a = plan_for(config_a, old.commit)  # run A reaches the same registry through the gate
        v = plan_a.variant(VARIANT)
        # A's second look at nightly-<variant> (in move_alias, just before its write) waits at the gate.
        held = gate.trap(f"HEAD /v2/{plan_a.public_repository}/manifests/{v.public_tags.nightly} ".encode(),
                         "hold", nth=2)
        outcome: dict[str, Any] = {}
        run_a = run_in(outcome, lambda: promote_variant(plan_a, v, digests[0], quiet))
        assert held.sprung.wait(EVENT_DEADLINE)

        assert promote_variant(new, v, digests[1], quiet)["promoted"]  # run B, meanwhile
        held.release(let_through=True)
        run_a.join(EVENT_DEADLINE)

        error = outcome.get("error")
        assert isinstance(error, AliasMoved), outcome
        assert f"{gate.host}/{plan_a.public_repository}:{v.public_tags.nightly} moved to " \
               f"{nights[1].digests['release']} since the decision (it was absent)" in str(error)
        assert_converged(new, nights[1], cache_url=cache.url, public_url=public.url)
        with recovered("two promotions at once (images)", "promote_nightly (retry of the stale run)"):
            retry = promote_variant(plan_a, v, digests[0], quiet)
            assert not retry["promoted"] and "a newer commit on the branch" in retry["why"]
            assert_converged(new, nights[1], cache_url=cache.url, public_url=public.url)


def test_two_promotions_of_the_nightly_index_at_once(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, public: LocalRegistry, moto_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Wheels: run A (the newer commit) moves the image aliases, decides to move the index while it is
    absent and, before A writes, run B (the older commit) moves it; A fails with AliasMoved; A's retry
    moves it forwards to A."""
    with tcp_gate(int(moto_url.rsplit(":", 1)[1])) as gate:
        bucket = f"wheels-race-{gate.port}"
        admin_client("s3", moto_url).create_bucket(Bucket=bucket)
        direct, gated = f"faults_s3_direct_{gate.port}", f"faults_s3_gated_{gate.port}"
        set_connection(monkeypatch.setenv, direct, moto_url)
        set_connection(monkeypatch.setenv, gated, gate.url)
        store_url = f"s3://{bucket}/rocm"
        (old, _new), nights, digests = two_nights(tmp_path, repo, cache, public.host, store_url, direct)
        config_a = world_config(cache=cache.host, public=public.host, store_url=store_url, store_conn=gated,
                                git_url=repo.url)
        plan_a = plan_for(config_a, repo.commits[1])
        v = plan_a.variant(VARIANT)
        held = gate.trap(f"HEAD /{bucket}/rocm/nightly/{VARIANT}/index.html ".encode(), "hold", nth=2)
        outcome: dict[str, Any] = {}
        run_a = run_in(outcome, lambda: promote_variant(plan_a, v, digests[1], quiet))
        assert held.sprung.wait(EVENT_DEADLINE)

        result_b = promote_variant(old, v, digests[0], quiet)  # run B: the images stay (newer), the index moves
        assert result_b.get("wheels") and not result_b.get("images"), result_b
        held.release(let_through=True)
        run_a.join(EVENT_DEADLINE)

        error = outcome.get("error")
        assert isinstance(error, AliasMoved), outcome
        assert f"{v.nightly_wheels_url} names {old.commit} since the decision (it named nothing)" in str(error)
        assert_truthful(plan_a, cache_url=cache.url, public_url=public.url)
        with recovered("two promotions at once (nightly index)", "promote_nightly (retry of the stale run)"):
            assert promote_variant(plan_a, v, digests[1], quiet)["wheels"]
            assert alias_commit(store_root(v.nightly_wheels_url, gated), v.nightly_wheels_url) == plan_a.commit
            assert_converged(plan_a, nights[1], cache_url=cache.url, public_url=public.url)


def test_two_runs_publishing_one_commit_folder_at_once_agree(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, public: LocalRegistry
) -> None:
    """Two tries of publish_wheels for one commit (a retry started while the first still runs): the
    bytes are the same (re-tagging is deterministic), so both succeed and the folder is complete."""
    (tmp_path / "store").mkdir()
    config = world_config(cache=cache.host, public=public.host, store_url=f"file://{tmp_path}/store/rocm",
                          git_url=repo.url)
    plan = plan_for(config, repo.commits[1])
    v = plan.variant(VARIANT)
    night = push_night(cache.url, plan, tmp_path)
    outcomes: list[dict[str, Any]] = [{}, {}]
    runs = [run_in(outcome, lambda: publish_variant_wheels(plan, v, night.refs, quiet)) for outcome in outcomes]
    for run in runs:
        run.join(EVENT_DEADLINE)
    assert [sorted(o) for o in outcomes] == [["value"], ["value"]], outcomes
    with recovered("two runs publish one folder at once", "publish_wheels"):
        assert observe_published(store_root(v.wheels_url), v.wheels_url).present
        assert_truthful(plan, cache_url=cache.url, public_url=public.url)


# --------------------------------------------------------------------------- the git remote


def test_git_remote_down_during_resolve_is_transient_an_unknown_commit_fatal(
    tmp_path: Path, repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(served / "tinyllm.git")], check=True,
                   capture_output=True)
    monkeypatch.setenv("AIRFLOW_CONN_FAULTS_GIT", json.dumps({"conn_type": "generic", "login": "ci",
                                                              "password": "git-token"}))
    with git_http_server(served, "ci", "git-token") as server, tcp_gate(server.port) as gate:
        config = world_config(cache="127.0.0.1:1", public="127.0.0.1:1", store_url=f"file://{tmp_path}/store",
                              git_url=f"{gate.url}/tinyllm.git", git_conn="faults_git",
                              parent=f"{PARENT}@{PARENT_DIGEST}")

        def resolve(commit: str | None = None) -> ReleasePlan:
            return resolve_plan(config, params=ReleaseParams(commit=commit), run_kind="scheduled", as_of=AS_OF)

        for mirror in ("no mirror yet", "a mirror from an earlier run"):
            if mirror != "no mirror yet":
                assert resolve().commit == repo.commits[1]
            with gate.down(), pytest.raises(TransientSourceError) as caught:
                resolve()
            assert f"fetching in {gate.url}/tinyllm.git" in str(caught.value), mirror
            assert "git-token" not in str(caught.value)

        with pytest.raises(FatalSourceError) as unknown:
            resolve("0" * 40)
        assert f"unknown commit or ref {'0' * 40!r} in {gate.url}/tinyllm.git" in str(unknown.value)
        with recovered("git remote down", "resolve_release"):
            plan = resolve(repo.commits[0])
            assert plan.commit == repo.commits[0]
