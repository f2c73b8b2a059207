"""Whole runs of the real `rocm_nightly_release` DAG (`airflow dags test`) against the local services.

Every row of the decision table, "wheels image cached but not published",
force_rebuild, dry_run (registries and store byte-for-byte unchanged), an older
commit with and without `promote` (nightly never moves back), and bad Params
rejected before any side effect. Each module run uses its own repositories,
store, git mirror cache and Airflow home, so it can't see another's state.

The nights build on each other, like real nights, but no test relies on the
ones before it: each asks for the state its row starts from through a fixture
(`empty`: nothing built; `initial_only`: `initial` released, `source_change`
not; `initial`; `initial_reusable`: released on the base the cache holds now;
`source_change`: both released, `source_change` on the cached base and
`nightly` on it). A fixture looks at the registries and the store and runs
only the nights that are missing, or removes what must not be there (tags and
folders, named by rocm_release.core.plan), so in file order it runs no extra
night, and any single test, or any order, works.
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

from rocm_release.adapters.config_file import load_config
from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.core.plan import (
    LABEL_BASE_DIGEST,
    LABEL_BASE_KEY,
    LABEL_COMMIT,
    base_tag,
    nightly_wheels_prefix,
    public_tag,
    release_tag,
    wheels_prefix,
    wheels_tag,
)
from tests.support.demo import airflow_env, dags_test, demo_config, local_path, make_history, migrate, write_config
from tests.support.net import free_port, wait_for_port
from tests.support.registries import remove_tags

pytestmark = pytest.mark.e2e

DAG_ID = "rocm_nightly_release"
VARIANT = "rocm710"
ALL_BUILDS = ["build_base_image", "build_wheels", "build_release_image"]


class Nights:
    """The test's world: config, registries, store, and a way to run the DAG."""

    def __init__(self, root: Path) -> None:
        self.root = root
        config = demo_config(root, f"e2e-{uuid.uuid4().hex[:8]}", [VARIANT])
        self.config_file = write_config(root / "config.yaml", config)
        self.config = load_config(self.config_file)
        self.store_url = self.config.wheel_store.url
        self.store = local_path(self.store_url)
        self.store.mkdir()
        self.commits = make_history(root / "tinyllm.git")
        self.env = airflow_env(root / "airflow", self.config_file, cache_dir=root / "cache", unit_test_mode=True)
        self.cache = OciRegistry(self.config.cache_registry.host, scheme="http")
        self.public = OciRegistry(self.config.public_registry.host, scheme="http")
        self.cache_repo = self.config.cache_registry.repository
        self.public_repo = self.config.public_registry.repository
        # The `services` fixture exported services.env: both registries' storage folders are named there.
        self.registry_storage = [Path(os.environ[k]) for k in ("ROCM_NIGHTLY_CACHE_REGISTRY_STORAGE",
                                                               "ROCM_NIGHTLY_PUBLIC_REGISTRY_STORAGE")]
        migrate(self.env)

    # -- names (rocm_release.core.plan) ------------------------------------------------------

    def commit(self, label_or_sha: str) -> str:
        return self.commits.get(label_or_sha, label_or_sha)

    def folder(self, label: str) -> Path:
        """The commit's wheel folder, ``<store>/<commit>/<variant>/``."""
        return local_path(wheels_prefix(self.store_url, self.commit(label), VARIANT))

    def public_tag(self, pattern: str, label: str = "") -> str:
        return public_tag(pattern, variant=VARIANT, commit=self.commit(label) if label else "")

    # -- running the DAG ---------------------------------------------------------------------

    def run(self, conf: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        """One `airflow dags test` run with these Params (whatever its outcome)."""
        return dags_test(self.env, DAG_ID, conf)

    def night(self, conf: dict[str, Any]) -> dict[str, Any]:
        """A run that must succeed; returns its release report."""
        proc = self.run(conf)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
        return self.report(conf["commit"])

    def report(self, label: str) -> dict[str, Any]:
        """The variant's entry in the commit's RELEASE.json."""
        report = json.loads((self.store / self.commit(label) / "RELEASE.json").read_text())
        return dict(report["variants"][VARIANT])

    # -- what users see ----------------------------------------------------------------------

    def nightly_commit(self) -> str | None:
        """The commit the public `nightly-<variant>` image tag points to."""
        found = self.public.lookup(self.public_repo, self.public_tag(self.config.public_tags.nightly))
        return self.public.labels(self.public_repo, found.digest).get(LABEL_COMMIT) if found.present else None

    def nightly_index_commit(self) -> str | None:
        """The commit the `nightly/<variant>/` index names."""
        page = local_path(nightly_wheels_prefix(self.store_url, VARIANT)) / "index.html"
        if not page.exists():
            return None
        marker = 'name="rocm-nightly:commit" content="'
        text = page.read_text()
        return text.split(marker, 1)[1].split('"', 1)[0] if marker in text else None

    def cached_base_digest(self, label: str) -> str | None:
        """The digest the cache's base tag has now for the base key the commit's release image was built on."""
        labels = self.cache.labels(self.cache_repo, release_tag(self.commit(label), VARIANT))
        found = self.cache.lookup(self.cache_repo, base_tag(labels[LABEL_BASE_KEY], VARIANT))
        return found.digest if found.present else None

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

    # -- the state a test starts from ---------------------------------------------------------

    def released(self, label: str, *, reusable: bool = False) -> bool:
        """The commit's night is complete: its images cached, its wheels published, its public image there;
        ``reusable``: and its wheels and release images were built on the base the cache holds now (after a
        forced rebuild of the base, a night of an older commit rebuilds them)."""
        commit = self.commit(label)
        images = (wheels_tag(commit, VARIANT), release_tag(commit, VARIANT))
        if not (all(self.cache.lookup(self.cache_repo, tag).present for tag in images)
                and (self.folder(label) / "index.html").exists()
                and (self.store / commit / "RELEASE.json").exists()
                and self.public.lookup(self.public_repo,
                                       self.public_tag(self.config.public_tags.nightly_commit, label)).present):
            return False
        base = self.cached_base_digest(label) if reusable else None
        return not reusable or all(self.cache.labels(self.cache_repo, tag).get(LABEL_BASE_DIGEST) == base
                                   for tag in images)

    def ensure(self, label: str, *, reusable: bool = False) -> Nights:
        """The commit released (promote: true), by a night only when it is not already."""
        if not self.released(label, reusable=reusable):
            self.night({"commit": self.commit(label), "promote": True})
        assert self.released(label, reusable=reusable), label
        return self

    def forget(self, label: str) -> Nights:
        """As if the commit had never been built: its cache images and its wheel folder go (the public
        copies stay: ``nightly-<commit>-<variant>`` may share its manifest with the ``nightly`` alias)."""
        commit = self.commit(label)
        present = [t for t in (wheels_tag(commit, VARIANT), release_tag(commit, VARIANT))
                   if self.cache.lookup(self.cache_repo, t).present]
        if present:
            self.cache.delete_tags(self.cache_repo, present)
        shutil.rmtree(self.store / commit, ignore_errors=True)
        return self

    def reset(self) -> Nights:
        """Nothing built: no tag in either repository, an empty store (removed only when there is something)."""
        if list(self.cache.tag_names(self.cache_repo)) or list(self.public.tag_names(self.public_repo)):
            problems = remove_tags(self.config.cache_registry.host, [self.cache_repo])
            problems += remove_tags(self.config.public_registry.host, [self.public_repo])
            assert not problems, problems
        for entry in self.store.iterdir():
            shutil.rmtree(entry)
        return self


@pytest.fixture(scope="module")
def nights(services: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Nights:
    return Nights(tmp_path_factory.mktemp("e2e"))


@pytest.fixture
def empty(nights: Nights) -> Nights:
    """Nothing built yet."""
    return nights.reset()


@pytest.fixture
def initial(nights: Nights) -> Nights:
    """`initial` released and promoted."""
    return nights.ensure("initial")


@pytest.fixture
def initial_reusable(nights: Nights) -> Nights:
    """`initial` released and promoted, on the base the cache holds now: a night of it reuses everything."""
    return nights.ensure("initial", reusable=True)


@pytest.fixture
def initial_only(initial: Nights) -> Nights:
    """`initial` released; `source_change` (same base key, other source) never built."""
    return initial.forget("source_change")


@pytest.fixture
def source_change(initial: Nights) -> Nights:
    """`initial`, then `source_change` released and promoted on the base the cache holds now: `nightly`
    names `source_change`."""
    nights = initial.ensure("source_change", reusable=True)
    assert nights.nightly_commit() == nights.nightly_index_commit() == nights.commits["source_change"]
    return nights


def _conf(nights: Nights, label: str, **extra: Any) -> dict[str, Any]:
    return {"commit": nights.commits[label], **extra}


def _builds(report: dict[str, Any]) -> list[str]:
    path = report["path"]
    return [] if path.startswith("reused") else path.removeprefix("built: ").split(", ")


def test_row4_nothing_exists_full_rebuild_publishes_and_promotes(empty: Nights) -> None:
    nights = empty
    report = nights.night(_conf(nights, "initial", promote=True))
    assert _builds(report) == ALL_BUILDS
    assert set(report["digests"]) == {"base", "base_wheels", "wheels", "release"}
    assert {w["filename"].split("-")[0] for w in report["wheels"]} == {"tinyllm", "tinytorch"}
    assert all("manylinux_2_28_x86_64" in w["filename"] for w in report["wheels"])
    assert nights.nightly_commit() == nights.commits["initial"]
    assert nights.nightly_index_commit() == nights.commits["initial"]


def test_row1_same_commit_again_reuses_everything(initial_reusable: Nights) -> None:
    nights = initial_reusable
    before = set(nights.cache.tag_names(nights.cache_repo))
    report = nights.night(_conf(nights, "initial", promote=True))
    assert _builds(report) == []
    assert set(nights.cache.tag_names(nights.cache_repo)) == before  # the cache gained no image


def test_row3_source_only_commit_rebuilds_wheels_and_release_on_the_same_base(initial_only: Nights) -> None:
    nights = initial_only
    base = nights.cached_base_digest("initial")
    assert base
    report = nights.night(_conf(nights, "source_change", promote=True))
    assert _builds(report) == ["build_wheels", "build_release_image"]
    assert report["digests"]["base"] == base
    assert nights.nightly_commit() == nights.commits["source_change"]


def test_row2_missing_release_image_rebuilds_only_it(source_change: Nights) -> None:
    nights = source_change
    tag = release_tag(nights.commits["source_change"], VARIANT)
    nights.cache.delete_tags(nights.cache_repo, [tag])
    report = nights.night(_conf(nights, "source_change", promote=True))
    assert _builds(report) == ["build_release_image"]
    assert nights.cache.lookup(nights.cache_repo, tag).present


def test_wheels_image_cached_but_not_published_publishes_without_building(source_change: Nights) -> None:
    nights = source_change
    folder = nights.folder("source_change")
    shutil.rmtree(folder)
    report = nights.night(_conf(nights, "source_change", promote=True))
    assert _builds(report) == []
    assert (folder / "index.html").exists()
    assert {w["filename"].split("-")[0] for w in report["wheels"]} == {"tinyllm", "tinytorch"}


def test_force_rebuild_builds_everything(source_change: Nights) -> None:
    nights = source_change
    report = nights.night(_conf(nights, "source_change", promote=True, force_rebuild=True))
    assert _builds(report) == ALL_BUILDS
    assert all("force_rebuild" in reason for reason in report["reasons"])


def test_dry_run_changes_nothing_in_registries_or_store(initial: Nights) -> None:
    nights = initial
    before = nights.snapshot()
    proc = nights.run(_conf(nights, "base_change", dry_run=True))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert "DRY RUN" in proc.stdout + proc.stderr
    assert "would run ['build_base_image', 'build_wheels', 'build_release_image']" in proc.stdout + proc.stderr
    assert nights.snapshot() == before


@pytest.mark.parametrize("promote", [False, True])
def test_older_commit_publishes_its_artifacts_and_never_moves_nightly_back(source_change: Nights,
                                                                           promote: bool) -> None:
    nights = source_change
    shutil.rmtree(nights.folder("initial"))
    report = nights.night(_conf(nights, "initial", promote=promote))
    assert (nights.folder("initial") / "index.html").exists()
    commit_tag = nights.public_tag(nights.config.public_tags.nightly_commit, "initial")
    assert nights.public.lookup(nights.public_repo, commit_tag).present
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


def test_pip_installs_the_published_wheels_over_http_and_their_tags_agree(source_change: Nights,
                                                                          tmp_path: Path) -> None:
    """The per-commit index, served over HTTP, installs the retagged project wheel and its base wheel."""
    import zipfile

    nights = source_change
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                               str(nights.store), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, alive=lambda: server.poll() is None)
        venv = tmp_path / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        index = wheels_prefix(f"http://127.0.0.1:{port}", nights.commits["source_change"], VARIANT)
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
    for wheel in sorted(nights.folder("source_change").glob("*.whl")):
        unpacked = tmp_path / wheel.stem
        subprocess.run([sys.executable, "-m", "wheel", "unpack", "--dest", str(unpacked), str(wheel)], check=True)
        wheel_file = next(unpacked.glob("*/*.dist-info/WHEEL"))
        tags = {line.split(": ", 1)[1] for line in wheel_file.read_text().splitlines() if line.startswith("Tag: ")}
        name_tags = wheel.name[:-4].split("-")[-3:]
        assert tags == {"-".join(name_tags)}, (wheel.name, tags)
        assert zipfile.ZipFile(wheel).testzip() is None
