"""include/scripts/ui.py (`make ui`): the commands and environment of the UI's four components.

Only the pure parts run here: starting Airflow needs the local services (`make services-up`).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from rocm_release.adapters.config_file import REPO_ROOT

_spec = importlib.util.spec_from_file_location("ui", REPO_ROOT / "include" / "scripts" / "ui.py")
assert _spec and _spec.loader
ui = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ui)

VENV_BIN = Path("/opt/venv/bin")


def test_every_component_is_the_venvs_airflow_by_its_path_and_no_log_server_starts() -> None:
    argvs = {name: ui.component_argv(name, VENV_BIN) for name in ui.COMPONENTS}
    assert set(argvs) == {"scheduler", "dag-processor", "triggerer", "api-server"}  # what standalone runs
    assert all(argv[0] == "/opt/venv/bin/airflow" for argv in argvs.values())
    # standalone's scheduler and triggerer would also serve logs on every interface.
    assert argvs["scheduler"][1:] == ["scheduler", "--skip-serve-logs"]
    assert argvs["triggerer"][1:] == ["triggerer", "--skip-serve-logs"]


def test_the_environment_puts_the_venv_first_on_path_and_the_ui_on_loopback() -> None:
    base = {"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": "/x/.state/airflow-demo", "AIRFLOW__API__HOST": "0.0.0.0"}  # noqa: S104 (overridden)
    env = ui.ui_env(base, 8080, VENV_BIN)
    # standalone's FileNotFoundError: 'airflow' came from a PATH without the venv.
    assert env["PATH"].split(os.pathsep) == ["/opt/venv/bin", "/usr/bin", "/bin"]
    assert (env["AIRFLOW__API__HOST"], env["AIRFLOW__API__PORT"]) == ("127.0.0.1", "8080")
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:8080"
    # The tasks' supervisor talks to the same api-server (another port than 8080 must not break runs).
    assert ui.ui_env(base, 8123, VENV_BIN)["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == \
        "http://127.0.0.1:8123/execution/"
    assert env["AIRFLOW_HOME"] == "/x/.state/airflow-demo"


def test_the_demo_home_and_the_files_up_writes() -> None:
    assert ui.demo.AIRFLOW_HOME == REPO_ROOT / ".state" / "airflow-demo"
    assert ui.LOG == REPO_ROOT / ".state" / "logs" / "ui.log"
    assert ui.pidfile("api-server") == REPO_ROOT / ".state" / "run" / "ui-api-server.pid"


@pytest.mark.parametrize(("cmdline", "name", "expected"), [
    (["/v/bin/python3", "/v/bin/airflow", "scheduler", "--skip-serve-logs"], "scheduler", True),
    (["airflow api_server -- host:127.0.0.1 port:8080"], "api-server", True),  # retitled by Airflow
    (["/v/bin/python3", "/v/bin/airflow", "api-server"], "api-server", True),  # before it renames itself
    (["/v/bin/python3", "/v/bin/airflow", "scheduler"], "triggerer", False),
    (["/usr/bin/python3", "-m", "http.server"], "api-server", False),
])
def test_a_component_is_recognised_by_its_command_line(cmdline: list[str], name: str, expected: bool) -> None:
    assert ui.looks_like(cmdline, name) is expected


def test_the_login_is_the_generated_password_once_it_exists(tmp_path: Path) -> None:
    passwords = tmp_path / "simple_auth_manager_passwords.json.generated"
    assert f"the password will be in {passwords}" in ui.login_text(passwords, tmp_path)
    passwords.write_text(json.dumps({"admin": "s3cret"}))
    assert ui.login_text(passwords, tmp_path).startswith("user admin, password s3cret")


def test_down_without_a_running_ui_stops_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui.services, "RUN", tmp_path)  # no pid file: nothing of ours runs
    monkeypatch.setattr(ui, "PORT_FILE", tmp_path / "ui.port")
    assert ui.main(["down"]) == 0
    assert "the UI was not running" in capsys.readouterr().out
