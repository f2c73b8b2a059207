"""The hashed lock: `make lock-check` passes on the shipped files, and fails when an input changes without it.

These run the real check (tools/lock.py, i.e. `uv pip compile` against PyPI as it was at the
tool's EXCLUDE_NEWER; uv's cache makes a repeat take a second or two) on the repo, or on a copy
of the files it reads in a temporary folder.
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
    """The files the check reads (requirements*.txt, pyproject.toml, the locks), copied under ``to``; and
    proof that the copy passes as it is (so a failure after a change comes from the change)."""
    for name in lock.INPUTS:
        shutil.copy2(REPO_ROOT / name, to / name)
    (to / "requirements").mkdir()
    if locks:
        for python in lock.PYTHONS:
            shutil.copy2(lock.lock_path(python), lock.lock_path(python, to))
        unchanged = run_check(to)
        assert unchanged.returncode == 0, unchanged.stderr
    return to


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
    assert "+tomli-w==" in proc.stderr  # the difference is shown


def test_pyproject_dependency_changed_without_the_lock_fails(tmp_path: Path) -> None:
    root = copy_inputs(tmp_path)
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    assert '"httpx>=0.28,<1",' in text
    pyproject.write_text(text.replace('"httpx>=0.28,<1",', '"httpx>=0.28,<1",\n    "tomli-w>=1.0",'))
    proc = run_check(root)
    assert proc.returncode == 1
    assert "out of date" in proc.stderr and "+tomli-w==" in proc.stderr


def test_missing_lock_fails(tmp_path: Path) -> None:
    root = copy_inputs(tmp_path, locks=False)
    proc = run_check(root)
    assert proc.returncode == 1
    assert "requirements/lock-py311.txt is missing: run `make lock`" in proc.stderr


def test_every_locked_distribution_is_pinned_and_hashed() -> None:
    """What `pip install --require-hashes --no-deps` needs: one `name==version` and its sha256s per entry."""
    for python in lock.PYTHONS:
        entries = lock.lock_path(python).read_text().replace("\\\n", " ").splitlines()
        names = []
        for entry in entries:
            if not entry.strip() or entry.lstrip().startswith("#"):
                continue
            requirement, *options = entry.split(" --hash=")
            req = Requirement(requirement.strip())
            assert [s.operator for s in req.specifier] == ["=="], entry
            assert options and all(o.strip().startswith("sha256:") for o in options), entry
            names.append(canonicalize_name(req.name))
        assert len(names) == len(set(names))
        # Our own package is installed apart (a directory has no hash); pip and setuptools are locked too.
        assert lock.OWN not in names and {"pip", "setuptools", "uv", "apache-airflow"} <= set(names)


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
