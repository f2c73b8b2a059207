"""Whole runs of the real `rocm_nightly_release` DAG (`airflow dags test`) against the local services.

The nights run in file order and build on each other, like real nights:
every row of the decision table, "wheels image cached but not published",
force_rebuild, dry_run (registries and store byte-for-byte unchanged), an older
commit with and without `promote` (nightly never moves back), and bad Params
rejected before any side effect. Each module run uses its own repositories,
store, git mirror cache and Airflow home, so it can't see another's state.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.core.plan import LABEL_COMMIT
from tests.conftest import REPO, TEST_ENV
from tests.e2e.conftest import import_pools_and_connections

pytestmark = pytest.mark.e2e

AIRFLOW = str(Path(sys.executable).parent / "airflow")
DAG_ID = "rocm_nightly_release"
VARIANT = "rocm710"
ALL_BUILDS = ["build_base_image", "build_wheels", "build_release_image"]


class Nights:
    """The test's world: config, registries, store, and a way to run the DAG."""

    def __init__(self, root: Path, services: dict[str, Any]) -> None:
        self.root = root
        run_id = uuid.uuid4().hex[:8]
        demo = yaml.safe_load((REPO / "include" / "config" / "demo.yaml").read_text())
        demo["project"]["git_url"] = f"file://{root}/tinyllm.git"
        demo["variants"] = [v for v in demo["variants"] if v["name"] == VARIANT]
        demo["cache_registry"]["repository"] = f"e2e-{run_id}/tinyllm"
        demo["public_registry"]["repository"] = f"e2e-{run_id}/tinyllm-rocm"
        demo["wheel_store"]["url"] = f"file://{root}/wheels"
        self.config_file = root / "config.yaml"
        self.config_file.write_text(yaml.safe_dump(demo))
        self.config = demo
        self.store = root / "wheels"
        self.store.mkdir()
        out = subprocess.run([sys.executable, str(REPO / "include" / "demo" / "make_history.py"),
                              str(root / "tinyllm.git")], capture_output=True, text=True, check=True)
        self.commits: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
        self.env = {
            **os.environ, **TEST_ENV,
            "AIRFLOW_HOME": str(root / "airflow"),
            "ROCM_NIGHTLY_CONFIG": str(self.config_file),
            "ROCM_NIGHTLY_CACHE_DIR": str(root / "cache"),
        }
        self.cache = OciRegistry(demo["cache_registry"]["host"], scheme="http")
        self.public = OciRegistry(demo["public_registry"]["host"], scheme="http")
        self.cache_repo = demo["cache_registry"]["repository"]
        self.public_repo = demo["public_registry"]["repository"]
        # The `services` fixture exported services.env: both registries' storage folders are named there.
        self.registry_storage = [Path(os.environ[k]) for k in ("ROCM_NIGHTLY_CACHE_REGISTRY_STORAGE",
                                                               "ROCM_NIGHTLY_PUBLIC_REGISTRY_STORAGE")]
        subprocess.run([AIRFLOW, "db", "migrate"], env=self.env, capture_output=True, check=True)
        import_pools_and_connections(AIRFLOW, self.env)  # as the demo does

    def run(self, conf: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        """One `airflow dags test` run with these Params (whatever its outcome)."""
        return subprocess.run([AIRFLOW, "dags", "test", DAG_ID, "-c", json.dumps(conf)], env=self.env,
                              capture_output=True, text=True, check=False, timeout=900)

    def night(self, conf: dict[str, Any]) -> dict[str, Any]:
        """A run that must succeed; returns its release report."""
        proc = self.run(conf)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
        commit = self.commits[conf["commit"]] if conf.get("commit") in self.commits else conf["commit"]
        return json.loads((self.store / commit / "RELEASE.json").read_text())["variants"][VARIANT]

    def nightly_commit(self) -> str | None:
        """The commit the public `nightly-<variant>` image tag points to."""
        found = self.public.lookup(self.public_repo, f"nightly-{VARIANT}")
        return self.public.labels(self.public_repo, found.digest).get(LABEL_COMMIT) if found.present else None

    def nightly_index_commit(self) -> str | None:
        """The commit the `nightly/<variant>/` index names."""
        page = self.store / "nightly" / VARIANT / "index.html"
        if not page.exists():
            return None
        marker = 'name="rocm-nightly:commit" content="'
        text = page.read_text()
        return text.split(marker, 1)[1].split('"', 1)[0] if marker in text else None

    def snapshot(self) -> dict[str, str]:
        """sha256 of every file of this test's repositories in both registries' storage, and of the store.

        Any push (blob or manifest) to a repository writes under its folder, and
        other tests' repositories are left out, so concurrent runs don't interfere.
        """
        repos = [storage / "docker" / "registry" / "v2" / "repositories" / repo.split("/")[0]
                 for storage, repo in zip(self.registry_storage, (self.cache_repo, self.public_repo), strict=True)]
        assert all(s.is_dir() for s in self.registry_storage), f"no registry storage at {self.registry_storage}"
        digests = {}
        for folder in [*repos, self.store]:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    digests[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        return digests


@pytest.fixture(scope="module")
def nights(services: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Nights:
    return Nights(tmp_path_factory.mktemp("e2e"), services)


def _conf(nights: Nights, label: str, **extra: Any) -> dict[str, Any]:
    return {"commit": nights.commits[label], **extra}


def _builds(report: dict[str, Any]) -> list[str]:
    path = report["path"]
    return [] if path.startswith("reused") else path.removeprefix("built: ").split(", ")


def test_row4_nothing_exists_full_rebuild_publishes_and_promotes(nights: Nights) -> None:
    report = nights.night(_conf(nights, "initial", promote=True))
    assert _builds(report) == ALL_BUILDS
    assert set(report["digests"]) == {"base", "base_wheels", "wheels", "release"}
    assert {w["filename"].split("-")[0] for w in report["wheels"]} == {"tinyllm", "tinytorch"}
    assert all("manylinux_2_28_x86_64" in w["filename"] for w in report["wheels"])
    assert nights.nightly_commit() == nights.commits["initial"]
    assert nights.nightly_index_commit() == nights.commits["initial"]


def test_row1_same_commit_again_reuses_everything(nights: Nights) -> None:
    before = set(nights.cache.tag_names(nights.cache_repo))
    report = nights.night(_conf(nights, "initial", promote=True))
    assert _builds(report) == []
    assert set(nights.cache.tag_names(nights.cache_repo)) == before  # the cache gained no image


def test_row3_source_only_commit_rebuilds_wheels_and_release_on_the_same_base(nights: Nights) -> None:
    first = json.loads((nights.store / nights.commits["initial"] / "RELEASE.json").read_text())
    report = nights.night(_conf(nights, "source_change", promote=True))
    assert _builds(report) == ["build_wheels", "build_release_image"]
    assert report["digests"]["base"] == first["variants"][VARIANT]["digests"]["base"]
    assert nights.nightly_commit() == nights.commits["source_change"]


def test_row2_missing_release_image_rebuilds_only_it(nights: Nights) -> None:
    tag = f"{nights.commits['source_change']}-{VARIANT}"
    nights.cache.delete_tags(nights.cache_repo, [tag])
    report = nights.night(_conf(nights, "source_change", promote=True))
    assert _builds(report) == ["build_release_image"]
    assert nights.cache.lookup(nights.cache_repo, tag).present


def test_wheels_image_cached_but_not_published_publishes_without_building(nights: Nights) -> None:
    folder = nights.store / nights.commits["source_change"] / VARIANT
    shutil.rmtree(folder)
    report = nights.night(_conf(nights, "source_change", promote=True))
    assert _builds(report) == []
    assert (folder / "index.html").exists()
    assert {w["filename"].split("-")[0] for w in report["wheels"]} == {"tinyllm", "tinytorch"}


def test_force_rebuild_builds_everything(nights: Nights) -> None:
    report = nights.night(_conf(nights, "source_change", promote=True, force_rebuild=True))
    assert _builds(report) == ALL_BUILDS
    assert all("force_rebuild" in reason for reason in report["reasons"])


def test_dry_run_changes_nothing_in_registries_or_store(nights: Nights) -> None:
    before = nights.snapshot()
    proc = nights.run(_conf(nights, "base_change", dry_run=True))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert "DRY RUN" in proc.stdout + proc.stderr
    assert "would run ['build_base_image', 'build_wheels', 'build_release_image']" in proc.stdout + proc.stderr
    assert nights.snapshot() == before


@pytest.mark.parametrize("promote", [False, True])
def test_older_commit_publishes_its_artifacts_and_never_moves_nightly_back(nights: Nights, promote: bool) -> None:
    shutil.rmtree(nights.store / nights.commits["initial"] / VARIANT)
    report = nights.night(_conf(nights, "initial", promote=promote))
    assert (nights.store / nights.commits["initial"] / VARIANT / "index.html").exists()
    assert nights.public.lookup(nights.public_repo, f"nightly-{nights.commits['initial']}-{VARIANT}").present
    assert nights.nightly_commit() == nights.commits["source_change"]
    assert nights.nightly_index_commit() == nights.commits["source_change"]
    if promote:
        assert "newer commit" in report["promotion"]["why"]


@pytest.mark.parametrize(
    "conf, named",
    [
        ({"commit": "not a sha!"}, "commit"),
        ({"commit": "main; touch /tmp/pwned"}, "commit"),
        ({"commit": "$(touch /tmp/pwned)"}, "commit"),
        ({"variants": ["rocm999"]}, "variants"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_params_are_rejected_before_any_side_effect(nights: Nights, conf: dict[str, Any], named: str) -> None:
    before = nights.snapshot()
    proc = nights.run(conf)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"param {named}" in output or f"param '{named}'" in output, output[-4000:]
    assert not Path("/tmp/pwned").exists()
    assert nights.snapshot() == before


def test_pip_installs_the_published_wheels_over_http_and_their_tags_agree(nights: Nights, tmp_path: Path) -> None:
    """The per-commit index, served over HTTP, installs the retagged project wheel and its base wheel."""
    import socket
    import time
    import zipfile

    commit = nights.commits["source_change"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                               str(nights.store), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:  # poll readiness with a deadline
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "index server did not start"
                time.sleep(0.05)
        venv = tmp_path / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        index = f"http://127.0.0.1:{port}/{commit}/{VARIANT}/"
        pip = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-cache-dir", "--index-url", index, "tinyllm"],
            env={**os.environ, "PIP_CONFIG_FILE": os.devnull}, capture_output=True, text=True, check=False,
        )
        assert pip.returncode == 0, pip.stdout + pip.stderr
        assert "tinytorch" in pip.stdout and "manylinux_2_28_x86_64" in pip.stdout
        run = subprocess.run([str(venv / "bin" / "python"), "-c", "import tinyllm; print(tinyllm.__version__)"],
                             capture_output=True, text=True, check=True)
        assert run.stdout.strip() == "0.1.1"
    finally:
        server.terminate()
        server.wait(timeout=10)
    for wheel in sorted((nights.store / commit / VARIANT).glob("*.whl")):
        unpacked = tmp_path / wheel.stem
        subprocess.run([sys.executable, "-m", "wheel", "unpack", "--dest", str(unpacked), str(wheel)], check=True)
        wheel_file = next(unpacked.glob("*/*.dist-info/WHEEL"))
        tags = {line.split(": ", 1)[1] for line in wheel_file.read_text().splitlines() if line.startswith("Tag: ")}
        name_tags = wheel.name[:-4].split("-")[-3:]
        assert tags == {"-".join(name_tags)}, (wheel.name, tags)
        assert zipfile.ZipFile(wheel).testzip() is None
