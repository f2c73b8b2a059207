"""The release config: both shipped files load; every kind of mistake is named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rocm_release.adapters.config_file import CONFIG_ENV, DEFAULT_CONFIG, REPO_ROOT, load_config
from rocm_release.core.config import ConfigError, parse_config

DEMO = REPO_ROOT / "include" / "config" / "demo.yaml"


def _demo() -> dict:
    return yaml.safe_load(DEMO.read_text())


def _parse(data: dict) -> None:
    parse_config(yaml.safe_dump(data), "bad.yaml", repo_root=str(REPO_ROOT))


def test_shipped_configs_load() -> None:
    vllm = load_config(DEFAULT_CONFIG)
    assert vllm.project.name == "vllm"
    assert vllm.cache_registry.kind == "ecr"
    demo = load_config(DEMO)
    assert demo.project.git_url == f"file://{REPO_ROOT}/.state/demo/tinyllm.git"
    assert [v.name for v in demo.variants] == ["rocm710", "rocm723"]


def test_env_var_names_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV, "include/config/demo.yaml")
    assert load_config().project.name == "tinyllm"
    monkeypatch.delenv(CONFIG_ENV)
    assert load_config().project.name == "vllm"


def test_missing_file_names_the_path_and_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"{tmp_path}/nope.yaml.*{CONFIG_ENV}"):
        load_config(tmp_path / "nope.yaml")


def test_misspelt_top_level_key_is_named() -> None:
    data = _demo()
    data["retension"] = data.pop("retention")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*\n.*retension: unknown key"):
        _parse(data)


def test_unknown_variant_field_is_named() -> None:
    data = _demo()
    data["variants"][0]["rocm_verison"] = "7.1.0"
    with pytest.raises(ConfigError, match=r"variants\.0\.rocm_verison: unknown key"):
        _parse(data)


@pytest.mark.parametrize(
    "pattern, message",
    [
        ("nightly {variant}", "not a valid OCI tag"),
        ("nightly-{varaint}", r"unknown placeholder.*varaint.*allowed"),
        ("nightly", "must contain {variant}"),
        ("-nightly-{variant}", "not a valid OCI tag"),
        ("n" * 100 + "-{commit}-{variant}", "not a valid OCI tag"),
    ],
)
def test_bad_tag_pattern_is_named(pattern: str, message: str) -> None:
    data = _demo()
    data["public_tags"] = {"nightly_commit": pattern}
    with pytest.raises(ConfigError, match=rf"public_tags\.nightly_commit: .*{message}"):
        _parse(data)


def test_alias_patterns_must_be_commit_free_and_distinct() -> None:
    data = _demo()
    data["public_tags"] = {"nightly": "nightly-{commit}-{variant}"}
    with pytest.raises(ConfigError, match="public_tags"):
        _parse(data)


@pytest.mark.parametrize(
    "path, value, field",
    [
        (("variants", 0, "name"), "ROCm 7", "variants.0.name"),
        (("variants", 0, "gpu_archs"), [], "variants.0.gpu_archs"),
        (("variants", 0, "platform_tag"), "win_amd64", "variants.0.platform_tag"),
        (("variants", 0, "platform_tag"), "linux_x86_64", "variants.0.platform_tag"),
        (("variants", 0, "platform_tag"), "manylinux2014_x86_64", "variants.0.platform_tag"),
        (("cache_registry", "kind"), "gcr", "cache_registry.kind"),
        (("wheel_store", "url"), "http://example.invalid/x", "wheel_store.url"),
        (("project", "base_inputs"), ["../secrets"], "project.base_inputs"),
        (("project", "build_args"), {"BAD-NAME": "x"}, "project.build_args"),
        (("build", "network"), "bridge0", "build.network"),
    ],
)
def test_bad_value_names_field_and_value(path: tuple, value: object, field: str) -> None:
    data = _demo()
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        _parse(data)
    assert field in str(err.value)
    assert "bad.yaml" in str(err.value)


def test_a_platform_tag_without_a_glibc_is_refused_with_what_is_allowed() -> None:
    """linux_x86_64 is what the build writes; publishing needs the manylinux tag it re-tags to and checks."""
    data = _demo()
    data["variants"][0]["platform_tag"] = "linux_x86_64"
    with pytest.raises(ConfigError, match=r"variants\.0\.platform_tag: .*'linux_x86_64' is not a manylinux tag: "
                                          r"manylinux_<glibc major>_<minor>_<arch>"):
        _parse(data)


def test_duplicate_variant_names_rejected() -> None:
    data = _demo()
    data["variants"].append(dict(data["variants"][0]))
    with pytest.raises(ConfigError, match="unique.*rocm710"):
        _parse(data)


def test_not_a_mapping_and_not_yaml() -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config("- a\n- b\n", "list.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("a: [\n", "broken.yaml")


def test_a_yaml_error_quotes_the_bad_line() -> None:
    # The config is read with libyaml's loader when there is one; its errors do not show the line, so
    # a document it rejects is read again by the pure-Python loader for the message.
    quoted = r"(?s)broken\.yaml: not valid YAML: .*line 2, column 10:\n +name: x: y\n +\^"
    with pytest.raises(ConfigError, match=quoted):
        parse_config("project:\n  name: x: y\n", "broken.yaml")
