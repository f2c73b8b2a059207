"""The two wheel stores a publishing test runs on: a ``file://`` folder and a bucket on a moto S3 server.

``Store`` names one (its base URL and connection) and the per-commit and nightly folders of the
variant ``VARIANT``; ``make_store`` makes the one a ``store`` fixture asks for (the s3 one reached
the production way, through ``store_root`` and an Airflow connection whose ``endpoint_url`` is moto).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rocm_release.adapters.store import StorePath, store_root
from rocm_release.core.plan import nightly_wheels_prefix, wheels_prefix
from tests.support.moto import admin_client, set_connection

CONN_ID = "wheels_moto"
VARIANT = "rocm710"


@dataclass(frozen=True)
class Store:
    """One store under test: its base URL (``…/rocm``) and the connection that reaches it."""

    kind: str
    base_url: str
    conn_id: str | None

    def url(self, *parts: str) -> str:
        return "/".join([self.base_url, *parts]) + "/"

    def folder(self, *parts: str) -> StorePath:
        return store_root(self.url(*parts), self.conn_id)

    def commit_url(self, commit: str) -> str:
        return wheels_prefix(self.base_url, commit, VARIANT)

    def commit_folder(self, commit: str) -> StorePath:
        return store_root(self.commit_url(commit), self.conn_id)

    def nightly_url(self) -> str:
        return nightly_wheels_prefix(self.base_url, VARIANT)

    def nightly_folder(self) -> StorePath:
        return store_root(self.nightly_url(), self.conn_id)


def make_store(kind: str, tmp_path: Path, moto_url: Callable[[], str], setenv: Callable[[str, str], None]) -> Store:
    """A fresh ``file://`` folder under ``tmp_path``, or a fresh bucket on the moto server ``moto_url()``."""
    if kind == "file":
        (tmp_path / "store").mkdir()
        return Store("file", f"file://{tmp_path}/store/rocm", None)
    moto = moto_url()
    # One connection id per moto server: Airflow caches a store's filesystem by connection id, and a
    # later test module has a moto server (a port) of its own.
    conn_id = f"{CONN_ID}_{moto.rsplit(':', 1)[-1]}"
    set_connection(setenv, conn_id, moto)
    bucket = f"wheels-{uuid.uuid4().hex[:12]}"
    admin_client("s3", moto).create_bucket(Bucket=bucket)
    return Store("s3", f"s3://{bucket}/rocm", conn_id)
