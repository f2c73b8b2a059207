"""Git credentials come from an Airflow connection and never show (issue #11, "credentials from connections").

A night of the demo whose repository is served over smart HTTP behind Basic auth (``git http-backend``,
tests/support/git_http.py) with a canary token in the connection named by ``project.git_conn_id``. The
night must succeed — so the token reached git — and the canary (and its base64 form, as it travels in
the header) must appear nowhere: the run's output and task logs, the metadata database (XCom, rendered
fields, run conf), the image labels and history (every config blob), the wheel store (RELEASE.json and
the pages), the git mirror cache on disk. A run with a wrong token fails in ``resolve_release`` at once
without echoing it.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.demo import airflow_env, dags_test, demo_config, make_history, migrate, write_config
from tests.support.git_http import git_http_server

pytestmark = pytest.mark.e2e

DAG_ID = "rocm_nightly_release"
CANARY = f"canary-{uuid.uuid4().hex}"
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


def _registry_documents(base_url: str, repository: str) -> Iterator[bytes]:
    """Every manifest and image config (labels, history) of every tag of ``repository``."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        tags = http.get(f"/v2/{repository}/tags/list").json().get("tags") or []
        for tag in tags:
            manifest = http.get(f"/v2/{repository}/manifests/{tag}", headers={"Accept": ACCEPT})
            yield manifest.content
            doc = json.loads(manifest.content)
            for child in doc.get("manifests", []):
                inner = http.get(f"/v2/{repository}/manifests/{child['digest']}", headers={"Accept": ACCEPT})
                yield inner.content
                doc.setdefault("configs", []).append(json.loads(inner.content).get("config", {}))
            for config in [doc.get("config"), *doc.get("configs", [])]:
                if config and config.get("digest"):
                    yield http.get(f"/v2/{repository}/blobs/{config['digest']}").content


def _files(folder: Path) -> Iterator[tuple[Path, bytes]]:
    for path in folder.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes()


def test_a_night_from_a_private_remote_never_shows_the_token(services: dict[str, Any], tmp_path: Path) -> None:
    prefix = f"gitcred-{uuid.uuid4().hex[:8]}"
    make_history(tmp_path / "git" / "tinyllm.git")
    document = demo_config(tmp_path, prefix, variants=["rocm710"])
    with git_http_server(tmp_path / "git", "ci", CANARY) as server:
        document["project"]["git_url"] = server.url_of("tinyllm.git")
        document["project"]["git_conn_id"] = "git_private"
        config = write_config(tmp_path / "config.yaml", document)
        env = airflow_env(tmp_path / "airflow", config, cache_dir=tmp_path / "cache", unit_test_mode=True)
        migrate(env)
        connection = {"conn_type": "generic", "login": "ci", "password": CANARY}
        night = dags_test({**env, "AIRFLOW_CONN_GIT_PRIVATE": json.dumps(connection)}, DAG_ID)
        output = night.stdout + night.stderr
        assert night.returncode == 0, output[-6000:]
        assert any(authorized for _, _, authorized in server.requests), "git never authenticated"

        wrong = {**connection, "password": "wrong-" + CANARY}
        refused = dags_test({**env, "AIRFLOW_CONN_GIT_PRIVATE": json.dumps(wrong)}, DAG_ID, timeout=600)
        refused_output = refused.stdout + refused.stderr
        assert refused.returncode != 0, refused_output[-4000:]
        assert "resolve_release: fetching in" in refused_output, refused_output[-4000:]
        assert "the remote refused the credentials of user 'ci' (git_conn_id)" in refused_output

    secrets = [CANARY.encode(), base64.b64encode(f"ci:{CANARY}".encode()),
               base64.b64encode(f"ci:wrong-{CANARY}".encode())]
    places: list[tuple[str, bytes]] = [("dags test output", output.encode()),
                                       ("failed run output", refused_output.encode())]
    places += [(str(path), data) for path, data in _files(tmp_path / "airflow")]  # logs, airflow.db
    places += [(str(path), data) for path, data in _files(tmp_path / "wheels")]  # RELEASE.json, pages
    places += [(str(path), data) for path, data in _files(tmp_path / "cache")]  # the git mirror
    registries = services["services"]
    repositories = (("registry-cache", f"{prefix}/tinyllm"), ("registry-public", f"{prefix}/tinyllm-rocm"))
    for registry, repository in repositories:
        places += [(f"{registry} {repository}", doc)
                   for doc in _registry_documents(registries[registry]["url"], repository)]
    assert any(name.endswith("RELEASE.json") for name, _ in places)
    assert any(name.endswith("airflow.db") for name, _ in places)
    assert any(name.startswith("registry-cache") for name, _ in places)
    leaks = sorted({name for name, data in places if any(secret in data for secret in secrets)})
    assert not leaks, f"the canary token shows in {leaks}"
