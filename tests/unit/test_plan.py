"""The ReleasePlan: golden names for a fixed input, and the key's properties."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rocm_release.adapters.config_file import REPO_ROOT, load_config
from rocm_release.core.config import Variant
from rocm_release.core.names import TAG_RE
from rocm_release.core.params import ParamsError, ReleaseParams, parse_params
from rocm_release.core.plan import base_key, cache_tag_regexes, make_plan, tag_regex

GOLDEN = Path(__file__).parent / "golden"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
AS_OF = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
PARENT_DIGEST = "sha256:" + "ab" * 32
VARIANT = Variant(
    name="rocm710", rocm_version="7.1.0", python_version="3.12", gpu_archs=("gfx942",),
    platform_tag="manylinux_2_28_x86_64",
)


def _plan(config_name: str, **params: object):
    config = load_config(REPO_ROOT / "include" / "config" / f"{config_name}.yaml")
    parents = {v.parent_image or config.project.parent_image for v in config.variants}
    return make_plan(
        config,
        commit=COMMIT,
        run_kind="scheduled",
        as_of=AS_OF,
        params=ReleaseParams.model_validate(params),
        base_dockerfile=b"FROM scratch\n",
        base_inputs={p: p.encode() for p in config.project.base_inputs},
        parent_images={p: f"{p.rsplit(':', 1)[0]}@{PARENT_DIGEST}" for p in parents},
    )


def _golden(name: str, value: object) -> None:
    path = GOLDEN / f"{name}.json"
    # The checkout's path differs between machines: golden files hold a placeholder.
    text = json.dumps(value, indent=2, sort_keys=True).replace(str(REPO_ROOT), "${REPO_ROOT}") + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 to write it"
    assert json.loads(path.read_text()) == json.loads(text), f"{path} differs (UPDATE_GOLDEN=1 rewrites it)"


@pytest.mark.parametrize("config_name", ["vllm", "demo"])
def test_plan_matches_golden(config_name: str) -> None:
    _golden(f"plan_{config_name}", _plan(config_name).model_dump(mode="json"))


def test_every_name_is_a_valid_tag_and_round_trips() -> None:
    plan = _plan("vllm")
    for v in plan.variants:
        for tag in [*v.cache_tags.model_dump().values(), *v.public_tags.model_dump().values()]:
            assert TAG_RE.match(tag), tag
        assert v.wheels_url.endswith(f"/{COMMIT}/{v.name}/")
    assert type(plan).model_validate_json(plan.model_dump_json()) == plan


def test_retention_regexes_match_exactly() -> None:
    plan = _plan("demo")
    v = plan.variants[0]
    regexes = cache_tag_regexes(v.name)
    for kind, tag in v.cache_tags.model_dump().items():
        assert [k for k, rx in regexes.items() if rx.match(tag)] == [kind], tag
    nightly_commit = tag_regex("nightly-{commit}-{variant}", "rocm710")
    assert nightly_commit.match(f"nightly-{COMMIT}-rocm710")
    # The reference pipeline's prefix bug: "nightly-" also matched another variant's tags.
    assert not nightly_commit.match(f"nightly-{COMMIT}-rocm7100")
    assert not tag_regex("nightly-{variant}", "rocm710").match(f"nightly-{COMMIT}-rocm710")


def _key(**change: object) -> str:
    inputs = {
        "dockerfile": b"FROM x\n",
        "inputs": {"a.txt": b"a", "b.txt": b"b"},
        "parent_image": f"x@{PARENT_DIGEST}",
        "build_args": {"A": "1", "B": "2"},
        "variant": VARIANT,
        "schema": 1,
    }
    inputs.update(change)
    return base_key(**inputs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"dockerfile": b"FROM y\n"},
        {"inputs": {"a.txt": b"A", "b.txt": b"b"}},
        {"inputs": {"a.txt": b"a", "c.txt": b"b"}},
        {"parent_image": f"x@sha256:{'cd' * 32}"},
        {"build_args": {"A": "1", "B": "3"}},
        {"build_args": {"A": "1", "B": "2", "C": ""}},
        {"variant": VARIANT.model_copy(update={"rocm_version": "7.2.0"})},
        {"variant": VARIANT.model_copy(update={"python_version": "3.11"})},
        {"variant": VARIANT.model_copy(update={"gpu_archs": ("gfx942", "gfx950")})},
        {"variant": VARIANT.model_copy(update={"platform_tag": "manylinux_2_35_x86_64"})},
        {"schema": 2},
    ],
)
def test_any_single_input_change_changes_the_key(change: dict) -> None:
    assert _key(**change) != _key()


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=6), st.randoms())
def test_build_arg_order_does_not_change_the_key(args: dict[str, str], rnd) -> None:
    items = list(args.items())
    rnd.shuffle(items)
    assert _key(build_args=dict(items)) == _key(build_args=args)


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_dockerfile_bytes_change_key(a: bytes, b: bytes) -> None:
    assert (_key(dockerfile=a) == _key(dockerfile=b)) == (a == b)


def test_key_is_16_hex() -> None:
    key = _key()
    assert len(key) == 16 and int(key, 16) >= 0


def test_variant_subset_and_promotion_rules() -> None:
    config = load_config(REPO_ROOT / "include" / "config" / "demo.yaml")
    plan = _plan("demo", variants=["rocm723"])
    assert [v.name for v in plan.variants] == ["rocm723"]
    assert plan.promote  # scheduled
    assert parse_params({"variants": ["rocm710"]}, config).variants == ("rocm710",)


@pytest.mark.parametrize(
    "raw, named",
    [
        ({"commit": "abc; rm -rf /"}, "commit"),
        ({"commit": "$(touch injected)"}, "commit"),
        ({"commit": "-delete"}, "commit"),
        ({"commit": "main..evil"}, "commit"),
        ({"variants": ["rocm999"]}, "variants"),
        ({"variants": []}, "variants"),
        ({"force_rebuild": "yes please"}, "force_rebuild"),
        ({"comit": "abc1234"}, "comit"),
    ],
)
def test_bad_params_name_the_param(raw: dict, named: str) -> None:
    config = load_config(REPO_ROOT / "include" / "config" / "demo.yaml")
    with pytest.raises(ParamsError, match=f"param '{named}'"):
        parse_params(raw, config)


@pytest.mark.parametrize("good", ["main", "v0.12.0", "release/0.12", "0123abc", COMMIT])
def test_good_commitish_accepted(good: str) -> None:
    config = load_config(REPO_ROOT / "include" / "config" / "demo.yaml")
    assert parse_params({"commit": good}, config).commit == good


def test_plan_refuses_short_commit_and_unpinned_parent() -> None:
    with pytest.raises(ValueError, match="40-hex"):
        make_plan(
            load_config(REPO_ROOT / "include" / "config" / "demo.yaml"), commit="abc", run_kind="manual",
            as_of=AS_OF, params=ReleaseParams(), base_dockerfile=b"", base_inputs={}, parent_images={},
        )
