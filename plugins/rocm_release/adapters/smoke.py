"""The smoke-test gate's outside world: cache tags before it, the wheels it installs, the daemon it runs on.

The containers themselves are run by the docker provider's ``DockerOperator`` (``tasks.gate``); this
module gives it what it needs from the registries and the build host.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

from rocm_release.adapters.docker_build import docker_cli, docker_session, run_logged
from rocm_release.adapters.images import tag_cache
from rocm_release.adapters.registry.clients import blob_registry_for, registry_for
from rocm_release.adapters.steps import cache_logins, docker_host, read_wheels_image
from rocm_release.core.build_commands import push_failure
from rocm_release.core.plan import ReleasePlan, VariantPlan

Log = Callable[[str], None]
# Where each wheels image's /dist goes under the folder mounted at core.smoke.WHEELS_MOUNT.
WHEEL_FOLDERS = {"wheels": "project", "base_wheels": "base"}


def tag_variant_cache(plan: ReleasePlan, v: VariantPlan, refs: dict[str, str], log: Log) -> dict[str, str]:
    """The four digests' cache tags (before the gate: a failed test keeps the cache); kind → digest."""
    retrying = plan.config.retry.retrying(log)
    return tag_cache(plan=plan, v=v, refs=refs, cache=registry_for(plan.config.cache_registry), log=log,
                     retrying=retrying)


def pull_for_test(plan: ReleasePlan, image: str, log: Log) -> None:
    """``docker pull`` of one image (by digest) into the build host's daemon, logged in to the cache registry the
    way the builds are (ECR's token, the registry connection), in a throwaway ``DOCKER_CONFIG``. The provider's
    DockerOperator then finds it there and does not pull. Refusals fail at once; outages are retried."""
    config = plan.config
    retrying = config.retry.retrying(log)
    logins = cache_logins(config, registry_for(config.cache_registry), retrying)

    def pull(env: dict[str, str]) -> None:
        code, output = run_logged([docker_cli(), "pull", image], env, log)
        if code != 0:
            raise push_failure(f"docker pull of {image}", code, output)

    with docker_session(docker_host(config), logins, retrying) as env:
        retrying(f"docker pull of {image}", partial(pull, env))


def stage_wheels(plan: ReleasePlan, v: VariantPlan, refs: Mapping[str, str], folder: Path, log: Log) -> list[str]:
    """/dist of the project's and the base's wheels images, read through the registry API and verified against
    their sums label, into ``folder/project`` and ``folder/base``; the file names. Nothing public is read."""
    retrying = plan.config.retry.retrying(log)
    registry = retrying("login to the cache registry", partial(blob_registry_for, plan.config.cache_registry))
    names = []
    for kind, sub in WHEEL_FOLDERS.items():
        target = folder / sub
        target.mkdir(parents=True)
        files = read_wheels_image(plan, registry, refs[kind], target, log)
        names += [f"{sub}/{f.name}" for f in files]
        log(f"{v.name} {kind}: {', '.join(f.name for f in files)} (verified) for the wheels test")
    return names


__all__ = ["WHEEL_FOLDERS", "docker_host", "pull_for_test", "stage_wheels", "tag_variant_cache"]
