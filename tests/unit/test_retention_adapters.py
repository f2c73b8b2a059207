"""Retention's deleting (rocm_release.adapters.retention): order, the guard, refusals — a local store, no services."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem

from rocm_release.adapters.retention import apply_retention, delete_wheel_folder
from rocm_release.core.plan import release_tag, wheels_tag
from rocm_release.core.retention import RetentionPlan, WheelFolder
from rocm_release.core.retention_recheck import CurrentState
from tests.unit.retention_scenes import (
    CACHE,
    KEY_USED,
    PUBLIC,
    STORE,
    V1,
    base,
    built,
    day,
    digest,
    make_inputs,
    make_plan,
    public_night,
    sha,
)


@dataclass
class FakeRegistry:
    """Records deletions; the registry itself is tested elsewhere (unit + integration)."""

    name: str
    log: list[str]
    deleted: list[list[str]] = field(default_factory=list)

    def delete_tags(self, repository: str, tags: Sequence[str]) -> None:
        self.deleted.append(list(tags))
        self.log.append(f"tags {self.name}")


@dataclass
class LocalStore:
    root: Path
    fs: Any = field(default_factory=LocalFileSystem)

    @property
    def path(self) -> str:
        return str(self.root)

    def __truediv__(self, other: str) -> Any:
        return self.root / other


def _apply_scene(tmp_path: Path) -> tuple[RetentionPlan, dict[str, Any], LocalStore, list[str]]:
    old, new = sha(1), sha(2)
    for name in (old, new, "nightly"):
        (tmp_path / name / V1).mkdir(parents=True)
        (tmp_path / name / V1 / "index.html").write_text("x")
    cache = built(old, day(1)) + built(new, day(2)) + base(KEY_USED, day(0))
    plan = make_plan(make_inputs(cache, public_night(old) + public_night(new), keep=1, public_by_digest=False,
                                 folders=[WheelFolder(old), WheelFolder(new), WheelFolder("nightly")]))
    order: list[str] = []
    targets = {CACHE.location: (FakeRegistry("cache", order), CACHE.repository),
               PUBLIC.location: (FakeRegistry("public", order), PUBLIC.repository)}
    return plan, targets, LocalStore(tmp_path), order


def test_apply_deletes_public_tags_then_folders_then_cache_tags(tmp_path: Path) -> None:
    plan, targets, store, order = _apply_scene(tmp_path)
    logged: list[str] = []

    applied = apply_retention(plan.delete, targets=targets, cache_location=CACHE.location, store=store,
                              store_url=STORE, log=logged.append)

    assert order == ["tags public", "tags cache"]
    assert logged.index(f"{STORE}/{sha(1)}/: deleted") < logged.index(f"{CACHE.location}: deleting 2 tags")
    assert not (tmp_path / sha(1)).exists() and (tmp_path / sha(2)).exists() and (tmp_path / "nightly").exists()
    assert targets[CACHE.location][0].deleted == [[wheels_tag(sha(1), V1), release_tag(sha(1), V1)]]
    assert applied.folders_deleted == 1 and applied.tags_deleted == {PUBLIC.location: 2, CACHE.location: 2}

    again = apply_retention(plan.delete, targets=targets, cache_location=CACHE.location, store=store,
                            store_url=STORE, log=logged.append)  # a retry converges
    assert again.folders_deleted == 1 and f"{STORE}/{sha(1)}/: already gone" in logged


def test_apply_skips_what_a_nightly_alias_points_to_now(tmp_path: Path) -> None:
    plan, targets, store, _ = _apply_scene(tmp_path)
    now = CurrentState(alias_digests=frozenset({digest(f"r{sha(1)}{V1}")}))
    applied = apply_retention(plan.delete, targets=targets, cache_location=CACHE.location, store=store,
                              store_url=STORE, log=lambda _: None, current=now)

    assert (tmp_path / sha(1)).exists()  # the whole commit stays, not only the aliased image
    assert targets[CACHE.location][0].deleted == []
    assert len(applied.skipped) == 5


def test_apply_refuses_keep_decisions_and_only_deletes_commit_folders(tmp_path: Path) -> None:
    plan, targets, store, _ = _apply_scene(tmp_path)
    with pytest.raises(ValueError, match="'keep' decision"):
        apply_retention(plan.keep, targets=targets, cache_location=CACHE.location, store=store, store_url=STORE,
                        log=lambda _: None)
    for name in ("nightly", "", "..", f"{sha(1)}/..", "/"):
        with pytest.raises(ValueError, match="refusing to delete"):
            delete_wheel_folder(store, STORE, name)
    assert (tmp_path / "nightly").exists()
