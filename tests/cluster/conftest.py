"""The cluster of `make cluster-up` (include/scripts/cluster.py), brought up for these tests if it is not up.

``cluster``: brings it up (idempotent: a running cluster is reused as it is), logs in through the REST
API, and, if it started it, stops it after the module (``cluster.py down``), so the rest of the suite
does not share two cores with a scheduler and three workers.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.cluster import SCRIPT, Cluster, cluster_module

UP_TIMEOUT = 1200


@pytest.fixture(scope="module")
def cluster(services: dict[str, Any]) -> Iterator[Cluster]:
    module = cluster_module()
    was_up = module.api_healthy()
    started = time.monotonic()
    up = subprocess.run([sys.executable, str(SCRIPT), "up"], capture_output=True, text=True, timeout=UP_TIMEOUT,
                        check=False)
    assert up.returncode == 0, f"cluster.py up failed:\n{(up.stdout + up.stderr)[-6000:]}"
    found = Cluster(module, up_seconds=time.monotonic() - started, was_up=was_up)
    try:
        yield found
    finally:
        found.close()
        if not was_up:
            down = subprocess.run([sys.executable, str(SCRIPT), "down"], capture_output=True, text=True, timeout=600,
                                  check=False)
            assert down.returncode == 0, f"cluster.py down failed:\n{(down.stdout + down.stderr)[-6000:]}"
