"""include/scripts/cluster.py without starting anything: what each host gets, and what stays off command lines."""

from __future__ import annotations

import itertools

from tests.support.cluster import cluster_module

KEYS = {"postgres": "pg-secret-1", "redis": "redis-secret-2", "fernet": "fernet-secret-3", "jwt": "jwt-secret-4"}
SERVICES = {"ROCM_NIGHTLY_DOCKER_CLI": "/usr/bin/docker", "ROCM_NIGHTLY_MOTO_URL": "http://127.0.0.1:5100"}
OWN = ("ROCM_NIGHTLY_CACHE_DIR", "TMPDIR", "HOME", "AIRFLOW_HOME", "ROCM_NIGHTLY_HOSTNAME")


def test_each_host_has_its_own_folders_daemon_and_name() -> None:
    m = cluster_module()
    envs = {h.name: m.host_env(h, KEYS, SERVICES) for h in m.HOSTS}
    for (a, env_a), (b, env_b) in itertools.combinations(envs.items(), 2):
        for key in OWN:
            assert env_a[key] != env_b[key], (key, a, b)
    builders = [h for h in m.HOSTS if h.builds]
    assert len(builders) == 2 and {h.queue for h in builders} == {"rocm"}
    assert len({envs[h.name]["DOCKER_HOST"] for h in builders}) == 2
    default = next(h for h in m.HOSTS if not h.builds)
    assert default.queue == "default" and "DOCKER_HOST" not in envs[default.name]


def test_secrets_reach_the_processes_by_environment_never_by_command_line() -> None:
    m = cluster_module()
    programs = m.airflow_programs(KEYS, SERVICES)
    assert {p.name for p in programs} >= {"airflow-scheduler", "airflow-api-server", "worker-rocm-host-a"}
    for program in [*programs, m.postgres_program(), m.redis_program(), m.git_program()]:
        line = " ".join(program.argv)
        assert not any(secret in line for secret in KEYS.values()), program.name
    env = m.airflow_env(KEYS)
    assert KEYS["postgres"] in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert KEYS["redis"] in env["AIRFLOW__CELERY__BROKER_URL"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_a_renamed_process_is_still_recognised_and_another_is_not() -> None:
    """The api-server and Celery workers rename themselves (setproctitle); `down` must still find them."""
    m = cluster_module()
    programs = {p.name: p for p in m.airflow_programs(KEYS, SERVICES)}
    api, worker = programs["airflow-api-server"], programs["worker-rocm-host-a"]
    assert api.identify(list(api.argv))
    assert api.identify([f"airflow api_server -- host:{m.HOST} port:{m.API_PORT}"])
    assert not api.identify(["airflow api_server -- host:127.0.0.1 port:8080"])
    assert worker.identify(["[celeryd: rocm-host-a@vm:MainProcess] -active- (celery worker --queues rocm)"])
    assert not worker.identify(["[celeryd: rocm-host-a@vm:ForkPoolWorker-1]"])
    assert not worker.identify(["[celeryd: rocm-host-b@vm:MainProcess] -active- (celery worker --queues rocm)"])
