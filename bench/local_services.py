"""Where the local services listen (from ``.state/services.env``) and the names a benchmark run owns.

Every benchmark works under its own repositories, ``bench-<run id>/…``, in the
shared registries, so it never reads or changes another run's images and its
requests can be picked out of the shared access logs.

The benchmarks use the tests' helpers (``tests.support``: the services' env file,
registries and their access logs, a private dockerd, the demo world, wheels, the
retention history). Importing this module first puts the repository root on
``sys.path`` for them: a benchmark runs as ``python bench/<name>.py``, with only
``bench/`` on the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.services import SERVICES_ENV  # noqa: E402 - needs the repository root on sys.path
from tests.support.services import read_services_env as _read_env  # noqa: E402


def read_services_env() -> dict[str, str]:
    """``KEY=VALUE`` lines of ``.state/services.env`` (written by ``make services-up``)."""
    if not SERVICES_ENV.exists():
        raise SystemExit("the local services are not up: run `make services-up` first")
    return _read_env(SERVICES_ENV)


@dataclass(frozen=True)
class Services:
    """The running services, as ``make services-up`` describes them."""

    env: dict[str, str]

    @classmethod
    def load(cls) -> Services:
        return cls(read_services_env())

    @property
    def cache_host(self) -> str:
        return self.env["ROCM_NIGHTLY_CACHE_REGISTRY"]

    @property
    def public_host(self) -> str:
        return self.env["ROCM_NIGHTLY_PUBLIC_REGISTRY"]

    @property
    def moto_url(self) -> str:
        return self.env["ROCM_NIGHTLY_MOTO_URL"]

    @property
    def docker_cli(self) -> str:
        return self.env.get("ROCM_NIGHTLY_DOCKER_CLI", "/usr/bin/docker")

    @property
    def docker_host(self) -> str:
        """The shared daemon (the one other work on this machine uses too)."""
        return self.env["DOCKER_HOST"]

    @property
    def base_os_image(self) -> str:
        """The base OS image, pinned by digest (``127.0.0.1:5101/rocm-nightly/debian@sha256:…``)."""
        return self.env["ROCM_NIGHTLY_BASE_OS_IMAGE"]

    def registry_log(self, which: str) -> Path:
        return Path(self.env[f"ROCM_NIGHTLY_{which.upper()}_REGISTRY_LOG"])

    def registry_storage(self, which: str) -> Path:
        return Path(self.env[f"ROCM_NIGHTLY_{which.upper()}_REGISTRY_STORAGE"])

    def docker_env(self, host: str | None = None) -> dict[str, str]:
        """The environment for a docker command against ``host`` (default: the shared daemon)."""
        env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY")}
        env.update(self.env)
        env["DOCKER_HOST"] = host or self.docker_host
        env["DOCKER_BUILDKIT"] = "1"
        return env

    def docker(self, args: list[str], *, host: str | None = None, quiet: bool = True,
               input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run one docker command; raise with its output when it fails."""
        proc = subprocess.run([self.docker_cli, *args], env=self.docker_env(host), capture_output=quiet,
                              text=True, check=False, input=input_text)
        if proc.returncode != 0:
            out = (proc.stdout or "")[-3000:] + (proc.stderr or "")[-3000:]
            raise RuntimeError(f"docker {' '.join(args)} failed ({proc.returncode}):\n{out}")
        return proc


def run_id() -> str:
    """A fresh id for this run's repositories and temp folders."""
    return uuid.uuid4().hex[:10]


def bench_prefix(rid: str) -> str:
    """The repository namespace a benchmark run owns in both registries."""
    return f"bench-{rid}"


def registry_client(host: str):  # -> OciRegistry (imported late: the package is only needed here)
    """An anonymous client for one of the local registries (plain HTTP on 127.0.0.1)."""
    from rocm_release.adapters.registry.oci import OciRegistry

    return OciRegistry(host, scheme="http")
