"""Hostile or careless input: a credential is never echoed or frozen into the plan, a huge value is never
echoed whole, and a bad schedule or sensor setting fails when the config is read, naming the file and field
(issue #11, defects 5 and 8)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from rocm_release.adapters.config_file import REPO_ROOT
from rocm_release.core.config import ConfigError, parse_config
from rocm_release.core.names import redact
from rocm_release.core.params import ParamsError, parse_params

DEMO = REPO_ROOT / "include" / "config" / "demo.yaml"


def demo(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEMO.read_text())
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = data
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return data


def parse(data: dict[str, Any]) -> Any:
    return parse_config(yaml.safe_dump(data), "hostile.yaml", repo_root=str(REPO_ROOT))


def test_redact_hides_a_password_with_a_raw_at_sign() -> None:
    assert redact("https://user:p@ss@git.example.com/vllm.git") == "https://***@git.example.com/vllm.git"
    assert redact("https://git.example.com/a@b/vllm.git") == "https://git.example.com/a@b/vllm.git"


@pytest.mark.parametrize("url", [
    "https://user:p@ss@github.com/vllm-project/vllm.git",
    "https://ghp_0123456789abcdef@github.com/vllm-project/vllm.git",
    "ssh://git:hunter2@github.com/vllm-project/vllm.git",
])
def test_a_git_url_with_credentials_is_refused_without_echoing_them(url: str) -> None:
    expected = r"hostile\.yaml.*\n.*project\.git_url: .*must not contain credentials"
    with pytest.raises(ConfigError, match=expected) as err:
        parse(demo(project__git_url=url))
    for secret in ("p@ss", "ss@github", "ghp_0123456789abcdef", "hunter2"):
        assert secret not in str(err.value)


@pytest.mark.parametrize("url", ["ssh://git@github.com/vllm-project/vllm.git", "git@github.com:vllm-project/vllm.git",
                                 "https://github.com/vllm-project/vllm.git", "file:///srv/git/vllm.git"])
def test_a_git_url_naming_only_a_user_is_fine(url: str) -> None:
    assert parse(demo(project__git_url=url)).project.git_url == url


def test_a_huge_commit_param_is_not_echoed_whole() -> None:
    config = parse(demo())
    with pytest.raises(ParamsError, match="param 'commit'") as err:
        parse_params({"commit": "a" * 1_000_000}, config)
    assert len(str(err.value)) < 1_000


def test_a_huge_config_value_is_not_echoed_whole() -> None:
    with pytest.raises(ConfigError, match="project.name") as err:
        parse(demo(project__name="-" * 1_000_000))
    assert len(str(err.value)) < 2_000


@pytest.mark.parametrize(("field", "value"), [("schedule", "every night at two"), ("schedule", "0 2 * *"),
                                              ("retention__schedule", "0 4 * * 0 extra")])
def test_a_bad_cron_fails_when_the_config_is_read(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"hostile\.yaml.*\n.*{field.replace('__', '.')}: .*cron"):
        parse(demo(**{field: value}))


@pytest.mark.parametrize("value", ["@daily", "0 2 * * *", "*/15 1-5 * * MON-FRI", None])
def test_good_schedules_pass(value: str | None) -> None:
    assert parse(demo(schedule=value)).schedule == value


@pytest.mark.parametrize("field", ["poke_interval", "max_wait", "timeout"])
def test_a_huge_sensor_value_fails_when_the_config_is_read(field: str) -> None:
    with pytest.raises(ConfigError, match=rf"hostile\.yaml.*\n.*sensors\.{field}: .*less than or equal"):
        parse(demo(**{f"sensors__{field}": 10**20}))
