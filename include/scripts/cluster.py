#!/usr/bin/env python3
"""A distributed Airflow on this machine, as production runs the nightly: `make cluster-up`.

    cluster.py up       start what is missing (idempotent), on top of `make services-up`
    cluster.py down     stop only what this script started; data stays in .state/cluster
    cluster.py status   one line per part

Everything listens on 127.0.0.1 and lives under ``.state/cluster/``:

- PostgreSQL (Debian's), a cluster of its own on 127.0.0.1:5110: Airflow's metadata database and
  the Celery result backend;
- Redis (Debian's ``redis-server``) on 127.0.0.1:5111: the Celery broker (a password of its own);
- Airflow with the ``CeleryExecutor``: api-server (the web UI, 127.0.0.1:5112), scheduler,
  dag-processor, triggerer; task logs go to S3 (the moto server), where the api-server reads them;
- three Celery workers standing for three hosts (``HOSTS``): ``airflow-worker`` on the default queue,
  ``rocm-host-a`` and ``rocm-host-b`` on the ``rocm`` queue. A build host has its own dockerd (data
  root, exec root, socket), its own git mirror cache, temp folder and home, handed to it in its
  environment as a real host's would be; a worker shares nothing with another but Airflow, the
  registries and the wheel store;
- ``git daemon`` on 127.0.0.1:5113 serving the sample project (the hosts fetch it over the network);
- the nightly DAG with ``include/config/cluster.yaml``: wheels on S3 (moto), its own repositories.

Pools: ``rocm_builders`` 2 slots (one per build host), ``rocm_publishing`` 1. The scheduler does not
start runs on the cron (``use_job_schedule = False``): runs are triggered (UI, REST, backfills).
Secrets (database and broker passwords, Fernet key, JWT secret) are made once, into a 0600 file,
and reach the processes through their environment, never their command lines.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import services as svc  # noqa: E402

REPO = svc.REPO
CLUSTER = svc.STATE / "cluster"
LOGS = CLUSTER / "logs"
RUN = CLUSTER / "run"
HOME = CLUSTER / "airflow"
SECRETS_FILE = CLUSTER / "secrets.json"
BIN = Path(sys.executable).parent
AIRFLOW = BIN / "airflow"
CONFIG_FILE = REPO / "include" / "config" / "cluster.yaml"
MAKE_HISTORY = REPO / "include" / "demo" / "make_history.py"
COMMITS_FILE = CLUSTER / "git" / "commits.json"

HOST = svc.HOST
PG_PORT = 5110
REDIS_PORT = 5111
API_PORT = 5112
GIT_PORT = 5113
API_URL = f"http://{HOST}:{API_PORT}"
AWS_CONN_ID = "aws_default"  # the S3 store's (cluster.yaml) and the remote logs' connection
STORE_BUCKET = "rocm-nightly-cluster"
LOG_BUCKET = "rocm-nightly-cluster-logs"
USER = "admin"
MOTO_KEY = "cluster"  # moto takes any access key; on AWS the connection holds a real one (or none: the host role)
BUILD_POOL_SLOTS = 2
MARKER = "ROCM_NIGHTLY_CLUSTER"  # in the environment of every process of ours, the task processes too
# A dead worker's tasks are noticed after this long without a heartbeat (Airflow's default: 300 s).
HEARTBEAT_TIMEOUT = 60
START_DEADLINE = 180.0
APT = {"postgresql": ("/usr/share/postgresql-common/pg_wrapper",), "redis-server": ("/usr/bin/redis-server",),
       "git": ("/usr/lib/git-core/git-daemon",)}


@dataclass(frozen=True)
class Host:
    """One Celery worker and the host it stands for."""

    name: str
    queue: str
    concurrency: int
    builds: bool  # a ROCm build host: a dockerd of its own

    @property
    def root(self) -> Path:
        return CLUSTER / "hosts" / self.name


HOSTS = (
    Host("airflow-worker", "default", 8, builds=False),
    Host("rocm-host-a", "rocm", 1, builds=True),
    Host("rocm-host-b", "rocm", 1, builds=True),
)
COMPONENTS = {
    "api-server": ["api-server", "--host", HOST, "--port", str(API_PORT), "--workers", "1"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}


def say(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- secrets and environment


def cluster_secrets() -> dict[str, str]:
    """The cluster's passwords and keys: made once, kept in a 0600 file."""
    if SECRETS_FILE.exists():
        found: dict[str, str] = json.loads(SECRETS_FILE.read_text())
        return found
    from cryptography.fernet import Fernet

    made = {"postgres": secrets.token_urlsafe(24), "redis": secrets.token_urlsafe(24),
            "fernet": Fernet.generate_key().decode(), "jwt": secrets.token_urlsafe(32)}
    CLUSTER.mkdir(parents=True, exist_ok=True)
    fd = os.open(SECRETS_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(made, out)
    return made


def services_env() -> dict[str, str]:
    """What `make services-up` wrote: the registries, moto, the docker CLI."""
    if not svc.SERVICES_ENV.exists():
        raise svc.ServiceError("the local services are not up: run `make services-up` first")
    pairs = (line.split("=", 1) for line in svc.SERVICES_ENV.read_text().splitlines()
             if line and not line.startswith("#") and "=" in line)
    return dict(pairs)


def database_url(keys: dict[str, str], driver: str = "postgresql+psycopg2") -> str:
    return f"{driver}://airflow:{keys['postgres']}@{HOST}:{PG_PORT}/airflow"


def airflow_env(keys: dict[str, str]) -> dict[str, str]:
    """The environment every Airflow process of the cluster shares (what a deployment's airflow.cfg says)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DOCKER_", "ROCM_NIGHTLY_"))}
    return {
        **base,
        "PATH": f"{BIN}{os.pathsep}{svc.ensure_sbin_path(base.get('PATH', ''))}",
        "PYTHONPATH": str(Path(__file__).resolve().parent),  # cluster_host (hostname_callable)
        MARKER: str(CLUSTER),
        "AIRFLOW_HOME": str(HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet"],
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "cluster_host.hostname",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{API_URL}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url(keys),
        "AIRFLOW__CELERY__BROKER_URL": f"redis://:{keys['redis']}@{HOST}:{REDIS_PORT}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{database_url(keys)}",
        # Longer than a build may run (build.timeout_minutes, 6 h by default): the broker redelivers a task
        # not acknowledged by then, and the redelivered copy would start the same build again.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": str(7 * 3600),
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(API_PORT),
        "AIRFLOW__API__BASE_URL": API_URL,
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt"],
        "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
        "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"s3://{LOG_BUCKET}/logs",
        "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": AWS_CONN_ID,
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "ROCM_NIGHTLY_CONFIG": str(CONFIG_FILE),
    }


def dockerd_layout(host: Host) -> svc.DockerLayout:
    """A build host's own daemon; its sockets under /run (the unix socket path limit)."""
    short = Path("/run") / f"rn-{hashlib.sha256(str(REPO).encode()).hexdigest()[:8]}-{host.name}"
    return svc.DockerLayout(short / "docker.sock", short / "exec", host.root / "docker", host.root / "dockerd.pid")


def host_env(host: Host, keys: dict[str, str], services: dict[str, str]) -> dict[str, str]:
    """One worker's environment: the cluster's, plus what this host has of its own."""
    # Its own Airflow home, so its own task log folder: the api-server finds a task's log on S3 only.
    env = {**airflow_env(keys), "AIRFLOW_HOME": str(host.root / "airflow"),
           "ROCM_NIGHTLY_HOSTNAME": host.name, "HOME": str(host.root / "home"),
           "TMPDIR": str(host.root / "tmp"), "ROCM_NIGHTLY_CACHE_DIR": str(host.root / "cache")}
    if host.builds:
        env.update({"DOCKER_HOST": dockerd_layout(host).url, "DOCKER_BUILDKIT": "1",
                    "ROCM_NIGHTLY_DOCKER_CLI": services["ROCM_NIGHTLY_DOCKER_CLI"]})
    return env


# --------------------------------------------------------------------------- programs


def _pid_flag(name: str) -> Path:
    return RUN / f"{name}.airflow-pid"


def _identify(pidfile: Path, retitled: Callable[[str], bool]) -> Callable[[Sequence[str]], bool]:
    """Ours: started with ``--pid <pidfile>``, or that process after it renamed itself (setproctitle: the
    api-server becomes ``airflow api_server -- host:… port:…``, a Celery worker ``[celeryd: <name>@…:MainProcess]``)."""
    def identify(cmdline: Sequence[str]) -> bool:
        return svc.arg_value(cmdline, "--pid") == str(pidfile) or retitled(" ".join(cmdline))
    return identify


def airflow_programs(keys: dict[str, str], services: dict[str, str]) -> list[svc.Program]:
    """The api-server, scheduler, dag-processor, triggerer and the workers."""
    programs = []
    for name, args in COMPONENTS.items():
        pidfile = _pid_flag(name)
        title = f"airflow {name.replace('-', '_')} -- host:{HOST} port:{API_PORT}"
        programs.append(svc.Program(f"airflow-{name}", (str(AIRFLOW), *args, "--pid", str(pidfile)),
                                    LOGS / f"{name}.log", _identify(pidfile, lambda line, t=title: line == t),
                                    env=airflow_env(keys), run_dir=RUN))
    for host in HOSTS:
        pidfile = _pid_flag(host.name)
        argv = (str(AIRFLOW), "celery", "worker", "--queues", host.queue, "--concurrency", str(host.concurrency),
                "--celery-hostname", f"{host.name}@%h", "--skip-serve-logs", "--pid", str(pidfile))
        main = re.compile(rf"^\[celeryd: {re.escape(host.name)}@[^:\]]*:MainProcess\]")
        programs.append(svc.Program(f"worker-{host.name}", argv, LOGS / f"worker-{host.name}.log",
                                    _identify(pidfile, lambda line, m=main: m.match(line) is not None),
                                    env=host_env(host, keys, services), run_dir=RUN))
    return programs


def postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise svc.ServiceError("no /usr/lib/postgresql/*/bin/postgres: is Debian's postgresql installed?")
    return found[-1].parent


def postgres_program() -> svc.Program:
    data = CLUSTER / "postgres"
    argv = (str(postgres_bin() / "postgres"), "-D", str(data), "-h", HOST, "-p", str(PG_PORT),
            "-k", str(CLUSTER / "postgres-run"))

    def identify(cmdline: Sequence[str]) -> bool:
        return bool(cmdline) and cmdline[0].endswith("/postgres") and svc.arg_value(cmdline, "-D") == str(data)

    return svc.Program("postgres", argv, LOGS / "postgres.log", identify, user="postgres", run_dir=RUN)


def redis_program() -> svc.Program:
    conf = CLUSTER / "redis.conf"
    # redis-server rewrites its process title to "<binary> <address>"; the address tells ours apart.
    return svc.Program("redis", ("/usr/bin/redis-server", str(conf)), LOGS / "redis.log",
                       lambda cmdline: bool(cmdline) and cmdline[0].startswith("/usr/bin/redis-server")
                       and f"{HOST}:{REDIS_PORT}" in " ".join(cmdline), run_dir=RUN)


def git_program() -> svc.Program:
    base = CLUSTER / "git"
    argv = ("/usr/lib/git-core/git-daemon", "--reuseaddr", f"--listen={HOST}", f"--port={GIT_PORT}",
            f"--base-path={base}", "--export-all", "--informative-errors", str(base))
    return svc.Program("git-daemon", argv, LOGS / "git-daemon.log",
                       lambda cmdline: f"--base-path={base}" in cmdline, run_dir=RUN)


def dockerd_program(host: Host) -> svc.Program:
    program = svc.dockerd_program(dockerd_layout(host), f"dockerd-{host.name}", LOGS / f"dockerd-{host.name}.log")
    return svc.Program(program.name, program.argv, program.log, program.identify, run_dir=RUN)


# --------------------------------------------------------------------------- bringing parts up


def ensure_postgres(keys: dict[str, str]) -> None:
    data = CLUSTER / "postgres"
    sockets = CLUSTER / "postgres-run"
    for folder in (data, sockets):
        folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "postgres", "postgres")
    data.chmod(0o700)
    if not (data / "PG_VERSION").exists():
        pwfile = CLUSTER / "postgres-run" / "pw"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(keys["postgres"] + "\n")
        shutil.chown(pwfile, "postgres", "postgres")
        try:
            svc.run(["runuser", "-u", "postgres", "--", str(postgres_bin() / "initdb"), "-D", str(data),
                     "-U", "airflow", f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
                    log=LOGS / "postgres-initdb.log")
        finally:
            pwfile.unlink(missing_ok=True)
    program = postgres_program()
    pid, proc = svc.start_server(program, PG_PORT)
    env = {**os.environ, "PGPASSWORD": keys["postgres"]}
    ready = [str(postgres_bin() / "pg_isready"), "-q", "-h", HOST, "-p", str(PG_PORT)]
    svc.wait_until("postgres", lambda: subprocess.run(ready, check=False).returncode == 0, svc.SERVER_START_DEADLINE,
                   proc, program.log)
    psql = [str(postgres_bin() / "psql"), "-h", HOST, "-p", str(PG_PORT), "-U", "airflow", "-d", "postgres", "-tAc"]
    exists = svc.run([*psql, "SELECT 1 FROM pg_database WHERE datname = 'airflow'"], env=env).stdout.strip()
    if exists != "1":
        svc.run([*psql, "CREATE DATABASE airflow"], env=env)


def ensure_redis(keys: dict[str, str]) -> None:
    (CLUSTER / "redis").mkdir(parents=True, exist_ok=True)
    conf = CLUSTER / "redis.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"bind {HOST}\nport {REDIS_PORT}\nprotected-mode yes\ndaemonize no\ndir {CLUSTER / 'redis'}\n"
                  f"save \"\"\nappendonly no\nrequirepass {keys['redis']}\n")
    program = redis_program()
    pid, proc = svc.start_server(program, REDIS_PORT)
    svc.wait_until("redis", lambda: svc.port_open(REDIS_PORT), svc.SERVER_START_DEADLINE, proc, program.log)


def ensure_git() -> None:
    bare = CLUSTER / "git" / "tinyllm.git"
    if not (bare / "HEAD").exists() or not COMMITS_FILE.exists():
        out = svc.run([sys.executable, str(MAKE_HISTORY), str(bare)]).stdout
        svc.write_atomic(COMMITS_FILE, out.strip().splitlines()[-1] + "\n")  # label → sha, for tests and users
    program = git_program()
    pid, proc = svc.start_server(program, GIT_PORT)
    svc.wait_until("git daemon", lambda: svc.port_open(GIT_PORT), svc.SERVER_START_DEADLINE, proc, program.log)


def ensure_dockerd(host: Host) -> None:
    layout = dockerd_layout(host)
    program = dockerd_program(host)
    layout.socket.parent.mkdir(parents=True, exist_ok=True)
    proc = None
    if program.running_pid() is None:
        say(f"starting {program.name} ({layout.url}, data {layout.data_root})")
        proc = program.start()
    svc.wait_until(program.name, lambda: svc.docker_ping(str(layout.socket)), svc.DOCKERD_START_DEADLINE, proc,
                   program.log)


def ensure_buckets(services: dict[str, str]) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=services["ROCM_NIGHTLY_MOTO_URL"], region_name="us-east-1",
                      aws_access_key_id=MOTO_KEY, aws_secret_access_key=MOTO_KEY)
    have = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in (STORE_BUCKET, LOG_BUCKET):
        if bucket not in have:
            s3.create_bucket(Bucket=bucket)
    # The wheel store is public to read (pip and uv fetch from it without credentials); the logs are not.
    public_read = {"Version": "2012-10-17", "Statement": [{
        "Sid": "PublicRead", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{STORE_BUCKET}/*"}]}
    s3.put_bucket_policy(Bucket=STORE_BUCKET, Policy=json.dumps(public_read))


def prepare_airflow(keys: dict[str, str], services: dict[str, str]) -> None:
    """Migrate the database; import the pools and the S3 connection (into the database, as a deployment does)."""
    env = airflow_env(keys)
    HOME.mkdir(parents=True, exist_ok=True)
    svc.run([str(AIRFLOW), "db", "migrate"], env=env, log=LOGS / "airflow-setup.log", timeout=600)
    pools = json.loads((REPO / "include" / "airflow" / "pools.json").read_text())
    pools["rocm_builders"]["slots"] = BUILD_POOL_SLOTS
    pools["rocm_builders"]["description"] = "the cluster's two ROCm build hosts: rocm-host-a, rocm-host-b"
    connections = {AWS_CONN_ID: {
        "conn_type": "aws", "description": "S3 on the moto server: the wheel store and the task logs",
        "login": MOTO_KEY, "password": MOTO_KEY,
        "extra": {"endpoint_url": services["ROCM_NIGHTLY_MOTO_URL"], "region_name": "us-east-1"}}}
    for kind, document, extra in (("pools", pools, []), ("connections", connections, ["--overwrite"])):
        path = CLUSTER / f"{kind}.json"
        path.write_text(json.dumps(document, indent=2))
        svc.run([str(AIRFLOW), kind, "import", *extra, str(path)], env=env, log=LOGS / "airflow-setup.log")


def api_healthy() -> bool:
    try:
        with svc._OPENER.open(f"{API_URL}/api/v2/monitor/health", timeout=5) as answer:
            health = json.loads(answer.read())
    except (OSError, ValueError):
        return False
    return all((health.get(part) or {}).get("status") == "healthy"
               for part in ("metadatabase", "scheduler", "dag_processor", "triggerer"))


CELERY_APP = "airflow.providers.celery.executors.celery_executor.app"


def celery(keys: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """One ``celery`` command against the cluster's broker (inspect, control)."""
    argv = [str(BIN / "celery"), "--app", CELERY_APP, *args]
    return subprocess.run(argv, env=airflow_env(keys), capture_output=True, text=True, timeout=120, check=False)


def workers_answering(keys: dict[str, str]) -> dict[str, str]:
    """The Celery workers that answer a ping through the broker: host name → worker name (``host@machine``)."""
    out = celery(keys, "inspect", "ping", "--timeout", "3", "--json").stdout.strip()
    try:
        answers = json.loads(out.splitlines()[-1]) if out else {}
    except ValueError:
        return {}
    return {name.split("@", 1)[0]: name for name in answers}


def password() -> str:
    found: dict[str, str] = json.loads((HOME / "simple_auth_manager_passwords.json.generated").read_text())
    return found[USER]


def cmd_up() -> int:
    started = time.monotonic()
    svc.ensure_packages(APT)
    for folder in (CLUSTER, LOGS, RUN):
        folder.mkdir(parents=True, exist_ok=True)
    services = services_env()
    keys = cluster_secrets()
    ensure_postgres(keys)
    ensure_redis(keys)
    ensure_git()
    for host in HOSTS:
        if host.builds:
            ensure_dockerd(host)
    ensure_buckets(services)
    for host in HOSTS:
        for folder in ("cache", "tmp", "home", "airflow"):
            (host.root / folder).mkdir(parents=True, exist_ok=True)
    programs = airflow_programs(keys, services)
    if any(p.running_pid() is None for p in programs):
        prepare_airflow(keys, services)
    for program in programs:
        if program.running_pid() is None:
            say(f"starting {program.name} (log {program.log})")
            program.start()
    alive = programs_alive(programs)
    svc.wait_until("the api-server, scheduler, dag-processor and triggerer", api_healthy, START_DEADLINE,
                   log=LOGS / "scheduler.log")
    alive()
    wanted = {h.name for h in HOSTS}
    svc.wait_until(f"the Celery workers {sorted(wanted)}", lambda: wanted <= set(workers_answering(keys)),
                   START_DEADLINE)
    alive()
    say("")
    cmd_status()
    say(f"\nweb UI   {API_URL}   user {USER}, password {password()}")
    say(f"config   {CONFIG_FILE}")
    say(f"up in {time.monotonic() - started:.0f} s")
    return 0


def programs_alive(programs: list[svc.Program]) -> Callable[[], None]:
    def alive() -> None:
        dead = [p for p in programs if p.running_pid() is None]
        if dead:
            raise svc.ServiceError(f"{', '.join(p.name for p in dead)} exited{svc.log_tail(dead[0].log)}")
    return alive


# --------------------------------------------------------------------------- down and status


def all_programs() -> tuple[list[svc.Program], list[svc.Program]]:
    """Airflow's programs (workers first) and the daemons they use (the database last): the order they stop."""
    keys = cluster_secrets() if SECRETS_FILE.exists() else {"postgres": "", "redis": "", "fernet": "", "jwt": ""}
    services = {"ROCM_NIGHTLY_DOCKER_CLI": svc.DOCKER_CLI}
    daemons = [*(dockerd_program(h) for h in HOSTS if h.builds), git_program(), redis_program(), postgres_program()]
    return airflow_programs(keys, services)[::-1], daemons


def leftovers() -> list[int]:
    """Processes with our marker in their environment (e.g. a task's docker CLI whose worker is gone)."""
    marker = f"{MARKER}={CLUSTER}".encode()
    found = []
    for pid in svc.all_pids():
        if pid == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(pid)
    return found


def cmd_down() -> int:
    if not RUN.exists():
        say("nothing started by cluster.py was running")
        return 0
    stopped = 0
    airflow, daemons = all_programs()
    # A worker's task processes live in process groups of their own and rename themselves (which also
    # overwrites the environment /proc shows): they are found as the workers' descendants, before the stop.
    below = [child for program in airflow if (pid := program.running_pid()) for child in svc.descendants(pid)]
    for program in [*airflow, *daemons]:
        if program is daemons[0]:
            stopped += kill(below + leftovers())  # what outlived the workers, before the daemons they use
        pid = program.running_pid()
        if pid is not None:
            deadline = svc.DOCKERD_STOP_DEADLINE if program.name.startswith("dockerd") else svc.STOP_DEADLINE
            # postgres: SIGINT is its fast shutdown (SIGTERM waits for every client to disconnect).
            sig = signal.SIGINT if program.name == "postgres" else signal.SIGTERM
            stopped += svc.stop_process(pid, program.identify, program.name, deadline, sig)
        program.pidfile.unlink(missing_ok=True)
    for host in HOSTS:
        if host.builds:
            layout = dockerd_layout(host)
            for identify in (svc.shim_identify(layout), svc.containerd_identify(layout)):
                for pid in svc.find_pids(identify):
                    svc.stop_process(pid, identify, "containerd", svc.STOP_DEADLINE)
    say(f"stopped {stopped} cluster processes; data stays in {CLUSTER}" if stopped
        else "nothing started by cluster.py was running")
    return 0


def kill(pids: Sequence[int]) -> int:
    """SIGKILL each of ``pids`` that is still there; how many were."""
    killed = 0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed


def cmd_status() -> int:
    addresses = {"postgres": f"{HOST}:{PG_PORT}", "redis": f"{HOST}:{REDIS_PORT}", "git-daemon": f"{HOST}:{GIT_PORT}",
                 "airflow-api-server": API_URL}
    for host in HOSTS:
        if host.builds:
            addresses[f"dockerd-{host.name}"] = dockerd_layout(host).url
        addresses[f"worker-{host.name}"] = f"queue {host.queue}, concurrency {host.concurrency}"
    airflow, daemons = all_programs()
    for program in [*daemons[::-1], *airflow[::-1]]:
        pid = program.running_pid() if RUN.exists() else None
        state = f"running  (pid {pid})" if pid else "stopped"
        say(f"{program.name:<24} {state:<18} {addresses.get(program.name, '')}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return svc.command_line("cluster.py", __doc__, {"up": cmd_up, "down": cmd_down, "status": cmd_status}, argv)


if __name__ == "__main__":
    sys.exit(main())
