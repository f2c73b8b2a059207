"""Publishing refuses a platform tag too low for the wheels' glibc needs, before anything is uploaded.

``steps.publish_variant_wheels`` on images in the shared cache registry, as a build leaves them
(``/dist`` with real wheels and ``SHA256SUMS``), into a ``file://`` store of the test's own. The
project's wheel holds a library the system's gcc compiled, calling ``arc4random`` (GLIBC_2.36);
the demo's ``rocm710`` says ``manylinux_2_28_x86_64``.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import pytest

from rocm_release.adapters.steps import publish_variant_wheels
from rocm_release.adapters.store import observe_published, store_root
from rocm_release.adapters.wheel_platform import PlatformTagTooLow
from rocm_release.core.config import ReleaseConfig
from rocm_release.core.plan import LABEL_BASE_DIGEST, LABEL_COMMIT, ReleasePlan
from tests.faults.matrix import VARIANT, dist_layer, labels, plan_for, world_config
from tests.support.registries import make_image, remove_tags, unique_repo
from tests.support.wheels import compile_library, make_wheel

pytestmark = pytest.mark.integration

ARCH = platform.machine()
COMMIT = "c0ffee" + "0" * 34
ARC4RANDOM = "#include <stdlib.h>\nunsigned tinyllm_seed(void) { return arc4random(); }\n"


def night(services: dict[str, Any], tmp_path: Path, platform_tag: str) -> tuple[ReleasePlan, dict[str, str], str]:
    """A plan of the demo's rocm710 with ``platform_tag``, its two wheels images pushed; (plan, refs, host)."""
    host = services["services"]["registry-cache"]["address"]
    config = world_config(cache=host, public=host, store_url=f"file://{tmp_path}/store/rocm",
                          git_url="file:///nonexistent", repository=unique_repo("rocm-nightly/platform"))
    doc = config.model_dump(mode="json")
    doc["variants"][0]["platform_tag"] = platform_tag
    plan = plan_for(ReleaseConfig.model_validate(doc), COMMIT)
    v = plan.variant(VARIANT)
    ops = compile_library(tmp_path / "build", "ops.so", ARC4RANDOM)
    project = make_wheel(tmp_path / "wheels", "tinyllm", "0.1.0", tag=f"cp311-cp311-linux_{ARCH}",
                         modules={"tinyllm/__init__.py": b"", "tinyllm/_ops.so": ops.read_bytes()})
    base = make_wheel(tmp_path / "base", "tinytorch", "2.9.0", tag=f"cp311-cp311-linux_{ARCH}")
    url, repo = f"http://{host}", plan.cache_repository
    base_image = make_image(url, repo, v.cache_tags.base, labels=labels(v))
    on_base = {LABEL_BASE_DIGEST: base_image.digest}
    images = {
        "base_wheels": make_image(url, repo, v.cache_tags.base_wheels, labels=labels(v, **on_base),
                                  layers=[dist_layer([base])]),
        "wheels": make_image(url, repo, v.cache_tags.wheels, labels=labels(v, **on_base, **{LABEL_COMMIT: COMMIT}),
                             layers=[dist_layer([project])]),
    }
    return plan, {kind: plan.cache_ref(image.digest) for kind, image in images.items()}, host


def stored_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "store").rglob("*") if p.is_file()]


def test_a_tag_too_low_fails_publishing_before_anything_is_uploaded(services: dict[str, Any], tmp_path: Path) -> None:
    plan, refs, host = night(services, tmp_path, f"manylinux_2_28_{ARCH}")
    messages: list[str] = []
    try:
        with pytest.raises(PlatformTagTooLow) as failure:
            publish_variant_wheels(plan, plan.variant(VARIANT), refs, messages.append)
    finally:
        remove_tags(host, [plan.cache_repository])

    assert f"tinyllm-0.1.0-cp311-cp311-manylinux_2_28_{ARCH}.whl" in str(failure.value)
    assert "tinyllm/_ops.so needs GLIBC_2.36" in str(failure.value)
    assert any("verified" in m for m in messages)  # the images were read: the check came after
    assert stored_files(tmp_path) == []  # nothing published, not even the base wheel


def test_the_same_night_with_a_high_enough_tag_is_published(services: dict[str, Any], tmp_path: Path) -> None:
    plan, refs, host = night(services, tmp_path, f"manylinux_2_36_{ARCH}")
    v = plan.variant(VARIANT)
    try:
        publish_variant_wheels(plan, v, refs, lambda _: None)
    finally:
        remove_tags(host, [plan.cache_repository])

    assert observe_published(store_root(v.wheels_url, None), v.wheels_url).present
    assert f"tinyllm-0.1.0-cp311-cp311-manylinux_2_36_{ARCH}.whl" in {p.name for p in stored_files(tmp_path)}
