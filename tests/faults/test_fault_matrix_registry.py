"""Fault matrix, registries: outages, 503s, lies, corrupted storage and refused credentials.

Every test runs the step function an Airflow task runs (``adapters/steps.py``) against throwaway
``docker-registry`` processes of its own, injects one fault, and checks the three things of issue #11:
(a) no page or alias names anything missing or unverified (``assert_truthful``), (b) the same step
run again after the fault is removed converges (timed by ``recovered``), (c) the error names what
failed. Registry outages during ``docker push``, the image copy and the wheels publish (with the
tasks' retries) are the ``retries`` branch's DAG-level tests, not repeated here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rocm_release.adapters.steps import observe_artifact
from rocm_release.core.registry import TransientRegistryError
from tests.faults.conftest import Repo
from tests.faults.support import (
    VARIANT,
    assert_converged,
    assert_truthful,
    plan_for,
    publish_night,
    push_night,
    recovered,
    world_config,
)
from tests.support.registries import LocalRegistry

pytestmark = pytest.mark.faults

IMAGES = ("base_image", "wheels_image", "release_image")


def file_store(tmp_path: Path) -> str:
    (tmp_path / "store").mkdir(exist_ok=True)
    return f"file://{tmp_path}/store/rocm"


def test_a_night_without_faults_converges(tmp_path: Path, repo: Repo, cache: LocalRegistry,
                                          public: LocalRegistry) -> None:
    """The harness itself: a night publishes, and the checker finds nothing to complain about."""
    config = world_config(cache=cache.host, public=public.host, store_url=file_store(tmp_path), git_url=repo.url)
    plan = plan_for(config, repo.commits[1])
    night = push_night(cache.url, plan, tmp_path)

    result = publish_night(plan, night)

    assert result["promoted"], result
    assert_converged(plan, night, cache_url=cache.url, public_url=public.url)


def test_cache_registry_down_during_the_sensors_is_transient_never_absent(
    tmp_path: Path, repo: Repo, cache: LocalRegistry, public: LocalRegistry
) -> None:
    config = world_config(cache=cache.host, public=public.host, store_url=file_store(tmp_path), git_url=repo.url)
    plan = plan_for(config, repo.commits[1])
    v = plan.variant(VARIANT)
    night = push_night(cache.url, plan, tmp_path)

    cache.stop()
    for artifact in IMAGES:
        with pytest.raises(TransientRegistryError) as caught:
            observe_artifact(plan, v, artifact)
        assert f"{cache.host}/{plan.cache_repository}" in str(caught.value)
        assert "ConnectError" in str(caught.value)
    assert_truthful(plan, cache_url=None, public_url=public.url)

    cache.start()
    with recovered("cache registry down", "sensors (check_*_image)"):
        seen = {artifact: observe_artifact(plan, v, artifact) for artifact in IMAGES}
        assert {a: o.digest for a, o in seen.items()} == {
            "base_image": night.digests["base"], "wheels_image": night.digests["wheels"],
            "release_image": night.digests["release"]}
        assert seen["base_image"].paired_digest == night.digests["base_wheels"]
        assert_truthful(plan, cache_url=cache.url, public_url=public.url)
