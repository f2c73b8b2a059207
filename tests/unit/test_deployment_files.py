"""The files a deployment uses besides requirements.txt: packages.txt and the Airflow pool and connection imports.

The pool and connection files are read with Airflow's own readers (`airflow pools import` /
`airflow connections import` use the same format); the demo and the e2e tests import them for real.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from airflow.secrets.local_filesystem import load_connections_dict

from rocm_release.adapters.config_file import REPO_ROOT, load_config
from rocm_release.core.config import ReleaseConfig
from rocm_release.core.task_ids import PUBLISHING_POOL

DEPLOYMENT = REPO_ROOT / "include" / "airflow"
CONFIGS = sorted((REPO_ROOT / "include" / "config").glob("*.yaml"))


def named_connections(config: ReleaseConfig) -> set[str]:
    """Every connection id a config makes the DAGs read (ECR and S3 default to `aws_default`)."""
    ids = {config.cache_registry.connection_id, config.public_registry.connection_id,
           config.wheel_store.connection_id, *config.build.secrets}
    if config.smoke_test is not None:
        ids.add(config.smoke_test.docker_conn_id)
    if config.alerts is not None:
        ids |= {config.alerts.email.smtp_conn_id if config.alerts.email else None,
                config.alerts.slack.slack_conn_id if config.alerts.slack else None}
    for registry in (config.cache_registry, config.public_registry):
        if registry.kind == "ecr" and not registry.connection_id:
            ids.add("aws_default")
    if config.wheel_store.url.startswith("s3://") and not config.wheel_store.connection_id:
        ids.add("aws_default")
    return {i for i in ids if i}


def test_the_configs_are_all_checked() -> None:
    assert {p.name for p in CONFIGS} >= {"vllm.yaml", "demo.yaml"}
    assert named_connections(load_config(REPO_ROOT / "include" / "config" / "vllm.yaml")) == {
        "aws_default", "dockerhub", "sccache_aws", "smtp_default"}


@pytest.mark.parametrize("config_file", CONFIGS, ids=lambda p: p.name)
def test_connections_file_has_every_connection_a_config_names(config_file: Path) -> None:
    connections = load_connections_dict(str(DEPLOYMENT / "connections.json"))
    missing = named_connections(load_config(config_file)) - set(connections)
    assert not missing, f"{config_file.name} names connections that include/airflow/connections.json lacks"


def test_connections_file_holds_placeholders_only() -> None:
    """No secret is ever committed: a password, where there is one, says it must be replaced."""
    connections = load_connections_dict(str(DEPLOYMENT / "connections.json"))
    for conn_id, conn in connections.items():
        assert conn.conn_type, conn_id
        assert conn.password is None or conn.password.startswith("REPLACE-"), conn_id
        assert conn.login is None or conn.login.startswith("REPLACE-"), conn_id
    assert connections["smtp_default"].conn_type == "smtp"
    assert connections["aws_default"].conn_type == "aws"


@pytest.mark.parametrize("config_file", CONFIGS, ids=lambda p: p.name)
def test_pools_file_has_the_build_pool_in_the_format_airflow_imports(config_file: Path) -> None:
    pools = json.loads((DEPLOYMENT / "pools.json").read_text())
    pool = pools[load_config(config_file).build.pool]
    # What airflow/cli/commands/pool_command.py's pool_import_helper accepts for a pool.
    assert {"slots", "description"} <= set(pool) and isinstance(pool["slots"], int)
    # One slot: the demo and the e2e scheduler test build on one host, and that test checks that
    # the two variants' builds wait for each other.
    assert pool["slots"] == 1 and pool["include_deferred"] is False


def test_pools_file_has_the_one_slot_publishing_pool() -> None:
    """Publishing never interleaves across runs of any kind (issue #11 defect 3): one slot, deferred too."""
    pools = json.loads((DEPLOYMENT / "pools.json").read_text())
    assert pools[PUBLISHING_POOL]["slots"] == 1


def test_packages_txt_names_what_the_build_tasks_run() -> None:
    """One Debian package per line, no comments (Astro-style images feed it to apt-get as it is)."""
    lines = (REPO_ROOT / "packages.txt").read_text().splitlines()
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", line) for line in lines), lines
    assert {"git", "docker.io"} <= set(lines)  # source.py runs git; build.py the docker CLI
