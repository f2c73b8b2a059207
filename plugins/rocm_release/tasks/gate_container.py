"""The docker provider's ``DockerOperator``, as the gate runs it (imported at run time only: the provider imports
the docker SDK, which parsing the DAG must not).

``GateContainer`` adds what ``DockerOperator`` has no parameter for and a ROCm container needs: ``devices``
(``/dev/kfd``, ``/dev/dri``) and ``group_add`` (``video``, ``render``), passed into every host config the
operator creates. Everything else — the DockerHook (its ``docker`` connection's registry login), the pull, the
log streaming, the exit code check, the container's removal — is the provider's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.docker.exceptions import DockerContainerFailedException
from airflow.providers.docker.operators.docker import DockerOperator

if TYPE_CHECKING:
    from docker.types import Mount


class _HostConfigExtras:
    """The provider's ``APIClient`` with ``devices`` and ``group_add`` added to every host config."""

    def __init__(self, client: Any, extras: dict[str, list[str]]) -> None:
        self._client = client
        self._extras = extras

    def create_host_config(self, *args: Any, **kwargs: Any) -> Any:
        return self._client.create_host_config(*args, **kwargs, **self._extras)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class GateContainer(DockerOperator):
    """One container run, network off, removed afterwards, its output streamed to the task log."""

    def __init__(self, *, devices: list[str], group_add: list[str], **kwargs: Any) -> None:
        super().__init__(network_mode="none", mount_tmp_dir=False, auto_remove="force", do_xcom_push=False,
                         **kwargs)
        self._extras = {k: v for k, v in (("devices", devices), ("group_add", group_add)) if v}

    @property
    def cli(self) -> Any:
        """The provider's client, with the devices and groups (``_HostConfigExtras``)."""
        return _HostConfigExtras(self.hook.api_client, self._extras)


def bind_read_only(source: str, target: str) -> Mount:
    """A read-only bind mount of a folder of the build host."""
    from docker.types import Mount

    return Mount(target=target, source=source, type="bind", read_only=True)


__all__ = ["DockerContainerFailedException", "GateContainer", "bind_read_only"]
