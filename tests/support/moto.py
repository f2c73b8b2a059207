"""moto: a server process of a test module's own, moto's ECR account, Airflow AWS connections to moto.

``moto_server`` runs ``python -m moto.server`` on a free 127.0.0.1 port; the shared one of
``make services-up`` is ``$ROCM_NIGHTLY_MOTO_URL``. ``conn_json``/``set_connection`` make the Airflow
connection (``AIRFLOW_CONN_<ID>``) the code under test reaches moto through; ``admin_client`` is a
plain boto3 client for setting the scene, not the code under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.net import free_port

# What moto's ECR answers as: its default account, in the region every test uses.
MOTO_ACCOUNT = "123456789012"
MOTO_REGION = "us-east-1"
MOTO_ECR_HOST = f"{MOTO_ACCOUNT}.dkr.ecr.{MOTO_REGION}.amazonaws.com"
MOTO_KEY = "testing"  # moto accepts any access key unless IAM is enforced


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
                raise RuntimeError(f"moto server exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                moto_api(url, "reset")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server not ready on {url} after 30 s:\n{log_path.read_text()}") from None
                time.sleep(0.05)  # polling interval, bounded by the deadline above
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def conn_env_name(conn_id: str) -> str:
    """The environment variable Airflow reads connection ``conn_id`` from."""
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def conn_json(endpoint: str, **credentials: str) -> str:
    """An AIRFLOW_CONN_* value for moto; ``login``/``password`` are the access key (moto's ``testing``)."""
    extra = {"region_name": MOTO_REGION, "endpoint_url": endpoint}
    return json.dumps({"conn_type": "aws", "login": MOTO_KEY, "password": MOTO_KEY, **credentials, "extra": extra})


def set_connection(setenv: Callable[[str, str], object], conn_id: str, endpoint: str, **credentials: str) -> None:
    """Give Airflow the AWS connection ``conn_id`` to moto at ``endpoint`` through ``setenv``
    (``monkeypatch.setenv``, ``os.environ.__setitem__``); botocore never looks for instance credentials."""
    setenv(conn_env_name(conn_id), conn_json(endpoint, **credentials))
    setenv("AWS_EC2_METADATA_DISABLED", "true")


def admin_client(service: str, endpoint: str) -> Any:
    """A plain boto3 client for setting the scene, not the code under test."""
    import boto3

    return boto3.client(service, region_name=MOTO_REGION, endpoint_url=endpoint, aws_access_key_id=MOTO_KEY,
                        aws_secret_access_key=MOTO_KEY)
