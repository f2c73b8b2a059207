"""`make ui` / `make ui-down`: the Airflow web UI on the demo's state (its Airflow home, config and services).

What `airflow standalone` runs, started one by one: the scheduler, the dag-processor, the triggerer and
the api-server (the UI), each detached in a session of its own, its pid in ``.state/run/ui-<name>.pid``,
all writing to ``.state/logs/ui.log``. Not `standalone` itself, for two reasons:

- standalone starts its components as ``airflow <component>`` found through ``PATH``: from a shell whose
  ``PATH`` lacks the venv they die with ``FileNotFoundError: 'airflow'`` and standalone waits forever.
  Here every command is the venv's ``airflow`` by its path, and ``PATH`` starts with the venv's bin too.
- standalone's scheduler and triggerer also serve task logs on every interface (8793, 8794); here they
  run with ``--skip-serve-logs`` (the api-server reads the logs from the Airflow home on this host), so
  only the api-server listens, on 127.0.0.1 (the same COMPONENTS as tests/e2e/test_scheduler.py).

``up`` is idempotent (what runs is kept, what is missing is started), waits for the UI and the generated
login, and prints both; ``down`` stops only the processes whose pid files it wrote (and ``make
services-down`` calls it); ``status`` says what runs. Every command is an argument list.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo  # noqa: E402  (the demo's Airflow home and environment)
import services  # noqa: E402  (process helpers: pid files, waiting, stopping)

DEFAULT_PORT = 8080
LOG = services.LOGS / "ui.log"
PORT_FILE = services.RUN / "ui.port"  # the port `up` started the api-server on
PASSWORDS = demo.AIRFLOW_HOME / "simple_auth_manager_passwords.json.generated"
START_DEADLINE = 180.0
STOP_DEADLINE = 30.0
# What `airflow standalone` runs, minus its log servers (see the module docstring).
COMPONENTS: dict[str, tuple[str, ...]] = {
    "scheduler": ("scheduler", "--skip-serve-logs"),
    "dag-processor": ("dag-processor",),
    "triggerer": ("triggerer", "--skip-serve-logs"),
    "api-server": ("api-server",),
}
# How each component's process reads in /proc/<pid>/cmdline: the api-server retitles itself
# ("airflow api_server -- host:… port:…", api_server_command.py); the others keep their argv.
TITLES = {"scheduler": "scheduler", "dag-processor": "dag-processor", "triggerer": "triggerer",
          "api-server": "api_server"}


def base_url(port: int) -> str:
    """The UI's address (loopback only)."""
    return f"http://127.0.0.1:{port}"


def ui_env(base: Mapping[str, str], port: int, venv_bin: Path) -> dict[str, str]:
    """The demo's environment for the four components: the venv's bin first on PATH (the fix for
    standalone's FileNotFoundError), the API on 127.0.0.1:<port>, and the tasks' execution API there too."""
    url = base_url(port)
    return {
        **base,
        "PATH": os.pathsep.join([str(venv_bin), *[p for p in base.get("PATH", "").split(os.pathsep) if p]]),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
    }


def component_argv(name: str, venv_bin: Path) -> list[str]:
    """The command of one component: the venv's airflow, by its path."""
    return [str(venv_bin / "airflow"), *COMPONENTS[name]]


def pidfile(name: str) -> Path:
    """Where ``up`` records a component's pid."""
    return services.RUN / f"ui-{name}.pid"


def looks_like(cmdline: Sequence[str], name: str) -> bool:
    """Is this argv (as /proc shows it) the component ``name`` of Airflow: as started, or renamed?"""
    words = " ".join(cmdline)
    return "airflow" in words and (TITLES[name] in words or f"airflow {name}" in words)


def login_text(passwords: Path, home: Path) -> str:
    """The login to print: user and password once Airflow generated them, else where they will be."""
    with contextlib.suppress(FileNotFoundError, ValueError, StopIteration):
        user, password = next(iter(json.loads(passwords.read_text()).items()))
        return f"user {user}, password {password} (from {passwords})"
    return f"user admin; the password will be in {passwords} (the api-server writes it as it starts; home {home})"


def running_pid(name: str) -> int | None:
    """The pid of our running component: the pid file's, if that process is alive, leads the session ``up``
    gave it (so a reused pid is never taken for ours) and is that component. Its command line may read
    empty for a moment while the api-server renames itself: that is still it."""
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError, OSError):
        pid = int(pidfile(name).read_text().strip())
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        words = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode(errors="replace").split("\0")
        if state not in ("Z", "X") and os.getsid(pid) == pid and (words == [""] or looks_like(words, name)):
            return pid
    pidfile(name).unlink(missing_ok=True)
    return None


def prepare(env: dict[str, str]) -> None:
    """The demo home's database and deployment files, as `make demo` sets them up (idempotent)."""
    demo.AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    airflow = str(demo.VENV_BIN / "airflow")
    services.run([airflow, "db", "migrate"], env=env, log=LOG)
    services.run([airflow, "pools", "import", str(demo.POOLS_FILE)], env=env, log=LOG)
    services.run([airflow, "connections", "import", str(demo.CONNECTIONS_FILE)], env=env, log=LOG)


def start(name: str, env: dict[str, str]) -> int:
    """Start one component detached (a new session: it outlives this script and its terminal)."""
    argv = component_argv(name, demo.VENV_BIN)
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with LOG.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} rocm-nightly starts: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=str(demo.AIRFLOW_HOME), start_new_session=True)
    services.write_atomic(pidfile(name), f"{proc.pid}\n")
    return proc.pid


def recorded_port(default: int) -> int:
    """The port the running UI was started on (``default`` when none was recorded)."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int(PORT_FILE.read_text().strip())
    return default


def cmd_up(port: int) -> int:
    """Start what is not running, wait for the UI and the login, print both."""
    missing = [name for name in COMPONENTS if running_pid(name) is None]
    if len(missing) < len(COMPONENTS):
        port = recorded_port(port)  # some run already: the rest joins them on their port
    env = ui_env(demo.demo_env(), port, demo.VENV_BIN)
    if not missing:
        services.say(f"the UI is running already: {base_url(port)}")
    else:
        prepare(env)
        services.write_atomic(PORT_FILE, f"{port}\n")
        for name in missing:
            services.say(f"starting {name} (pid {start(name, env)}); log: {LOG}")

    def ready() -> bool:
        if any(running_pid(name) is None for name in COMPONENTS):
            raise services.ServiceError(f"a UI component exited{services.log_tail(LOG, 40)}")
        return services.port_open(port) and PASSWORDS.exists()

    services.wait_until(f"the UI on {base_url(port)}", ready, START_DEADLINE, log=LOG)
    services.say(f"Airflow UI: {base_url(port)}  login: {login_text(PASSWORDS, demo.AIRFLOW_HOME)}\n"
                 f"logs: {LOG}; stop it with `make ui-down` (or `make services-down`)")
    return 0


def cmd_down() -> int:
    """Stop the components ``up`` started: SIGTERM to each one's process group, SIGKILL after a deadline."""
    stopped = False
    for name in reversed(list(COMPONENTS)):
        pid = running_pid(name)
        if pid is None:
            continue
        services.say(f"stopping {name} (pid {pid})")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        if not services.wait_gone(pid, STOP_DEADLINE):
            services.say(f"{name} (pid {pid}) did not stop within {STOP_DEADLINE:.0f}s: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            services.wait_gone(pid, 10.0)
        pidfile(name).unlink(missing_ok=True)
        stopped = True
    PORT_FILE.unlink(missing_ok=True)
    services.say("stopped the UI" if stopped else "the UI was not running")
    return 0


def cmd_status(port: int) -> int:
    """Say which components run, and where the UI is."""
    port = recorded_port(port)
    pids = {name: running_pid(name) for name in COMPONENTS}
    for name, pid in pids.items():
        services.say(f"{name}: " + (f"running (pid {pid})" if pid else "not running"))
    if all(pids.values()):
        services.say(f"Airflow UI: {base_url(port)}  login: {login_text(PASSWORDS, demo.AIRFLOW_HOME)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """ui.py up|down|status [--port N]."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("ROCM_NIGHTLY_UI_PORT", DEFAULT_PORT)))
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return cmd_up(args.port)
        return cmd_down() if args.command == "down" else cmd_status(args.port)
    except services.ServiceError as exc:
        print(f"ui.py {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
