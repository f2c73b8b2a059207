"""The smoke-test gate below Airflow: its config, the wheels test's command, the skip_tests rule, the summary.

The containers themselves run in tests/e2e/test_gate_and_alerts.py (a real dockerd, a real failing image).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest

from rocm_release.core.config import ConfigError, parse_config
from rocm_release.core.params import ParamsError
from rocm_release.core.report import VariantResults, build_report, render_markdown
from rocm_release.core.smoke import TAIL_LINES, gate_result, wheels_test_command
from rocm_release.tasks.context import validated_params
from tests.unit.test_plan import _plan

DEMO = Path(__file__).resolve().parents[2] / "include" / "config" / "demo.yaml"


def _with_smoke(smoke: str) -> str:
    text = DEMO.read_text()
    return text[:text.index("smoke_test:")] + textwrap.dedent(smoke)


def test_every_shipped_config_is_gated() -> None:
    for name in ("demo", "cluster", "vllm"):
        config = parse_config((DEMO.parent / f"{name}.yaml").read_text(), name, repo_root="/r")
        assert config.smoke_test is not None and config.smoke_test.command, name
    vllm = parse_config((DEMO.parent / "vllm.yaml").read_text(), "vllm", repo_root="/r").smoke_test
    assert vllm is not None and set(vllm.devices) == {"/dev/kfd", "/dev/dri"}


@pytest.mark.parametrize(("smoke", "named"), [
    ("smoke_test:\n  command: []\n", "smoke_test.command"),
    ("smoke_test:\n  command: [python3]\n  devices: ['/etc/passwd']\n", "smoke_test.devices.0"),
    ("smoke_test:\n  command: [python3]\n  imports: ['os; import x']\n", "smoke_test.imports.0"),
    ("smoke_test:\n  command: [python3]\n  environment: {'A B': x}\n", "smoke_test.environment"),
    ("smoke_test:\n  command: [python3]\n  shm_size_mb: 0\n", "smoke_test.shm_size_mb"),
    ("smoke_test:\n  commands: [python3]\n", "smoke_test.commands"),
])
def test_a_bad_smoke_test_section_is_refused_naming_the_field(smoke: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse_config(_with_smoke(smoke), "demo.yaml", repo_root="/r")


def _wheel(folder: Path, name: str, module: str, body: str) -> Path:
    """A minimal pure-Python wheel (what pip needs: METADATA, WHEEL, RECORD)."""
    path = folder / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{module}.py", body)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
                   + ("Requires-Dist: basedep\n" if name != "basedep" else ""))
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def _run_wheels_test(mount: Path, imports: list[str],
                     project_body: str = "X = 1\n") -> subprocess.CompletedProcess[str]:
    (mount / "project").mkdir(parents=True, exist_ok=True)
    (mount / "base").mkdir(exist_ok=True)
    _wheel(mount / "project", "proj", "proj", project_body)
    _wheel(mount / "base", "basedep", "basedep", "Y = 2\n")
    command = wheels_test_command(imports)
    assert command[:2] == ["python3", "-c"] and command[3] == "/wheels"
    # The container's python3 and mount, here: this interpreter and a folder (the script takes both from argv).
    return subprocess.run([sys.executable, "-c", command[2], str(mount), *command[4:]], capture_output=True,
                          text=True, timeout=300, check=False)


def test_the_wheels_test_installs_project_and_base_wheels_without_an_index_and_imports(tmp_path: Path) -> None:
    done = _run_wheels_test(tmp_path / "w", ["proj", "basedep"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wheels test passed: 1 project wheel(s) installed, 2 module(s) imported" in done.stdout


def test_the_wheels_test_fails_when_an_import_fails(tmp_path: Path) -> None:
    done = _run_wheels_test(tmp_path / "w", ["proj"], project_body="raise ImportError('the extension is broken')\n")
    assert done.returncode != 0 and "the extension is broken" in done.stderr


def test_a_module_name_is_an_argument_never_code() -> None:
    hostile = "os; import shutil"
    command = wheels_test_command([hostile])
    assert command[-1] == hostile and hostile not in command[2]


def test_a_failure_hands_on_only_the_tail_of_the_output() -> None:
    lines = [f"line {i}" for i in range(100)]
    result = gate_result("test_wheels", passed=False, output=lines, why="the wheels test failed")
    assert result["tail"] == lines[-TAIL_LINES:] and not result["passed"]
    assert gate_result("test_wheels", passed=True, output=lines)["tail"] == []


class _Run:
    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf


@pytest.mark.parametrize("kind", ["scheduled", "backfill"])
def test_only_a_manual_run_may_skip_the_tests(kind: str) -> None:
    config = _plan("demo").config
    context = {"params": {}, "dag_run": _Run({"skip_tests": True})}
    with pytest.raises(ParamsError, match=r"param 'skip_tests': only a manual run"):
        validated_params(context, config, kind)  # type: ignore[arg-type]
    assert validated_params(context, config, "manual").skip_tests


def test_the_summary_names_the_failed_test_and_quotes_its_output() -> None:
    plan = _plan("demo")
    failed = gate_result("test_release_image", passed=False, output=["Traceback", "ImportError: _ops"],
                         why="the release image's smoke command failed")
    passed = gate_result("test_wheels", passed=True, why="the wheels test passed")
    results = {v.name: VariantResults(gate=(failed, passed)) for v in plan.variants}
    report = build_report(plan, results, {}, run_id="manual__x", generated="now")
    text = render_markdown(report)
    assert report["outcome"] == "FAILED"
    assert "- test_release_image: **FAILED**: the release image's smoke command failed" in text
    assert "ImportError: _ops" in text and "- test_wheels: passed: the wheels test passed" in text


def test_the_summary_says_loudly_that_the_tests_were_skipped() -> None:
    plan = _plan("demo").model_copy(update={"skip_tests": True})
    results = {v.name: VariantResults(pushed={"digests": {}}, wheels=[]) for v in plan.variants}
    text = render_markdown(build_report(plan, results, {}, run_id="manual__x", generated="now"))
    assert "the smoke tests were SKIPPED (skip_tests): published untested" in text


def test_the_old_daemon_connection_is_refused_saying_what_replaced_it() -> None:
    """build.docker_conn_id used a docker connection's host as the daemon address; the provider defines a docker
    connection as a registry login, so the daemon is build.docker_url (or each worker's $DOCKER_HOST)."""
    text = DEMO.read_text().replace("  network: none\n", "  network: none\n  docker_conn_id: docker_rocm\n")
    with pytest.raises(ConfigError, match=r"build: .*docker_conn_id is gone: the daemon is build\.docker_url"):
        parse_config(text, "demo.yaml", repo_root="/r")
    url = DEMO.read_text().replace("  network: none\n", "  network: none\n  docker_url: unix:///run/d.sock\n")
    assert parse_config(url, "demo.yaml", repo_root="/r").build.docker_url == "unix:///run/d.sock"


def test_a_test_that_did_not_run_reads_skipped_not_passed() -> None:
    plan = _plan("demo")
    skipped = gate_result("v.test_wheels", passed=True, why="not run: nothing new tonight", ran=False)
    results = {v.name: VariantResults(pushed={"digests": {}}, wheels=[], gate=(skipped,)) for v in plan.variants}
    text = render_markdown(build_report(plan, results, {}, run_id="scheduled__x", generated="now"))
    assert "- v.test_wheels: skipped: not run: nothing new tonight" in text
