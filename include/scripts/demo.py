"""`make demo`: three nights of the real nightly DAG on the sample project, against the local services.

Night 1 releases a new commit (full rebuild), night 2 the same commit again
(everything reused: no build), night 3 a commit that changes only package
source (base reused; wheels and release image rebuilt). Then it installs the
nightly wheels with pip from the local index served over HTTP, and runs the
nightly image. Each night is ``airflow dags test`` (SQLite, the demo config).
Every command is an argument list.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".state"
VENV_BIN = Path(sys.executable).parent
AIRFLOW_HOME = STATE / "airflow-demo"
WHEELS = STATE / "wheels"
INDEX_PORT = 5103
DAG_ID = "rocm_nightly_release"
sys.path.insert(0, str(REPO / "plugins"))

from rocm_release.adapters.config_file import load_config  # noqa: E402
from rocm_release.adapters.registry.oci import OciRegistry  # noqa: E402

CONFIG_FILE = REPO / "include" / "config" / "demo.yaml"
POOLS_FILE = REPO / "include" / "airflow" / "pools.json"
CONNECTIONS_FILE = REPO / "include" / "airflow" / "connections.json"


def demo_env() -> dict[str, str]:
    """The environment of every Airflow command the demo runs (and, through include/scripts/ui.py, the UI's)."""
    env = dict(os.environ)
    services = STATE / "services.env"
    if not services.exists():
        raise SystemExit("the local services are not up: run `make services-up` first")
    for line in services.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key] = value
    env.update({
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "ROCM_NIGHTLY_CONFIG": str(CONFIG_FILE),
        "ROCM_NIGHTLY_CACHE_DIR": str(STATE / "cache"),
        "AIRFLOW__API__HOST": "127.0.0.1",  # the web UI (`make ui`): loopback only
    })
    return env


def run(args: list[str], env: dict[str, str], *, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    """Run one command; stop the demo if it fails (its output is shown then)."""
    print("+", " ".join(args), flush=True)
    proc = subprocess.run(args, env=env, capture_output=quiet, text=True, check=False)
    if proc.returncode != 0:
        if quiet:
            print(proc.stdout[-20000:], proc.stderr[-20000:], sep="\n")
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(args)}")
    return proc


def registry_tags(reg: OciRegistry, repo: str) -> set[str]:
    """Every tag of a repository (empty when it does not exist)."""
    return set(reg.tag_names(repo))


def start_from_empty(env: dict[str, str]) -> None:
    """Remove what earlier demos published, so night 1 really starts from nothing."""
    config = load_config(CONFIG_FILE)
    for reg_config in (config.cache_registry, config.public_registry):
        reg = OciRegistry(reg_config.host, scheme=reg_config.scheme)
        tags = sorted(registry_tags(reg, reg_config.repository))
        if tags:
            reg.delete_tags(reg_config.repository, tags)
            print(f"removed {len(tags)} tags of earlier demos from {reg_config.host}/{reg_config.repository}")
    if WHEELS.exists():
        shutil.rmtree(WHEELS)
    WHEELS.mkdir(parents=True)


def night(number: int, title: str, commit: str, env: dict[str, str]) -> dict[str, object]:
    """One night: a release run of ``commit`` that promotes, and its summary."""
    print(f"\n=== night {number}: {title} ({commit[:12]}) ===", flush=True)
    started = time.monotonic()
    conf = json.dumps({"commit": commit, "promote": True})
    run([str(VENV_BIN / "airflow"), "dags", "test", DAG_ID, "-c", conf], env, quiet=True)
    seconds = time.monotonic() - started
    report: dict[str, object] = json.loads((WHEELS / commit / "RELEASE.json").read_text())
    print((WHEELS / commit / "RELEASE.md").read_text())
    print(f"night {number} took {seconds:.0f} s")
    report["wall_seconds"] = round(seconds, 1)
    return report


@contextlib.contextmanager
def serve_index() -> Iterator[str]:
    """Serve the wheel store over HTTP on 127.0.0.1 while the block runs."""
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(WHEELS), str(INDEX_PORT)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{INDEX_PORT}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), contextlib.closing(__import__("socket").create_connection(
                    ("127.0.0.1", INDEX_PORT), timeout=1)):
                break
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"the index server on {url} did not start")
            time.sleep(0.1)  # polling a readiness condition with a deadline
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> int:
    """Three nights, then pip install from the nightly index and docker run of the nightly image."""
    env = demo_env()
    AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    out = run([sys.executable, str(REPO / "include" / "demo" / "make_history.py")], env, quiet=True)
    commits = json.loads(out.stdout.strip().splitlines()[-1])
    print("sample project history:", json.dumps(commits, indent=2))
    run([str(VENV_BIN / "airflow"), "db", "migrate"], env, quiet=True)
    config = load_config(CONFIG_FILE)
    # The files a deployment imports: the build pool (one slot per build host; here one, this
    # machine's dockerd) and the connections the vLLM config names, as placeholders (the demo
    # config names none, so none is used here). Again: the pool gets the file's slots back, and
    # connections that exist already are left as they are.
    run([str(VENV_BIN / "airflow"), "pools", "import", str(POOLS_FILE)], env, quiet=True)
    run([str(VENV_BIN / "airflow"), "connections", "import", str(CONNECTIONS_FILE)], env, quiet=True)
    start_from_empty(env)
    cache = OciRegistry(config.cache_registry.host, scheme=config.cache_registry.scheme)
    total = time.monotonic()
    reports = [night(1, "a new commit: full rebuild", commits["initial"], env)]
    before = registry_tags(cache, config.cache_registry.repository)
    reports.append(night(2, "the same commit again: everything reused", commits["initial"], env))
    after = registry_tags(cache, config.cache_registry.repository)
    print(f"night 2: the cache registry gained {len(after - before)} tags (expected 0)")
    reports.append(night(3, "a commit changing only package source", commits["source_change"], env))
    for number, report in enumerate(reports, 1):
        paths = {name: var["path"] for name, var in report["variants"].items()}  # type: ignore[attr-defined]
        print(f"night {number}: {report['wall_seconds']} s — {paths}")
    print(f"three nights: {time.monotonic() - total:.0f} s")
    variant = config.variants[0].name
    with serve_index() as url, tempfile.TemporaryDirectory(prefix="rocm-nightly-demo-venv-") as venv:
        index = f"{url}/nightly/{variant}/"
        print(f"\n=== pip install from the nightly index {index} ===")
        run([sys.executable, "-m", "venv", venv], env)
        py = str(Path(venv) / "bin" / "python")
        # Only our index: no pip.conf of this machine may add another.
        pip_env = {**env, "PIP_CONFIG_FILE": os.devnull}
        run([py, "-m", "pip", "install", "--no-cache-dir", "--index-url", index, config.project.name], pip_env)
        run([py, "-c", "import tinyllm; print(tinyllm.info())"], env)
    image = f"{config.public_registry.host}/{config.public_registry.repository}:nightly-{variant}"
    print(f"\n=== docker run {image} ===")
    docker = env.get("ROCM_NIGHTLY_DOCKER_CLI", "docker")
    run([docker, "pull", image], env, quiet=True)
    run([docker, "run", "--rm", "--network", "none", image], env)
    print(
        "\nTo open the same DAG in the web UI with the demo config (trigger it, or backfill from the UI):\n"
        "  make ui        # prints http://127.0.0.1:8080 and the login; `make ui-down` stops it\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
