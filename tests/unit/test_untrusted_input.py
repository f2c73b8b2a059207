"""Hostile or careless input: a credential is never echoed or frozen into the plan, a huge value is never
echoed whole, and a bad schedule or sensor setting fails when the config is read, naming the file and field
(issue #11, defects 5 and 8); an index page names only plain file and project names (defect 8)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from rocm_release.adapters.config_file import REPO_ROOT
from rocm_release.core.config import ConfigError, parse_config
from rocm_release.core.index import IndexPageError, parse_project_list, parse_project_page, wheel_href
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


SHA = "0" * 64
WHEEL = "vllm-0.9.0+rocm710-cp312-cp312-manylinux_2_28_x86_64.whl"


@pytest.mark.parametrize("href", [
    "../..%2F..%2Fother%2Fx.whl", "../%2E%2E%2F%2E%2E%2Fx.whl", "../%2Fetc%2Fpasswd", "../%2E%2E",
    "../..%5C..%5Cx.whl", "../x.whl%00.txt", "../x%0A.whl", "../.x.whl.0123.part", "../", "../%2E",
])
def test_a_link_whose_decoded_name_is_not_a_plain_file_name_is_refused_at_parse(href: str) -> None:
    with pytest.raises(IndexPageError, match="not a plain file name"):
        parse_project_page(f'<a href="{href}#sha256={SHA}">x</a>')


def test_plain_file_names_parse_whatever_their_quoting() -> None:
    page = f'<a href="../vllm-0.9.0%2Brocm710-cp312-cp312-manylinux_2_28_x86_64.whl#sha256={SHA}">x</a>'
    assert [link.filename for link in parse_project_page(page)] == [WHEEL]
    alias = f'<a href="../../../{"a" * 40}/rocm710/{WHEEL}#sha256={SHA}">x</a>'  # a nightly alias page
    assert [link.filename for link in parse_project_page(alias)] == [WHEEL]


@pytest.mark.parametrize("href", ["..%2F..%2Fetc/", "../", "a%2Fb/", "%2E%2E/", ".hidden/", "torch%00/", "-x/"])
def test_a_project_link_that_is_not_a_project_name_is_refused_at_parse(href: str) -> None:
    with pytest.raises(IndexPageError, match="not a project name"):
        parse_project_list(f'<a href="{href}">x</a>')


@pytest.mark.parametrize("name", ["../x.whl", "a/b.whl", ".x.whl", "x\\y.whl", "x\x00.whl", ".."])
def test_no_page_is_written_with_a_link_outside_its_folder(name: str) -> None:
    with pytest.raises(IndexPageError, match="not a plain file name"):
        wheel_href("../", name)
