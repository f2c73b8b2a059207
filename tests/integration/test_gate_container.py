"""The gate's container (tasks.gate_container.GateContainer: the docker provider's DockerOperator) on the
local dockerd: what DockerOperator has no parameter for reaches the container, and a failure keeps its output.

The image is the base OS image `make services-up` built (debian, by digest). `/dev/null` stands in for a ROCm
device node (`/dev/kfd`, `/dev/dri/*` exist only on a GPU host: mock-free, but not a GPU).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from rocm_release.tasks.gate_container import DockerContainerFailedException, GateContainer

pytestmark = pytest.mark.integration


def _run(command: list[str], **extra: Any) -> list[str]:
    container = GateContainer(task_id="gate_container_test", image=os.environ["ROCM_NIGHTLY_BASE_OS_IMAGE"],
                              docker_url=os.environ["DOCKER_HOST"], command=command, xcom_all=True,
                              devices=extra.pop("devices", []), group_add=extra.pop("group_add", []), **extra)
    container.do_xcom_push = True  # the output lines, as the provider returns them
    return list(container.execute({}) or [])


def test_devices_groups_shm_and_environment_reach_the_container_with_no_network(services: dict[str, Any]) -> None:
    out = _run(["sh", "-c", 'ls -l /dev/smoke-null; id -G; df -m /dev/shm | tail -1; echo "env=$SMOKE"; '
                'ls /sys/class/net'],
               devices=["/dev/null:/dev/smoke-null:rw"], group_add=["44"], shm_size=64 * 1024 * 1024,
               environment={"SMOKE": "on"})
    text = "\n".join(out)
    assert "/dev/smoke-null" in text and text.lstrip().startswith("c"), text  # a character device
    assert "44" in out[1].split(), out[1]
    assert out[2].split()[1] == "64", out[2]
    assert "env=on" in text
    assert out[-1].strip() == "lo", "network_mode none: only loopback"


def test_a_failing_command_fails_with_its_output(services: dict[str, Any]) -> None:
    with pytest.raises(DockerContainerFailedException) as failed:
        _run(["sh", "-c", "echo before the failure; echo 'smoke: broken' >&2; exit 3"])
    assert failed.value.logs is not None
    lines = [str(line) for line in failed.value.logs]
    assert "before the failure" in lines and "smoke: broken" in lines
    assert "'StatusCode': 3" in str(failed.value)
