"""The lock check: requirements.txt and requirements.lock agree, and a disagreement fails."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rocm_release.adapters.config_file import REPO_ROOT

_spec = importlib.util.spec_from_file_location("lock", REPO_ROOT / "tools" / "lock.py")
assert _spec and _spec.loader
lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock)


def test_shipped_files_agree() -> None:
    assert lock.check() == []


def test_version_mismatch_is_reported(tmp_path: Path) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(lock.REQUIREMENTS.read_text().replace("pydantic==", "pydantic==0.0.1+"))
    assert any("pydantic: requirements.txt pins 0.0.1+" in p for p in lock.check(reqs, lock.LOCK))


def test_missing_transitive_dependency_is_reported(tmp_path: Path) -> None:
    locked = tmp_path / "requirements.lock"
    locked.write_text("".join(
        line + "\n" for line in lock.LOCK.read_text().splitlines() if not line.startswith("s3fs==")
    ))
    problems = lock.check(lock.REQUIREMENTS, locked)
    assert any(p.startswith("s3fs") and "missing from requirements.lock" in p for p in problems), problems


def test_unpinned_line_is_refused(tmp_path: Path) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pydantic>=2\n")
    try:
        lock.check(reqs, lock.LOCK)
    except SystemExit as exc:
        assert "not pinned" in str(exc)
    else:
        raise AssertionError("an unpinned requirement passed the check")
