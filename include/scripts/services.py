#!/usr/bin/env python3
"""Start, stop and describe the local services that stand in for production.

    services.py up       start what is missing (idempotent), build the base OS image once
    services.py down     stop only the processes this project started; data stays
    services.py status   one line per service

Everything lives under ``<repo>/.state/``; every server listens on 127.0.0.1 only:

- Docker Engine: an existing daemon (``DOCKER_HOST``, or a ``/var/run/docker.sock``
  that answers) is used as is; otherwise the project starts Debian's ``dockerd``
  with no bridge, no iptables rules and no NAT, on a unix socket in ``.state``.
- ``cache`` registry on 127.0.0.1:5101 (stands in for ECR) and ``public`` registry
  on 127.0.0.1:5102 (stands in for Docker Hub): Debian's ``docker-registry``.
- moto server on 127.0.0.1:5100 for the ECR and S3 APIs.
- base OS image: ``debootstrap`` of Debian bookworm, ``docker import``ed and pushed to
  the cache registry as ``127.0.0.1:5101/rocm-nightly/debian:bookworm``; made once.

``up`` writes ``.state/services.json`` and ``.state/services.env`` for tests and tools.
Subprocesses always run from argument lists, never through a shell.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".state"
LOGS = STATE / "logs"
RUN = STATE / "run"
SERVICES_JSON = STATE / "services.json"
SERVICES_ENV = STATE / "services.env"
LOCK_FILE = STATE / "services.lock"

HOST = "127.0.0.1"
MOTO_PORT = 5100
REGISTRY_PORTS = {"cache": 5101, "public": 5102}

DOCKER_CLI = "/usr/bin/docker"  # Debian 20.10 client: BuildKit built in (DOCKER_BUILDKIT=1)
DOCKERD = "/usr/sbin/dockerd"
REGISTRY_BIN = "/usr/bin/docker-registry"
DEBOOTSTRAP = "/usr/sbin/debootstrap"
SYSTEM_DOCKER_SOCK = "/var/run/docker.sock"
SYSTEM_CONTAINERD_SOCK = "/run/containerd/containerd.sock"

# Debian package -> files that show it is installed.
APT_PACKAGES: dict[str, tuple[str, ...]] = {
    "docker.io": (DOCKERD, DOCKER_CLI),
    "docker-registry": (REGISTRY_BIN,),
    "debootstrap": (DEBOOTSTRAP,),
    # The platform-tag tests compile small C libraries (tests/support/wheels.py: compile_library).
    "gcc": ("/usr/bin/gcc",),
    "libc6-dev": ("/usr/include/stdio.h",),
    # The web UI tests (tests/browser/) drive Debian's chromium with Playwright (no browser download).
    "chromium": ("/usr/bin/chromium",),
}

BASE_SUITE = "bookworm"
BASE_MIRROR = "http://deb.debian.org/debian"
BASE_INCLUDE = "python3,python3-pip,python3-venv,python3-dev,gcc,libc6-dev,ca-certificates"
BASE_REPOSITORY = "rocm-nightly/debian"
BASE_TAG = BASE_SUITE
BASE_DIR = STATE / "base-os"
BASE_TARBALL = BASE_DIR / f"debian-{BASE_SUITE}-minbase.tar"
BASE_RECORD = BASE_DIR / "image.json"

MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)

# A unix socket path must fit in sun_path (108 bytes with the trailing NUL).
UNIX_PATH_MAX = 107
# The longest socket the managed containerd creates below the exec root.
LONGEST_EXEC_SOCKET = "/containerd/containerd.sock.ttrpc"

SERVER_START_DEADLINE = 60.0
DOCKERD_START_DEADLINE = 120.0
STOP_DEADLINE = 30.0
DOCKERD_STOP_DEADLINE = 60.0


class ServiceError(RuntimeError):
    """A service could not be brought to the wanted state."""


def say(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- processes


def read_cmdline(pid: int) -> list[str] | None:
    """The argv of a live process, or None if it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    if state in ("Z", "X") or not raw:
        return None
    return [part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0")]


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[-1].split()[1])


def all_pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (by parent pid; process groups and titles may differ from its own)."""
    children: dict[int, list[int]] = {}
    for other in all_pids():
        parent = parent_pid(other)
        if parent is not None:
            children.setdefault(parent, []).append(other)
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def arg_value(cmdline: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in ``cmdline`` (``--flag value`` or ``--flag=value``)."""
    for i, arg in enumerate(cmdline):
        if arg == flag and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if arg.startswith(flag + "="):
            return arg[len(flag) + 1 :]
    return None


@dataclass(frozen=True)
class Program:
    """A long-running process the project may start, and how to recognise it."""

    name: str
    argv: tuple[str, ...]
    log: Path
    identify: Callable[[Sequence[str]], bool]
    env_drop_prefixes: tuple[str, ...] = ()
    env: dict[str, str] | None = field(default=None, compare=False)  # its whole environment (default: ours)
    user: str | None = None  # run as this user (postgres refuses to run as root)
    run_dir: Path = RUN  # where its pid file lives

    @property
    def pidfile(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    def is_this(self, pid: int) -> bool:
        cmdline = read_cmdline(pid)
        return cmdline is not None and self.identify(cmdline)

    def running_pid(self) -> int | None:
        """The pid of our running instance: from the pid file, else adopted by cmdline."""
        with contextlib.suppress(FileNotFoundError, ValueError):
            pid = int(self.pidfile.read_text().strip())
            if self.is_this(pid):
                return pid
        for pid in all_pids():
            if pid != os.getpid() and self.is_this(pid):
                write_atomic(self.pidfile, f"{pid}\n")
                return pid
        self.pidfile.unlink(missing_ok=True)
        return None

    def start(self) -> subprocess.Popen[bytes]:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(self.env) if self.env is not None else {
            k: v for k, v in os.environ.items() if not any(k.startswith(p) for p in self.env_drop_prefixes)
        }
        env["PATH"] = ensure_sbin_path(env.get("PATH", ""))
        with self.log.open("ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log.write(f"\n=== {stamp} rocm-nightly starts: {' '.join(self.argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(STATE),
                user=self.user,
                start_new_session=True,  # detached: survives this script and its terminal
            )
        write_atomic(self.pidfile, f"{proc.pid}\n")
        return proc


def ensure_sbin_path(path: str) -> str:
    parts = [p for p in path.split(":") if p]
    for extra in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if extra not in parts:
            parts.append(extra)
    return ":".join(parts)


def stop_process(pid: int, identify: Callable[[Sequence[str]], bool], what: str, deadline: float,
                 sig: signal.Signals = signal.SIGTERM) -> bool:
    """``sig`` (SIGTERM), wait up to ``deadline`` seconds, then SIGKILL. Only if ``pid`` is still ``what``."""
    cmdline = read_cmdline(pid)
    if cmdline is None or not identify(cmdline):
        return False
    say(f"stopping {what} (pid {pid})")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if wait_gone(pid, deadline):
        return True
    say(f"{what} (pid {pid}) did not stop within {deadline:.0f}s: SIGKILL")
    cmdline = read_cmdline(pid)
    if cmdline is not None and identify(cmdline):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if not wait_gone(pid, 10.0):
        raise ServiceError(f"{what} (pid {pid}) survived SIGKILL")
    return True


def wait_gone(pid: int, deadline: float) -> bool:
    end = time.monotonic() + deadline
    delay = 0.02
    while read_cmdline(pid) is not None:
        if time.monotonic() > end:
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    return True


def wait_until(
    what: str,
    ready: Callable[[], bool],
    deadline: float,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll ``ready`` until it holds; fail at the deadline or if ``proc`` exits first."""
    end = time.monotonic() + deadline
    delay = 0.02
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{what} exited with status {proc.returncode}{log_tail(log)}")
        if time.monotonic() > end:
            raise ServiceError(f"{what} not ready after {deadline:.0f}s{log_tail(log)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def log_tail(log: Path | None, lines: int = 25) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {log} ---\n" + "\n".join(text)


def run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; output goes to ``log`` if given, else is captured."""
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} $ {' '.join(argv)}\n")
            out.flush()
            result = subprocess.run(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, timeout=timeout, text=True, check=False,
            )
    else:
        result = subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, capture_output=True,
            env=env, timeout=timeout, text=True, check=False,
        )
    if check and result.returncode != 0:
        detail = log_tail(log) if log is not None else f"\n{result.stdout}{result.stderr}"
        raise ServiceError(f"command failed ({result.returncode}): {' '.join(argv)}{detail}")
    return result


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def state_lock() -> Iterator[None]:
    """One ``up``/``down`` at a time (several people share the repo and its services)."""
    STATE.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("another services.py holds the lock; waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- packages


def ensure_packages(packages: dict[str, tuple[str, ...]] | None = None) -> None:
    """apt-get install the Debian packages that are missing (non-interactive); default: APT_PACKAGES."""
    packages = APT_PACKAGES if packages is None else packages
    missing = [pkg for pkg, files in packages.items() if not all(Path(f).exists() for f in files)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise ServiceError(f"missing Debian packages {missing}; run as root or: apt-get install {' '.join(missing)}")
    say(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", PATH=ensure_sbin_path(os.environ.get("PATH", "")))
    log = LOGS / "apt.log"
    # Install without starting the packages' system services (a system dockerd would
    # create the 172.17 bridge and a registry would listen on all interfaces).
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    if own_policy:
        policy.write_text("#!/bin/sh\n# rocm-nightly services.py: do not start services during install\nexit 101\n")
        policy.chmod(0o755)
    try:
        run(["apt-get", "update", "-q"], env=env, log=log)
        run(
            # With recommends: docker.io recommends apparmor, without which containers fail
            # to start on hosts whose kernel enforces AppArmor.
            ["apt-get", "install", "-y", "-q",
             "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold", *missing],
            env=env, log=log,
        )
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)
    still = [pkg for pkg, files in packages.items() if not all(Path(f).exists() for f in files)]
    if still:
        raise ServiceError(f"packages {still} still missing after apt-get install{log_tail(log)}")


# --------------------------------------------------------------------------- HTTP


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 5.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def docker_ping(sock_path: str) -> bool:
    conn = UnixHTTPConnection(sock_path, timeout=3.0)
    try:
        conn.request("GET", "/_ping")
        resp = conn.getresponse()
        return resp.status == 200 and resp.read().strip() == b"OK"
    except OSError:
        return False
    finally:
        conn.close()


# 127.0.0.1 only: never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_request(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    if not url.startswith(f"http://{HOST}:"):
        raise ValueError(f"only http://{HOST} is ever asked: {url}")
    req = urllib.request.Request(url, method=method, headers=headers or {})  # noqa: S310 (checked above)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def http_ok(url: str, any_2xx: bool = False) -> bool:
    try:
        status = http_request(url, timeout=2.0)[0]
    except (OSError, http.client.HTTPException):
        return False
    return status == 200 or (any_2xx and 200 <= status < 300)


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((HOST, port)) == 0


def manifest_digest(registry: str, repository: str, reference: str) -> str | None:
    """Digest of ``repository:reference`` in ``registry`` (HEAD), or None when absent."""
    status, headers, _ = http_request(
        f"http://{registry}/v2/{repository}/manifests/{reference}", method="HEAD",
        headers={"Accept": MANIFEST_ACCEPT}, timeout=10.0,
    )
    if status == 404:
        return None
    if status != 200 or "docker-content-digest" not in headers:
        raise ServiceError(f"HEAD {registry}/{repository}:{reference} answered {status}")
    return headers["docker-content-digest"]


def manifest_layers_size(registry: str, repository: str, reference: str) -> int:
    status, _, body = http_request(
        f"http://{registry}/v2/{repository}/manifests/{reference}",
        headers={"Accept": MANIFEST_ACCEPT}, timeout=10.0,
    )
    if status != 200:
        raise ServiceError(f"GET {registry}/{repository}:{reference} manifest answered {status}")
    manifest = json.loads(body)
    return sum(int(layer["size"]) for layer in manifest.get("layers", []))


# --------------------------------------------------------------------------- docker


@dataclass(frozen=True)
class DockerLayout:
    socket: Path
    exec_root: Path
    data_root: Path
    pidfile: Path

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def containerd_socket(self) -> Path:
        return self.exec_root / "containerd" / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.exec_root / "containerd" / "containerd.toml"


def docker_layout() -> DockerLayout:
    base = STATE / "docker"
    sock = base / "docker.sock"
    exec_root = base / "exec"
    if len(str(sock)) > UNIX_PATH_MAX or len(str(exec_root)) + len(LONGEST_EXEC_SOCKET) > UNIX_PATH_MAX:
        # The repo path is too long for unix sockets: runtime files go to a short path instead.
        short = Path("/run") / f"rocm-nightly-{hashlib.sha256(str(REPO).encode()).hexdigest()[:12]}"
        sock = short / "docker.sock"
        exec_root = short / "exec"
    return DockerLayout(sock, exec_root, base / "data", base / "dockerd.pid")


def dockerd_program(layout: DockerLayout, name: str = "dockerd", log: Path = LOGS / "dockerd.log") -> Program:
    argv = (
        DOCKERD,
        "--data-root", str(layout.data_root),
        "--exec-root", str(layout.exec_root),
        "--pidfile", str(layout.pidfile),
        "-H", layout.url,
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
    )

    def identify(cmdline: Sequence[str]) -> bool:
        return (
            bool(cmdline)
            and cmdline[0] in (DOCKERD, "dockerd")
            and arg_value(cmdline, "--pidfile") == str(layout.pidfile)
        )

    return Program(name, argv, log, identify)


def containerd_identify(layout: DockerLayout) -> Callable[[Sequence[str]], bool]:
    def identify(cmdline: Sequence[str]) -> bool:
        return (
            bool(cmdline)
            and os.path.basename(cmdline[0]) == "containerd"
            and arg_value(cmdline, "--config") == str(layout.containerd_config)
        )

    return identify


def shim_identify(layout: DockerLayout) -> Callable[[Sequence[str]], bool]:
    def identify(cmdline: Sequence[str]) -> bool:
        return (
            bool(cmdline)
            and os.path.basename(cmdline[0]).startswith("containerd-shim")
            and arg_value(cmdline, "-address") == str(layout.containerd_socket)
        )

    return identify


def docker_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")}
    env["DOCKER_HOST"] = url
    env["DOCKER_BUILDKIT"] = "1"
    return env


def docker_answers(url: str) -> bool:
    if url.startswith("unix://") and not Path(url[len("unix://") :]).exists():
        return False
    try:
        result = run([DOCKER_CLI, "version", "--format", "{{.Server.Version}}"],
                     env=docker_env(url), timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


@dataclass
class DockerInfo:
    url: str
    ours: bool
    pid: int | None = None
    log: Path | None = None
    containerd_pid: int | None = None
    containerd: str = ""
    server_version: str = ""
    note: str = ""


def external_docker_url() -> str | None:
    """The daemon to use instead of our own, if any (DOCKER_HOST, or the system socket)."""
    own = docker_layout().url
    env_host = os.environ.get("DOCKER_HOST", "").strip()
    if env_host and env_host != own:
        return env_host
    if not env_host and Path(SYSTEM_DOCKER_SOCK).exists() and docker_answers(f"unix://{SYSTEM_DOCKER_SOCK}"):
        return f"unix://{SYSTEM_DOCKER_SOCK}"
    return None


def docker_components(url: str) -> dict[str, str]:
    result = run([DOCKER_CLI, "version", "--format", "{{json .Server}}"], env=docker_env(url), timeout=30)
    server = json.loads(result.stdout)
    components = {c.get("Name", ""): c.get("Version", "") for c in server.get("Components") or []}
    components["Engine"] = server.get("Version", components.get("Engine", ""))
    return components


def find_pids(identify: Callable[[Sequence[str]], bool]) -> list[int]:
    found = []
    for pid in all_pids():
        cmdline = read_cmdline(pid)
        if cmdline is not None and identify(cmdline):
            found.append(pid)
    return found


def ensure_docker() -> DockerInfo:
    external = external_docker_url()
    if external is not None:
        if not docker_answers(external):
            raise ServiceError(f"DOCKER_HOST={external} does not answer `{DOCKER_CLI} version`")
        return DockerInfo(url=external, ours=False, server_version=docker_components(external)["Engine"])

    layout = docker_layout()
    program = dockerd_program(layout)
    for path in (layout.data_root, layout.exec_root, layout.socket.parent):
        path.mkdir(parents=True, exist_ok=True)
    pid = program.running_pid()
    proc = None
    if pid is None:
        if Path(SYSTEM_CONTAINERD_SOCK).exists():
            say(f"note: {SYSTEM_CONTAINERD_SOCK} exists; dockerd will use that containerd instead of its own")
        layout.pidfile.unlink(missing_ok=True)  # stale pid file from a killed daemon blocks the start
        say(f"starting dockerd on {layout.url} (log {program.log})")
        proc = program.start()
        pid = proc.pid
    wait_until("dockerd", lambda: docker_ping(str(layout.socket)), DOCKERD_START_DEADLINE, proc, program.log)
    components = docker_components(layout.url)
    info = DockerInfo(url=layout.url, ours=True, pid=pid, log=program.log, server_version=components["Engine"])

    # containerd: dockerd starts its own (supervised) one unless a system containerd runs.
    if "containerd" not in components:
        raise ServiceError(f"dockerd does not report a working containerd{log_tail(program.log)}")
    info.containerd = components["containerd"]
    own = find_pids(containerd_identify(layout))
    if own:
        info.containerd_pid = own[0]
        write_atomic(RUN / "containerd.pid", f"{own[0]}\n")
        if parent_pid(own[0]) != pid:
            info.note = f"containerd {own[0]} was left by an earlier dockerd; this dockerd adopted it"
        result = run(["ctr", "--address", str(layout.containerd_socket), "version"], timeout=20, check=False)
        if result.returncode != 0:
            raise ServiceError(f"containerd at {layout.containerd_socket} does not answer: {result.stderr}")
    elif Path(SYSTEM_CONTAINERD_SOCK).exists():
        info.note = f"dockerd uses the system containerd at {SYSTEM_CONTAINERD_SOCK}"
    else:
        raise ServiceError(f"dockerd runs but its containerd was not found{log_tail(program.log)}")
    return info


# --------------------------------------------------------------------------- registries and moto


def registry_config_path(name: str) -> Path:
    return STATE / "registry" / f"{name}.yml"


def registry_program(name: str) -> Program:
    config = registry_config_path(name)

    def identify(cmdline: Sequence[str]) -> bool:
        return bool(cmdline) and cmdline[0] in (REGISTRY_BIN, "docker-registry") and cmdline[-1] == str(config)

    return Program(
        f"registry-{name}",
        (REGISTRY_BIN, "serve", str(config)),
        LOGS / f"registry-{name}.log",
        identify,
        env_drop_prefixes=("REGISTRY_",),  # REGISTRY_* variables would override the config file
    )


def write_registry_config(name: str, port: int) -> Path:
    storage = STATE / "registry" / name
    storage.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {
            "level": "info",
            "formatter": "text",
            "fields": {"service": f"registry-{name}"},
            # Access log (one line per request) goes to stdout, i.e. the log file.
            "accesslog": {"disabled": False},
        },
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
            "redirect": {"disable": True},
        },
        # No "debug" section: the debug/metrics server stays off.
        "http": {
            "addr": f"{HOST}:{port}",
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
    }
    path = registry_config_path(name)
    text = "# generated by include/scripts/services.py; edits are overwritten\n" + yaml.safe_dump(
        config, sort_keys=False
    )
    if not path.exists() or path.read_text() != text:
        write_atomic(path, text)
    return path


def moto_python() -> str:
    venv_python = REPO / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


def moto_program() -> Program:
    def identify(cmdline: Sequence[str]) -> bool:
        return (
            "moto.server" in cmdline
            and arg_value(cmdline, "-p") == str(MOTO_PORT)
            and arg_value(cmdline, "-H") == HOST
        )

    return Program(
        "moto",
        (moto_python(), "-m", "moto.server", "-H", HOST, "-p", str(MOTO_PORT)),
        LOGS / "moto.log",
        identify,
    )


@dataclass
class ServerInfo:
    name: str
    url: str
    ours: bool
    pid: int | None
    log: Path
    extra: dict[str, str] = field(default_factory=dict)


def start_server(program: Program, port: int) -> tuple[int, subprocess.Popen[bytes] | None]:
    pid = program.running_pid()
    if pid is not None:
        return pid, None
    if port_open(port):
        raise ServiceError(
            f"{HOST}:{port} is taken by a program this project did not start; stop it, then run `up` again"
        )
    say(f"starting {program.name} on {HOST}:{port} (log {program.log})")
    proc = program.start()
    return proc.pid, proc


# --------------------------------------------------------------------------- base OS image


def mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4].encode().decode("unicode_escape")
        if mount_point == prefix or mount_point.startswith(prefix + "/"):
            found.append(mount_point)
    return sorted(found, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """rm -rf that first unmounts what an interrupted debootstrap left mounted inside."""
    if not path.exists():
        return
    for mount_point in mounts_below(path):
        run(["umount", "--lazy", mount_point])
    if mounts_below(path):
        raise ServiceError(f"cannot unmount everything below {path}; not deleting it")
    shutil.rmtree(path)


def build_rootfs_tarball() -> None:
    rootfs = BASE_DIR / "rootfs"
    log = LOGS / "debootstrap.log"
    remove_tree(rootfs)
    rootfs.mkdir(parents=True)
    say(f"debootstrap {BASE_SUITE} into {rootfs} (log {log}); takes a minute or two")
    started = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", PATH=ensure_sbin_path(os.environ.get("PATH", "")))
    run(
        [DEBOOTSTRAP, "--variant=minbase", f"--include={BASE_INCLUDE}", BASE_SUITE, str(rootfs), BASE_MIRROR],
        env=env, log=log, timeout=3600,
    )
    # Keep the image small: no downloaded .debs, package lists or apt caches.
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/archives/partial/*",
                    "var/cache/apt/*.bin", "var/lib/apt/lists/*", "var/cache/debconf/*-old",
                    "var/log/apt/*", "var/log/bootstrap.log", "var/log/dpkg.log", "var/log/alternatives.log"):
        for item in rootfs.glob(pattern):
            if item.is_dir() and not item.is_symlink():
                if item.name != "partial":
                    shutil.rmtree(item)
            else:
                item.unlink()
    if mounts_below(rootfs):
        raise ServiceError(f"debootstrap left mounts below {rootfs}: {mounts_below(rootfs)}")
    tmp = BASE_TARBALL.with_name(BASE_TARBALL.name + ".partial")
    run(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "-f", str(tmp), "."], log=log)
    os.replace(tmp, BASE_TARBALL)
    remove_tree(rootfs)
    say(f"rootfs tarball {BASE_TARBALL} ({BASE_TARBALL.stat().st_size / 1e6:.0f} MB) "
        f"in {time.monotonic() - started:.0f}s")


def ensure_base_image(docker_url: str) -> dict[str, Any]:
    registry = f"{HOST}:{REGISTRY_PORTS['cache']}"
    tag_ref = f"{registry}/{BASE_REPOSITORY}:{BASE_TAG}"
    digest = manifest_digest(registry, BASE_REPOSITORY, BASE_TAG)
    created = False
    if digest is None:
        BASE_DIR.mkdir(parents=True, exist_ok=True)
        if BASE_TARBALL.exists():
            say(f"re-importing cached rootfs {BASE_TARBALL}")
        else:
            build_rootfs_tarball()
        env = docker_env(docker_url)
        log = LOGS / "base-os.log"
        run(
            [DOCKER_CLI, "import",
             "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "--change", "ENV LANG=C.UTF-8",
             "--change", 'CMD ["/bin/bash"]',
             "--message", f"debootstrap --variant=minbase {BASE_SUITE} (rocm-nightly services.py)",
             str(BASE_TARBALL), tag_ref],
            env=env, log=log, timeout=1800,
        )
        pushed = run([DOCKER_CLI, "push", tag_ref], env=env, timeout=1800)
        with log.open("a") as out:
            out.write(pushed.stdout + pushed.stderr)
        digest = manifest_digest(registry, BASE_REPOSITORY, BASE_TAG)
        match = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed.stdout)
        if digest is None or (match and match.group(1) != digest):
            raise ServiceError(f"pushed {tag_ref} but the registry reports digest {digest}")
        created = True
        say(f"pushed {tag_ref} as {digest}")
    record = {
        "repository": f"{registry}/{BASE_REPOSITORY}",
        "tag": BASE_TAG,
        "tag_reference": tag_ref,
        "digest": digest,
        "reference": f"{registry}/{BASE_REPOSITORY}@{digest}",
        "compressed_size_bytes": manifest_layers_size(registry, BASE_REPOSITORY, digest),
        "rootfs_tarball": str(BASE_TARBALL),
        "rootfs_tarball_bytes": BASE_TARBALL.stat().st_size if BASE_TARBALL.exists() else None,
        "created_now": created,
    }
    previous = json.loads(BASE_RECORD.read_text()) if BASE_RECORD.exists() else {}
    keep = {k: v for k, v in record.items() if k != "created_now"}
    if {k: previous.get(k) for k in keep} != keep:
        write_atomic(BASE_RECORD, json.dumps(keep, indent=2) + "\n")
    return record


# --------------------------------------------------------------------------- up / down / status


def write_outputs(docker: DockerInfo, servers: dict[str, ServerInfo], base: dict[str, Any]) -> dict[str, str]:
    env = {
        "DOCKER_HOST": docker.url,
        "DOCKER_BUILDKIT": "1",
        "ROCM_NIGHTLY_DOCKER_CLI": DOCKER_CLI,
        "ROCM_NIGHTLY_DOCKER_STARTED_BY_PROJECT": "1" if docker.ours else "0",
        "ROCM_NIGHTLY_CACHE_REGISTRY": f"{HOST}:{REGISTRY_PORTS['cache']}",
        "ROCM_NIGHTLY_PUBLIC_REGISTRY": f"{HOST}:{REGISTRY_PORTS['public']}",
        "ROCM_NIGHTLY_MOTO_URL": f"http://{HOST}:{MOTO_PORT}",
        "ROCM_NIGHTLY_BASE_OS_IMAGE": base["reference"],
        "ROCM_NIGHTLY_STATE_DIR": str(STATE),
        "ROCM_NIGHTLY_CACHE_REGISTRY_LOG": str(servers["registry-cache"].log),
        "ROCM_NIGHTLY_PUBLIC_REGISTRY_LOG": str(servers["registry-public"].log),
        "ROCM_NIGHTLY_CACHE_REGISTRY_STORAGE": str(STATE / "registry" / "cache"),
        "ROCM_NIGHTLY_PUBLIC_REGISTRY_STORAGE": str(STATE / "registry" / "public"),
        "ROCM_NIGHTLY_MOTO_LOG": str(servers["moto"].log),
        "ROCM_NIGHTLY_DOCKERD_LOG": str(docker.log) if docker.log else "",
    }
    services: dict[str, Any] = {
        "docker": {
            "url": docker.url,
            "started_by_project": docker.ours,
            "pid": docker.pid,
            "log": str(docker.log) if docker.log else None,
            "engine_version": docker.server_version,
            "containerd_version": docker.containerd or None,
            "containerd_pid": docker.containerd_pid,
            "cli": DOCKER_CLI,
        }
    }
    for name, server in servers.items():
        services[name] = {
            "url": server.url,
            "address": server.url.removeprefix("http://"),
            "started_by_project": server.ours,
            "pid": server.pid,
            "log": str(server.log),
            **server.extra,
        }
    document = {
        "schema": 1,
        "repo": str(REPO),
        "state_dir": str(STATE),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "services": services,
        "base_os_image": {k: v for k, v in base.items() if k != "created_now"},
        "env": env,
    }
    write_atomic(SERVICES_JSON, json.dumps(document, indent=2) + "\n")
    lines = ["# generated by include/scripts/services.py up; KEY=VALUE, one per line"]
    for key, value in env.items():
        if any(ch.isspace() or ch in "'\"$`\\#" for ch in value):
            raise ServiceError(f"{key}={value!r} cannot be written as a plain KEY=VALUE line")
        lines.append(f"{key}={value}")
    write_atomic(SERVICES_ENV, "\n".join(lines) + "\n")
    return env


def cmd_up() -> int:
    started = time.monotonic()
    ensure_packages()
    for path in (STATE, LOGS, RUN):
        path.mkdir(parents=True, exist_ok=True)
    with state_lock():
        # Start the servers first (cheap), then the engine, then wait for the servers.
        pending: dict[str, tuple[Program, int, int, subprocess.Popen[bytes] | None, str]] = {}
        for name, port in REGISTRY_PORTS.items():
            write_registry_config(name, port)
            program = registry_program(name)
            pid, proc = start_server(program, port)
            pending[program.name] = (program, port, pid, proc, f"http://{HOST}:{port}/v2/")
        moto = moto_program()
        pid, proc = start_server(moto, MOTO_PORT)
        pending["moto"] = (moto, MOTO_PORT, pid, proc, f"http://{HOST}:{MOTO_PORT}/moto-api/config")

        docker = ensure_docker()

        servers: dict[str, ServerInfo] = {}
        for name, (program, port, pid, proc, probe) in pending.items():
            def ready(probe: str = probe, any_2xx: bool = name == "moto") -> bool:
                return http_ok(probe, any_2xx=any_2xx)

            wait_until(f"{name} ({probe})", ready, SERVER_START_DEADLINE, proc, program.log)
            extra = {}
            if name.startswith("registry-"):
                reg = name.removeprefix("registry-")
                extra = {"config": str(registry_config_path(reg)), "storage": str(STATE / "registry" / reg)}
            servers[name] = ServerInfo(name, f"http://{HOST}:{port}", True, pid, program.log, extra)

        base = ensure_base_image(docker.url)
        write_outputs(docker, servers, base)

    say("")
    who = f"started by rocm-nightly, pid {docker.pid}" if docker.ours else "external daemon"
    say(f"docker           {docker.url}  engine {docker.server_version}, "
        f"containerd {docker.containerd or '?'}  ({who})")
    if docker.note:
        say(f"                 note: {docker.note}")
    for name, server in servers.items():
        say(f"{name:<16} {server.url}  (pid {server.pid}, log {server.log})")
    how = "built now" if base["created_now"] else "reused"
    say(f"base OS image    {base['reference']}  ({base['compressed_size_bytes'] / 1e6:.0f} MB compressed, {how})")
    say(f"wrote {SERVICES_JSON} and {SERVICES_ENV}  ({time.monotonic() - started:.1f}s)")
    return 0


def cmd_down() -> int:
    layout = docker_layout()
    with state_lock():
        stopped_any = False
        programs = [moto_program(), registry_program("public"), registry_program("cache")]
        for program in programs:
            pid = program.running_pid()
            if pid is not None:
                stopped_any |= stop_process(pid, program.identify, program.name, STOP_DEADLINE)
            program.pidfile.unlink(missing_ok=True)
        dockerd = dockerd_program(layout)
        pid = dockerd.running_pid()
        if pid is not None:
            stopped_any |= stop_process(pid, dockerd.identify, "dockerd", DOCKERD_STOP_DEADLINE)
        dockerd.pidfile.unlink(missing_ok=True)
        # dockerd stops its containerd (and the shims) itself; whatever is left is ours to end.
        for what, identify in (("containerd-shim", shim_identify(layout)), ("containerd", containerd_identify(layout))):
            for leftover in find_pids(identify):
                stopped_any |= stop_process(leftover, identify, what, STOP_DEADLINE)
        (RUN / "containerd.pid").unlink(missing_ok=True)
        for path in (SERVICES_JSON, SERVICES_ENV):
            path.unlink(missing_ok=True)
    say("stopped the services rocm-nightly started; data stays in .state" if stopped_any
        else "nothing started by rocm-nightly was running")
    return 0


def cmd_status() -> int:
    layout = docker_layout()
    dockerd = dockerd_program(layout)
    own_pid = dockerd.running_pid() if RUN.exists() else None
    external = external_docker_url()
    if external is not None:
        state = "running" if docker_answers(external) else "stopped"
        say(f"docker           {state:<8} {external}  (external daemon, not started by rocm-nightly)")
    else:
        state = "running" if own_pid is not None and docker_ping(str(layout.socket)) else "stopped"
        started = f"started by rocm-nightly, pid {own_pid}" if own_pid else "not running"
        say(f"docker           {state:<8} {layout.url}  ({started})")
    containerd = find_pids(containerd_identify(layout))
    if containerd:
        say(f"containerd       running  {layout.containerd_socket}  (started by our dockerd, pid {containerd[0]})")
    checks = [(registry_program(n), p, f"http://{HOST}:{p}/v2/") for n, p in REGISTRY_PORTS.items()]
    checks.append((moto_program(), MOTO_PORT, f"http://{HOST}:{MOTO_PORT}/moto-api/config"))
    for program, port, probe in checks:
        pid = program.running_pid() if RUN.exists() else None
        answers = http_ok(probe, any_2xx=program.name == "moto")
        state = "running" if answers else "stopped"
        if pid is not None:
            who = f"started by rocm-nightly, pid {pid}"
        elif answers or port_open(port):
            who = "NOT started by rocm-nightly"
        else:
            who = "not running"
        say(f"{program.name:<16} {state:<8} {HOST}:{port}  ({who})")
    if BASE_RECORD.exists():
        say(f"base OS image    {json.loads(BASE_RECORD.read_text())['reference']}")
    else:
        say("base OS image    not built yet")
    return 0


def command_line(script: str, doc: str | None, commands: dict[str, Callable[[], int]],
                 argv: Sequence[str] | None = None) -> int:
    """``<script> <command>``: run one of ``commands``; a ServiceError is printed as one line, exit status 1."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=list(commands))
    args = parser.parse_args(argv)
    try:
        return commands[args.command]()
    except ServiceError as err:
        print(f"{script} {args.command}: error: {err}", file=sys.stderr, flush=True)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    return command_line("services.py", __doc__, {"up": cmd_up, "down": cmd_down, "status": cmd_status}, argv)


if __name__ == "__main__":
    sys.exit(main())
