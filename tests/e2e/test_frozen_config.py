"""The config is read once per run: a config file that changes while a run is under way — as when
a worker's copy differs from the scheduler's — does not change what the run builds or where.

The parent image is served through a pass-through proxy to the cache registry. When
``resolve_release`` looks the parent up, the proxy rewrites the config file: its registries now
point at a port where nothing listens and its Dockerfile at a path that does not exist. Every
later task (sensors, builds, publishing) must still use what ``resolve_release`` froze into the plan.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.core.plan import release_tag
from tests.support.demo import airflow_env, dags_test, demo_config, make_history, migrate
from tests.support.net import closed_port

pytestmark = pytest.mark.e2e

AIRFLOW = str(Path(sys.executable).parent / "airflow")
DAG_ID = "rocm_nightly_release"
VARIANT = "rocm710"
HOP_BY_HOP = {"connection", "transfer-encoding", "keep-alive"}


class SwappingProxy(ThreadingHTTPServer):
    """Forwards every request to ``upstream``; the first manifest request swaps the config file."""

    def __init__(self, upstream: str, config: Path, swapped: dict[str, Any]) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream, self.config, self.swapped_to, self.swapped = upstream, config, swapped, False
        self.lock = threading.Lock()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SwappingProxy

    def _forward(self) -> None:
        if "/manifests/" in self.path:
            with self.server.lock:
                if not self.server.swapped:
                    self.server.config.write_text(yaml.safe_dump(self.server.swapped_to))
                    self.server.swapped = True
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
        upstream.request(self.command, self.path, body=body, headers=headers)
        resp = upstream.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        # A HEAD answer has no body but keeps the upstream's Content-Length (the manifest's size).
        drop = HOP_BY_HOP if self.command == "HEAD" else HOP_BY_HOP | {"content-length"}
        for key, value in resp.getheaders():
            if key.lower() not in drop:
                self.send_header(key, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def proxy(services: dict[str, Any], tmp_path: Path) -> Iterator[tuple[SwappingProxy, dict[str, Any]]]:
    demo = demo_config(tmp_path, f"frozen-{uuid.uuid4().hex[:8]}", variants=[VARIANT])
    nowhere = f"127.0.0.1:{closed_port()}"
    swapped = json.loads(json.dumps(demo))
    swapped["cache_registry"]["host"] = nowhere
    swapped["public_registry"]["host"] = nowhere
    swapped["project"]["dockerfile"] = "docker/Dockerfile.does-not-exist"
    swapped["project"]["base_dockerfile"] = "docker/Dockerfile.does-not-exist"
    swapped["wheel_store"]["url"] = f"file://{tmp_path}/elsewhere"
    server = SwappingProxy(demo["cache_registry"]["host"], tmp_path / "config.yaml", swapped)
    parent = demo["project"]["parent_image"]
    demo["project"]["parent_image"] = f"{server.host}/{parent.split('/', 1)[1]}"
    swapped["project"]["parent_image"] = demo["project"]["parent_image"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(demo))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, demo
    server.shutdown()
    server.server_close()


def test_a_config_changed_mid_run_does_not_change_the_run(proxy: tuple[SwappingProxy, dict[str, Any]],
                                                         tmp_path: Path) -> None:
    server, demo = proxy
    commit = make_history(tmp_path / "tinyllm.git")["initial"]
    env = airflow_env(tmp_path / "airflow", server.config, cache_dir=tmp_path / "cache", unit_test_mode=True)
    migrate(env)

    proc = dags_test(env, DAG_ID, {"commit": commit})

    assert server.swapped, "resolve_release never looked the parent up: the config was not swapped mid-run"
    assert "does-not-exist" in server.config.read_text()
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    report = json.loads((tmp_path / "wheels" / commit / "RELEASE.json").read_text())
    assert report["outcome"] == "published"
    assert not (tmp_path / "elsewhere").exists()
    cache = OciRegistry(demo["cache_registry"]["host"], scheme="http")
    assert cache.lookup(demo["cache_registry"]["repository"], release_tag(commit, VARIANT)).present
