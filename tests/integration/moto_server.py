"""A moto server process of a test module's own, on a free 127.0.0.1 port."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.registries import free_port

# What moto's ECR answers as: its default account, in the region every test uses.
MOTO_ACCOUNT = "123456789012"
MOTO_REGION = "us-east-1"
MOTO_ECR_HOST = f"{MOTO_ACCOUNT}.dkr.ecr.{MOTO_REGION}.amazonaws.com"


def moto_api(url: str, path: str, data: bytes = b"") -> bytes:
    """POST to moto's own control API (``reset``, ``reset-auth``, …)."""
    request = urllib.request.Request(
        f"{url}/moto-api/{path}", data=data, method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return bytes(response.read())


@contextmanager
def moto_server(log_dir: Path) -> Iterator[str]:
    """Run ``python -m moto.server``; yield its URL once its reset endpoint answers (30 s deadline)."""
    port = free_port()
    log_path = log_dir / "moto.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"moto server exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                moto_api(url, "reset")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail(f"moto server not ready on {url} after 30 s:\n{log_path.read_text()}")
                time.sleep(0.05)  # polling interval, bounded by the deadline above
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
