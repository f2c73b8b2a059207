"""The cluster of `make cluster-up`, as the tests in tests/cluster/ see it: its REST API, hosts, registries, store.

``Cluster`` is an ``AirflowApi`` on the cluster's api-server, logged in as its admin, with what a test
needs around a night: the sample project's commits, the cluster config's registries and S3 store,
``reset`` (nothing published or cached: the next night is a full rebuild), ``drain``/``undrain`` of a
build host (Celery's cancel_consumer/add_consumer: the host takes no new task of the ``rocm`` queue,
as an operator drains a host), and ``kill_host`` (SIGKILL of every process of one build host: its
worker, the worker's task processes and its dockerd, as when the machine dies).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from types import ModuleType
from typing import Any

from rocm_release.adapters.config_file import load_config
from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.core.plan import LABEL_COMMIT, public_tag, wheels_prefix
from tests.support.airflow_api import AirflowApi
from tests.support.services import REPO

SCRIPT = REPO / "include" / "scripts" / "cluster.py"
DAG_ID = "rocm_nightly_release"


def cluster_module() -> ModuleType:
    """include/scripts/cluster.py, imported (once) as ``rocm_nightly_cluster``."""
    if "rocm_nightly_cluster" in sys.modules:
        return sys.modules["rocm_nightly_cluster"]
    spec = importlib.util.spec_from_file_location("rocm_nightly_cluster", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Cluster(AirflowApi):
    """The running cluster; ``up_seconds``: how long ``cluster.py up`` took for this session."""

    def __init__(self, module: ModuleType, *, up_seconds: float, was_up: bool) -> None:
        super().__init__(module.API_URL, DAG_ID)
        self.m = module
        self.up_seconds = up_seconds
        self.was_up = was_up
        self.keys: dict[str, str] = module.cluster_secrets()
        self.commits: dict[str, str] = json.loads(module.COMMITS_FILE.read_text())
        self.config = load_config(module.CONFIG_FILE)
        self.cache = OciRegistry(self.config.cache_registry.host, scheme="http")
        self.public = OciRegistry(self.config.public_registry.host, scheme="http")
        self.build_hosts = [h.name for h in module.HOSTS if h.builds]
        self.default_host = next(h.name for h in module.HOSTS if not h.builds)
        self.dead: set[str] = set()  # hosts killed on purpose: not a reason to fail
        self.login(module.USER, module.password())

    # ------------------------------------------------------------------ liveness

    def alive(self) -> None:
        """Fail at once, with the end of its log, if a part of the cluster exited (other than a killed host)."""
        airflow, daemons = self.m.all_programs()
        for program in [*airflow, *daemons]:
            if any(program.name.endswith(host) for host in self.dead):
                continue
            if program.running_pid() is None:
                log = program.log.read_text(errors="replace")[-4000:] if program.log.exists() else ""
                raise AssertionError(f"{program.name} is not running:\n{log}")

    # ------------------------------------------------------------------ the world around a night

    def s3(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=os.environ["ROCM_NIGHTLY_MOTO_URL"], region_name="us-east-1",
                            aws_access_key_id=self.m.MOTO_KEY, aws_secret_access_key=self.m.MOTO_KEY)

    def store_keys(self) -> set[str]:
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=self.m.STORE_BUCKET)
        return {obj["Key"] for page in pages for obj in page.get("Contents", [])}

    def tags(self, registry: OciRegistry, repository: str) -> set[str]:
        return set(registry.tag_names(repository))

    def cache_tags(self) -> set[str]:
        return self.tags(self.cache, self.config.cache_registry.repository)

    def public_tags(self) -> set[str]:
        return self.tags(self.public, self.config.public_registry.repository)

    def reset(self) -> None:
        """Nothing cached or published: every tag of the cluster's repositories and every object of its store
        removed, so that the next night builds everything."""
        for registry, repository in ((self.cache, self.config.cache_registry.repository),
                                     (self.public, self.config.public_registry.repository)):
            tags = sorted(self.tags(registry, repository))
            if tags:
                registry.delete_tags(repository, tags)
        s3 = self.s3()
        for key in self.store_keys():
            s3.delete_object(Bucket=self.m.STORE_BUCKET, Key=key)
        for host in self.m.HOSTS:  # and no build cache on a build host: a full rebuild takes as long as one
            if host.builds:
                docker = [os.environ["ROCM_NIGHTLY_DOCKER_CLI"], "--host", self.m.dockerd_layout(host).url]
                for what in (["builder", "prune", "--all", "--force"], ["image", "prune", "--all", "--force"]):
                    subprocess.run([*docker, *what], check=True, capture_output=True, timeout=300)

    def store_prefix(self, url: str) -> str:
        """The S3 key prefix of a store URL (``s3://bucket/key…``)."""
        return url.removeprefix(f"s3://{self.m.STORE_BUCKET}/")

    def published(self, commit: str, variant: str) -> bool:
        """The commit's wheel index and its public image (``nightly-<commit>-<variant>``) are there."""
        tag = public_tag(self.config.public_tags.nightly_commit, variant=variant, commit=commit)
        index = self.store_prefix(wheels_prefix(self.config.wheel_store.url, commit, variant)) + "index.html"
        return index in self.store_keys() and tag in self.public_tags()

    def nightly_commit(self, variant: str) -> str | None:
        """The commit the public ``nightly-<variant>`` tag points to (its revision label)."""
        repo = self.config.public_registry.repository
        found = self.public.lookup(repo, public_tag(self.config.public_tags.nightly, variant=variant, commit=""))
        return self.public.labels(repo, found.digest).get(LABEL_COMMIT) if found.present else None

    # ------------------------------------------------------------------ the hosts

    def worker_names(self) -> dict[str, str]:
        """Build host → its Celery worker's name, of the workers answering now."""
        names: dict[str, str] = self.m.workers_answering(self.keys)
        return names

    def drain(self, host: str) -> None:
        """The host's worker stops taking tasks of the ``rocm`` queue (what it runs, it finishes)."""
        self._control("cancel_consumer", host)

    def undrain(self, host: str) -> None:
        self._control("add_consumer", host)

    def _control(self, command: str, host: str) -> None:
        name = self.worker_names()[host]
        proc = self.m.celery(self.keys, "control", command, "rocm", "--destination", name, "--timeout", "10")
        assert proc.returncode == 0 and name in proc.stdout, \
            f"celery control {command} {name}:\n{proc.stdout}{proc.stderr}"

    def kill_host(self, host: str) -> list[int]:
        """SIGKILL every process of one build host, as when the machine dies: its worker and everything below it
        (pool processes, task supervisors, task processes, their docker CLI), its dockerd and everything below
        that (containerd, shims, the build). The pids killed."""
        self.dead.add(host)
        spec = next(h for h in self.m.HOSTS if h.name == host)
        airflow, _ = self.m.all_programs()
        roots = [pid for program in (*airflow, self.m.dockerd_program(spec))
                 if program.name.endswith(host) and (pid := program.running_pid())]
        assert len(roots) == 2, f"the worker and the dockerd of {host}: {roots}"
        for root in roots:  # stopped first: nothing below them forks or exits while the tree is read
            os.kill(root, signal.SIGSTOP)
        pids = [*roots, *(child for root in roots for child in self.m.svc.descendants(root))]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids
