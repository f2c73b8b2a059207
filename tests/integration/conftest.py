"""Fixtures of the integration tests: ``store``, every publishing test once per wheel store."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.stores import Store, make_store


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A ``file://`` folder, then a bucket on a moto server of the test module's own (tests/conftest.py)."""
    return make_store(request.param, tmp_path, lambda: str(request.getfixturevalue("moto_url")), monkeypatch.setenv)
