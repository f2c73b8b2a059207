"""The hashed lock: `make lock-check` passes on the shipped files, and fails when an input changes without it.

These run the real check (tools/lock.py, i.e. `uv pip compile` against PyPI as it was at the
tool's EXCLUDE_NEWER; with uv's cache a few seconds each) on the repo, or on a copy of the files
it reads in a temporary folder, changed.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from rocm_release.adapters.config_file import REPO_ROOT

TOOL = REPO_ROOT / "tools" / "lock.py"
_spec = importlib.util.spec_from_file_location("lock", TOOL)
assert _spec and _spec.loader
lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock)


def run_check(root: Path) -> subprocess.CompletedProcess[str]:
    """`make lock-check`'s command, on the files under ``root``."""
    return subprocess.run([sys.executable, str(TOOL), "check", "--root", str(root)],
                          capture_output=True, text=True, timeout=600, check=False)


def copy_inputs(to: Path, *, locks: bool = True) -> Path:
    """The files the check reads (requirements*.txt, pyproject.toml, the locks), copied under ``to``."""
    for name in lock.INPUTS:
        shutil.copy2(REPO_ROOT / name, to / name)
    (to / "requirements").mkdir()
    if locks:
        for path in lock.all_paths():
            shutil.copy2(path, to / path.relative_to(REPO_ROOT))
    return to


def only_added(stderr: str) -> list[str]:
    """The lines the check's differences add; fails if it shows a line removed (then something besides
    the test's addition would differ, and the failure would prove nothing)."""
    diff = [line for line in stderr.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert diff and not [line for line in diff if line.startswith("-")], stderr
    return diff


def test_shipped_lock_matches_its_inputs() -> None:
    proc = run_check(REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "match" in proc.stdout


def test_requirements_txt_changed_without_the_lock_fails(tmp_path: Path) -> None:
    root = copy_inputs(tmp_path)
    with (root / "requirements.txt").open("a") as reqs:
        reqs.write("tomli-w>=1.0\n")
    proc = run_check(root)
    assert proc.returncode == 1
    assert "requirements/lock-py311.txt is out of date" in proc.stderr and "Run `make lock`" in proc.stderr
    assert "requirements/deploy-py311.txt is out of date" in proc.stderr  # a deployment installs it too
    assert "+tomli-w==1.2.0 \\" in only_added(proc.stderr)  # the difference is shown, and it is only that


def test_pyproject_dependency_changed_without_the_lock_fails(tmp_path: Path) -> None:
    root = copy_inputs(tmp_path)
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    assert '"httpx>=0.28,<1",' in text
    pyproject.write_text(text.replace('"httpx>=0.28,<1",', '"httpx>=0.28,<1",\n    "tomli-w>=1.0",'))
    proc = run_check(root)
    assert proc.returncode == 1
    assert "out of date" in proc.stderr and "+tomli-w==1.2.0 \\" in only_added(proc.stderr)


def test_missing_lock_fails(tmp_path: Path) -> None:
    root = copy_inputs(tmp_path, locks=False)
    proc = run_check(root)
    assert proc.returncode == 1
    assert "requirements/lock-py311.txt is missing: run `make lock`" in proc.stderr


def pins(path: Path) -> dict[str, str]:
    """name → version of a lock, checking what `pip install --require-hashes --no-deps` needs: one
    `name==version` with its sha256s per entry, each name once."""
    found: dict[str, str] = {}
    for entry in path.read_text().replace("\\\n", " ").splitlines():
        if not entry.strip() or entry.lstrip().startswith("#"):
            continue
        requirement, *options = entry.split(" --hash=")
        req = Requirement(requirement.strip())
        assert [s.operator for s in req.specifier] == ["=="], entry
        assert options and all(o.strip().startswith("sha256:") for o in options), entry
        name = canonicalize_name(req.name)
        assert name not in found, entry
        found[name] = next(iter(req.specifier)).version
    return found


def test_every_locked_distribution_is_pinned_and_hashed() -> None:
    for python in lock.PYTHONS:
        dev = pins(lock.lock_path(python))
        # Our own package is installed apart (a directory has no hash); pip and setuptools are locked too.
        assert lock.OWN not in dev and {"pip", "setuptools", "uv", "apache-airflow"} <= set(dev)


def test_the_deployment_lock_has_the_tested_versions_and_no_test_tools() -> None:
    for python in lock.PYTHONS:
        dev, deploy = pins(lock.lock_path(python)), pins(lock.deploy_path(python))
        assert {name: dev.get(name) for name in deploy} == deploy
        assert {"apache-airflow", "apache-airflow-providers-amazon", "apache-airflow-providers-celery",
                "apache-airflow-providers-docker", "s3fs", "httpx", "wheel"} <= set(deploy)
        assert not {"pytest", "moto", "hypothesis", "ruff", "mypy", "uv", lock.OWN} & set(deploy)


def test_requirements_txt_repeats_pyprojects_airflow_and_provider_ranges() -> None:
    """requirements.txt names Airflow and the providers (for platforms that install it without the project)
    exactly as pyproject.toml's dependencies do, and installs the project itself (`.`)."""
    declared = {
        canonicalize_name(r.name): r
        for r in map(Requirement, tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    }
    lines = [line.split("#", 1)[0].strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
    lines = [line for line in lines if line]
    assert "." in lines
    named = [Requirement(line) for line in lines if line != "."]
    assert named and all(canonicalize_name(r.name).startswith("apache-airflow") for r in named)
    for req in named:
        assert str(declared[canonicalize_name(req.name)]) == str(req), req
    airflow = {n for n in declared if n.startswith("apache-airflow")}
    assert {canonicalize_name(r.name) for r in named} == airflow
