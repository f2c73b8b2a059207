"""Fixtures of the fault matrix: a git repository, a host cache of each test's own, throwaway registries."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.matrix import make_repo
from tests.support.registries import REGISTRY_BIN, LocalRegistry, running_registry


@dataclass(frozen=True)
class Repo:
    """The project's repository: its URL, folder, and two commits on ``main`` (older first)."""

    url: str
    path: Path
    commits: list[str]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    path = tmp_path_factory.mktemp("project") / "tinyllm"
    commits = make_repo(path)
    return Repo(f"file://{path}", path, commits)


@pytest.fixture(autouse=True)
def host_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's ``ROCM_NIGHTLY_CACHE_DIR`` (git mirrors): nothing is shared between tests."""
    monkeypatch.setenv("ROCM_NIGHTLY_CACHE_DIR", str(tmp_path / "host-cache"))
    return tmp_path / "host-cache"


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[LocalRegistry]:
    """A cache registry of this test's own (it may stop and restart it: same port, same storage)."""
    if not REGISTRY_BIN.exists():
        pytest.skip("needs Debian docker-registry (/usr/bin/docker-registry)")
    with running_registry(tmp_path / "cache-registry") as registry:
        yield registry


@pytest.fixture
def public(tmp_path: Path) -> Iterator[LocalRegistry]:
    """A public registry of this test's own."""
    if not REGISTRY_BIN.exists():
        pytest.skip("needs Debian docker-registry (/usr/bin/docker-registry)")
    with running_registry(tmp_path / "public-registry") as registry:
        yield registry
