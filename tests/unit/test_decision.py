"""DESIGN.md's decision table, over every combination of observations and force_rebuild."""

from __future__ import annotations

import itertools

import pytest

from rocm_release.core.decision import BUILD_ORDER, Observation, decide
from rocm_release.core.plan import LABEL_BASE_DIGEST, LABEL_BASE_KEY

KEY = "0123456789abcdef"
BASE_DIGEST = "sha256:" + "b" * 64
ON_BASE = {LABEL_BASE_KEY: KEY, LABEL_BASE_DIGEST: BASE_DIGEST}


def _obs(present: bool, labels: dict[str, str] | None = None, digest: str = "sha256:" + "c" * 64) -> Observation:
    if not present:
        return Observation(present=False, reason="not in the registry")
    return Observation(present=True, digest=digest, labels=ON_BASE if labels is None else labels)


def _table(base: bool, wheels: bool, release: bool) -> tuple[str, ...]:
    """DESIGN.md's table, written out row by row."""
    if not base:
        return ("build_base_image", "build_wheels", "build_release_image")
    if not wheels:
        return ("build_wheels", "build_release_image")
    if not release:
        return ("build_release_image",)
    return ()


@pytest.mark.parametrize(
    "base, wheels, release, published, force", list(itertools.product([True, False], repeat=5))
)
def test_every_combination_follows_the_table(
    base: bool, wheels: bool, release: bool, published: bool, force: bool
) -> None:
    decision = decide(
        base=_obs(base, digest=BASE_DIGEST),
        wheels_image=_obs(wheels),
        release_image=_obs(release),
        wheels_published=_obs(published),
        base_key=KEY,
        force_rebuild=force,
    )
    expected = BUILD_ORDER if force else _table(base, wheels, release)
    assert decision.builds == expected
    assert decision.reuse == (expected == ())
    # Publishing needs the base unit and a wheels image: both exist or get built.
    assert decision.base.present or "build_base_image" in decision.builds
    assert decision.wheels_image.present or "build_wheels" in decision.builds
    if force:
        assert all("force_rebuild" in r for r in decision.reasons)


@pytest.mark.parametrize(
    "labels, why",
    [
        ({LABEL_BASE_KEY: "ffffffffffffffff", LABEL_BASE_DIGEST: BASE_DIGEST}, "base key"),
        ({LABEL_BASE_KEY: KEY, LABEL_BASE_DIGEST: "sha256:" + "e" * 64}, "the cache now holds"),
        ({}, "base key"),
    ],
)
def test_image_on_another_base_counts_as_absent(labels: dict[str, str], why: str) -> None:
    decision = decide(
        base=_obs(True, digest=BASE_DIGEST),
        wheels_image=_obs(True, labels=labels),
        release_image=_obs(True),
        wheels_published=_obs(True),
        base_key=KEY,
        force_rebuild=False,
    )
    assert decision.builds == ("build_wheels", "build_release_image")
    assert why in decision.wheels_image.reason
    assert not decision.wheels_published.present  # rebuilt wheels are published again


def test_stale_release_image_alone_is_rebuilt() -> None:
    decision = decide(
        base=_obs(True, digest=BASE_DIGEST),
        wheels_image=_obs(True),
        release_image=_obs(True, labels={LABEL_BASE_KEY: KEY, LABEL_BASE_DIGEST: "sha256:" + "0" * 64}),
        wheels_published=_obs(False),
        base_key=KEY,
        force_rebuild=False,
    )
    assert decision.builds == ("build_release_image",)
    assert "release image was built on base" in decision.release_image.reason


def test_reasons_say_what_was_seen() -> None:
    decision = decide(
        base=_obs(True, digest=BASE_DIGEST),
        wheels_image=_obs(True),
        release_image=_obs(True),
        wheels_published=_obs(False),
        base_key=KEY,
        force_rebuild=False,
    )
    assert decision.reuse
    assert decision.reasons[3] == "published wheels: absent — not in the registry"
