"""The scale benchmark's world: proxies, bucket, config, plans, the three nights, the bucket's listing, cleanup.

A night calls the public step functions of ``rocm_release.adapters.steps`` in
the nightly DAG's order (tasks/nightly.py, dags/rocm_nightly_release.py), per
variant: the four sensors (``observe_artifact``), the decision
(``core.decision.decide``), the builds it chose (here: pushing the fabricated
images, ``scale_images``), ``push_variant_images``, ``publish_variant_wheels``,
``promote_variant``; then the summary's ``image_sizes``. Every request the code
makes to the store and the registries goes through a counting proxy
(``counting_proxy``), the phase named after the night and the step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from counting_proxy import CountingProxy, Tally
from local_services import Services
from scale_images import ImageFactory
from scale_wheels import WheelSpec, base_specs, project_spec

from tests.support.demo import demo_document, make_history
from tests.support.moto import admin_client, conn_env_name, set_connection
from tests.support.registries import remove_tags

SERVICES = ("store", "cache", "public")
STAGE_OF = {"build_base_image": "base", "build_wheels": "wheels", "build_release_image": "release"}


@dataclass
class Night:
    """One night's figures: per service and phase the proxies' tallies, wall time, what ran."""

    name: str
    commit: str
    seconds: float = 0.0
    builds: dict[str, list[str]] = field(default_factory=dict)
    promoted: dict[str, Any] = field(default_factory=dict)
    tallies: dict[str, dict[str, Tally]] = field(default_factory=dict)  # service → phase → tally

    def total(self, service: str, phase: str = "") -> Tally:
        out = Tally()
        for name, tally in self.tallies.get(service, {}).items():
            if name.startswith(phase):
                out.add(tally)
        return out

    def all_services(self, phase: str = "", exclude: str | None = None) -> Tally:
        out = Tally()
        for service in SERVICES:
            for name, tally in self.tallies.get(service, {}).items():
                if name.startswith(phase) and (exclude is None or name != exclude):
                    out.add(tally)
        return out


def folder_bytes(folder: Path) -> int:
    """The bytes of every file under ``folder``."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


class DiskWatch:
    """The largest size a folder reached (sampled every second from a thread)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.peak, self._stop = folder, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _size(self) -> int:
        return folder_bytes(self.folder)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.peak = max(self.peak, self._size())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._size())


class ScaleWorld:
    """Everything one run owns: temp folder, proxies, bucket, connection, repositories, plans."""

    def __init__(self, services: Services, rid: str, root: Path, *, variants: int, base_bytes: int,
                 project_bytes: int) -> None:
        self.services, self.rid, self.root = services, rid, root
        self.prefix = f"bench-scale-{rid}"
        self.bucket = f"bench-scale-{rid}"
        self.conn_id = f"bench_scale_{rid}"
        self.variant_count, self.base_bytes, self.project_bytes = variants, base_bytes, project_bytes
        self.proxies: dict[str, CountingProxy] = {}
        self.log_lines: deque[str] = deque(maxlen=400)
        self.plans: dict[str, Any] = {}
        self.factory: ImageFactory | None = None
        self.commits: dict[str, str] = {}

    # -- setting up -----------------------------------------------------------------------------

    def setup(self) -> None:
        (self.root / "tmp").mkdir(parents=True)
        os.environ["AIRFLOW_HOME"] = str(self.root / "airflow")
        os.environ["ROCM_NIGHTLY_CACHE_DIR"] = str(self.root / "cache")
        os.environ["TMPDIR"] = str(self.root / "tmp")  # publish_variant_wheels' temp folders: counted on disk
        import tempfile

        tempfile.tempdir = str(self.root / "tmp")
        moto = self.services.moto_url.removeprefix("http://")
        self.proxies = {"store": CountingProxy("store", moto),
                        "cache": CountingProxy("cache", self.services.cache_host),
                        "public": CountingProxy("public", self.services.public_host)}
        admin_client("s3", self.services.moto_url).create_bucket(Bucket=self.bucket)
        set_connection(os.environ.__setitem__, self.conn_id, self.proxies["store"].url)
        self.commits = make_history(self.root / "tinyllm.git")
        config = self._config()
        for label in ("initial", "source_change"):
            self.plans[label] = self._plan(config, self.commits[label])
        from rocm_release.adapters.registry.oci import OciRegistry

        self.factory = ImageFactory(OciRegistry(self.proxies["cache"].host, scheme="http"), self.root / "layers",
                                    self._wheels_for)
        (self.root / "layers").mkdir()

    def _config(self) -> Any:
        from rocm_release.core.config import parse_config

        doc = demo_document()
        doc["project"]["git_url"] = f"file://{self.root}/tinyllm.git"
        doc["variants"] = doc["variants"][: self.variant_count]
        if len(doc["variants"]) < self.variant_count:
            raise SystemExit(f"the demo config has {len(doc['variants'])} variants, {self.variant_count} asked")
        doc["cache_registry"].update(host=self.proxies["cache"].host, repository=f"{self.prefix}/tinyllm")
        doc["public_registry"].update(host=self.proxies["public"].host, repository=f"{self.prefix}/tinyllm-rocm")
        doc["wheel_store"] = {"url": f"s3://{self.bucket}/rocm", "connection_id": self.conn_id}
        return parse_config(yaml.safe_dump(doc), "scale benchmark config", repo_root=str(Path.cwd()))

    def _plan(self, config: Any, commit: str) -> Any:
        from rocm_release.core.params import ReleaseParams
        from rocm_release.core.plan import make_plan

        def show(path: str) -> bytes:
            return subprocess.run(["git", "--git-dir", str(self.root / "tinyllm.git"), "show", f"{commit}:{path}"],
                                  capture_output=True, check=True).stdout

        parent = config.project.parent_image
        pinned = f"{parent}@{self.services.base_os_image.rpartition('@')[2]}"
        return make_plan(config, commit=commit, run_kind="scheduled", as_of=datetime.now(UTC),
                         params=ReleaseParams(), base_dockerfile=show(config.project.base_dockerfile),
                         base_inputs={p: show(p) for p in config.project.base_inputs},
                         parent_images={parent: pinned})

    def _wheels_for(self, plan: Any, v: Any, kind: str) -> tuple[list[WheelSpec], str]:
        var = v.variant
        if kind == "base_wheels":
            return (base_specs(v.name, var.rocm_version, var.python_version, self.base_bytes),
                    f"base-wheels/{v.name}/{self.base_bytes}")
        return ([project_spec(plan.commit, v.name, var.python_version, self.project_bytes)],
                f"project/{plan.commit}/{v.name}/{self.project_bytes}")

    def fabricate(self) -> None:
        """Every layer the nights' builds push, made now (so no night's wall time includes making them)."""
        assert self.factory is not None
        for plan in self.plans.values():
            for v in plan.variants:
                for kind in ("base", "base_wheels", "wheels", "release"):
                    self.factory.layer(plan, v, kind)

    # -- a night --------------------------------------------------------------------------------

    def _phase(self, night: str, step: str) -> None:
        for proxy in self.proxies.values():
            proxy.phase = f"{night}/{step}"

    def log(self, line: str) -> None:
        self.log_lines.append(line)

    def night(self, name: str, label: str) -> Night:
        """One night of the plan ``label`` (``initial``/``source_change``), as the DAG runs it."""
        from rocm_release.adapters import steps

        plan = self.plans[label]
        night = Night(name, plan.commit)
        started = time.monotonic()
        digests: dict[str, dict[str, str]] = {}
        for v in plan.variants:
            refs, builds = self._sense_and_build(name, plan, v)
            night.builds[v.name] = builds
            self._phase(name, "push_images")
            pushed = steps.push_variant_images(plan, v, refs, self.log)
            self._phase(name, "publish_wheels")
            steps.publish_variant_wheels(plan, v, refs, self.log)
            self._phase(name, "promote")
            night.promoted[v.name] = steps.promote_variant(plan, v, pushed.digests, self.log)
            digests[v.name] = pushed.digests
        self._phase(name, "report")
        for v in plan.variants:
            steps.image_sizes(plan, digests[v.name], self.log)
        night.seconds = time.monotonic() - started
        self._phase("idle", "")
        for service, proxy in self.proxies.items():
            night.tallies[service] = {phase.split("/", 1)[1]: t for phase, t in proxy.tallies.items()
                                      if phase.startswith(f"{name}/")}
        return night

    def _sense_and_build(self, name: str, plan: Any, v: Any) -> tuple[dict[str, str], list[str]]:
        from rocm_release.adapters import steps
        from rocm_release.core.decision import current_refs, decide
        from rocm_release.core.task_ids import SENSORS

        self._phase(name, "sensors")
        seen = {artifact: steps.observe_artifact(plan, v, artifact) for artifact in SENSORS}
        decision = decide(base=seen["base_image"], wheels_image=seen["wheels_image"],
                          release_image=seen["release_image"], wheels_published=seen["wheels_published"],
                          base_key=v.base_key, force_rebuild=plan.force_rebuild)
        for reason in decision.reasons:
            self.log(f"{v.name}: {reason}")
        self._phase(name, "builds")
        assert self.factory is not None
        built: list[dict[str, str]] = []
        base_ref = plan.cache_ref(decision.base.digest) if decision.base.digest else None
        for task in decision.builds:
            refs = self.factory.build(plan, v, STAGE_OF[task], base_ref)
            base_ref = refs.get("base", base_ref)
            built.append(refs)
        return current_refs(plan, decision, built), list(decision.builds)

    # -- after the nights -----------------------------------------------------------------------

    def registry_bytes(self) -> int:
        """The shared registries' storage (blobs stay there after the run, until a registry GC)."""
        return sum(folder_bytes(self.services.registry_storage(name)) for name in ("cache", "public"))

    def storage(self) -> dict[str, int]:
        """Bytes in the bucket by folder: ``<commit>/<variant>/``, ``nightly/…``, any other top folder."""
        client = admin_client("s3", self.services.moto_url)
        sizes: dict[str, int] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="rocm/"):
            for item in page.get("Contents", []):
                parts = item["Key"].split("/")
                folder = "/".join(parts[1:3]) + "/" if len(parts) > 3 else parts[1] if len(parts) > 1 else ""
                sizes[folder] = sizes.get(folder, 0) + int(item["Size"])
        return dict(sorted(sizes.items()))

    def cleanup(self) -> list[str]:
        problems: list[str] = []
        try:
            client = admin_client("s3", self.services.moto_url)
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
            client.delete_bucket(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001 - cleanup goes on
            problems.append(f"bucket {self.bucket}: {exc}")
        problems += remove_tags(self.services.cache_host, [f"{self.prefix}/tinyllm"])
        problems += remove_tags(self.services.public_host, [f"{self.prefix}/tinyllm-rocm"])
        for proxy in self.proxies.values():
            proxy.close()
        os.environ.pop(conn_env_name(self.conn_id), None)
        shutil.rmtree(self.root, ignore_errors=True)
        return problems
