"""A nightly history for retention: N nights of images in a cache and a public repository, a store.

``build_history`` pushes, through a ``Pusher`` (``EcrPusher`` on moto, ``OciPusher`` on a registry),
three old bases, N nights (per variant a wheels and a release image whose labels name their base;
public copies of the recent nights), a newest base no image uses yet, the ``nightly``/``base-nightly``
aliases (``nightly-rocm723`` stuck on an old night) and tags that are not ours. Commit names sort
*against* push time. ``expected_tags`` says what must remain; ``run_retention`` runs what the
retention DAG's two tasks run. Shared by tests/integration/test_retention.py,
tests/e2e/test_retention_dag.py and bench/retention_scale.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from rocm_release.adapters.wheels_publish import promote_index, publish_wheels
from rocm_release.core.config import PublicTagPatterns, Registry, ReleaseConfig, WheelStore
from rocm_release.core.names import OCI_MANIFEST
from rocm_release.core.plan import (
    LABEL_BASE_DIGEST,
    LABEL_BASE_KEY,
    LABEL_COMMIT,
    LABEL_KIND,
    LABEL_VARIANT,
    base_tag,
    base_wheels_tag,
    nightly_wheels_prefix,
    public_tag,
    release_tag,
    wheels_prefix,
    wheels_tag,
)
from rocm_release.core.registry import ImageRegistry
from tests.support.demo import DEMO_CONFIG
from tests.support.ecr import OCI_CONFIG, OCI_LAYER, BlobServer
from tests.support.registries import digest_of
from tests.support.wheels import make_wheel

VARIANTS = ("rocm710", "rocm723")
STRANGER = "rocm7100"  # a variant that is not configured: its tags are not ours
K0, K1, K2, K3 = (f"{n:016x}" for n in (0xA0, 0xA1, 0xA2, 0xA3))  # bases: unused, old nights, new nights, newest
P = PublicTagPatterns()  # the public tag patterns (config defaults)


def alias(pattern: str, variant: str) -> str:
    return public_tag(pattern, variant=variant, commit="")


def commit_name(i: int) -> str:
    """Commit i of the history: the newer, the smaller the name."""
    return f"{10**9 - i:040x}"


class Pusher:
    """Pushes one image (deterministic bytes from ``seed``) under a tag, in the cache or public repository."""

    def image(self, role: str, tag: str, seed: str, labels: dict[str, str], seq: int) -> str:
        raise NotImplementedError


@dataclass
class History:
    """What was pushed: commits oldest first, digests by (role, tag), and what must survive."""

    commits: list[str]
    keep: int
    nightly_image: str  # nightly-rocm723 points to this old commit's release image
    nightly_folder: str  # <store>/nightly/rocm710/ names this old commit
    digests: dict[tuple[str, str], str] = field(default_factory=dict)
    made: dict[tuple[str, str], tuple[str, dict[str, str], int]] = field(default_factory=dict)

    @property
    def kept_commits(self) -> set[str]:
        return set(self.commits[-self.keep:]) | {self.nightly_image, self.nightly_folder}

    def tags(self, role: str) -> set[str]:
        return {tag for r, tag in self.digests if r == role}


def build_history(push: Pusher, n: int, keep: int, public_recent: int, boundary: Callable[[], None]) -> History:
    """n nights; the newest ``keep`` are pushed after ``boundary()`` (moto: the next second)."""
    commits = [commit_name(i) for i in range(n)]
    h = History(commits, keep, nightly_image=commits[n // 5], nightly_folder=commits[n // 10])
    seq = 0

    def put(role: str, tag: str, seed: str, labels: dict[str, str]) -> None:
        h.made[(role, tag)] = (seed, labels, seq)
        h.digests[(role, tag)] = push.image(role, tag, seed, labels, seq)

    def copy(role: str, tag: str, of: tuple[str, str]) -> None:
        """What push_images/promote do: the same manifest under another tag (same digest)."""
        seed, labels, at = h.made[of]
        h.made[(role, tag)] = (seed, labels, at)
        h.digests[(role, tag)] = push.image(role, tag, seed, labels, at)
        assert h.digests[(role, tag)] == h.digests[of]

    def bases(key: str) -> None:
        for v in VARIANTS:
            put("cache", base_tag(key, v), f"base {key} {v}", {LABEL_BASE_KEY: key, LABEL_KIND: "base"})
            put("cache", base_wheels_tag(key, v), f"base-wheels {key} {v}",
                {LABEL_BASE_KEY: key, LABEL_KIND: "base_wheels"})

    def night(i: int) -> None:
        c = commits[i]
        key = K2 if i >= n - keep else K1
        public = i >= n - public_recent or c in (h.nightly_image, h.nightly_folder)
        for v in VARIANTS:
            base = h.digests[("cache", base_tag(key, v))]
            common = {LABEL_BASE_KEY: key, LABEL_BASE_DIGEST: base, LABEL_COMMIT: c, LABEL_VARIANT: v}
            put("cache", wheels_tag(c, v), f"wheels {c} {v}", {**common, LABEL_KIND: "wheels"})
            put("cache", release_tag(c, v), f"release {c} {v}", {**common, LABEL_KIND: "release"})
            if public:
                copy("public", public_tag(P.nightly_commit, variant=v, commit=c), ("cache", release_tag(c, v)))
                copy("public", public_tag(P.base_nightly_commit, variant=v, commit=c), ("cache", base_tag(key, v)))

    for key in (K0, K1, K2):
        seq += 1
        bases(key)
    for i in range(n - keep):
        seq += 1
        night(i)
    boundary()
    for i in range(n - keep, n):
        seq += 1
        night(i)
    seq += 1
    bases(K3)  # built last; no image uses it yet
    copy("public", alias(P.nightly, "rocm710"), ("cache", release_tag(commits[-1], "rocm710")))
    copy("public", alias(P.nightly, "rocm723"), ("cache", release_tag(h.nightly_image, "rocm723")))  # stuck
    for v in VARIANTS:
        copy("public", alias(P.base_nightly, v), ("cache", base_tag(K2, v)))
    # tags that are not ours: another variant, a hand-made alias on an old night's release image
    old = commits[2]
    put("cache", release_tag(old, STRANGER), f"stranger {old}", {})
    copy("cache", "latest", ("cache", release_tag(commits[3], "rocm710")))
    put("public", public_tag(P.nightly_commit, variant=STRANGER, commit=old), f"public stranger {old}", {})
    return h


def history_tags(n: int, public_recent: int) -> int:
    """How many tags ``build_history(n, …, public_recent)`` pushes (both repositories)."""
    recent = set(range(max(0, n - public_recent), n))
    public_nights = len(recent | {n // 5, n // 10}) if n else 0
    bases = 4 * len(VARIANTS) * 2  # K0..K3, base and base-wheels
    aliases, strangers = 2 * len(VARIANTS), 3
    return bases + n * len(VARIANTS) * 2 + public_nights * len(VARIANTS) * 2 + aliases + strangers


def build_store(store: Any, url: str, h: History, tmp_path: Path) -> None:
    """A folder per commit (one file each) and the rocm710 nightly alias naming an old commit."""
    for c in h.commits:
        if c != h.nightly_folder:
            (store / c / "rocm710").mkdir(parents=True, exist_ok=True)
            (store / c / "rocm710" / "index.html").write_text("<html></html>")
    wheel = make_wheel(tmp_path / "wheels", "tinything", "0.1.0")
    source = wheels_prefix(url, h.nightly_folder, "rocm710")
    publish_wheels([wheel], store / h.nightly_folder / "rocm710", source, lambda _: None)
    promote_index(store / h.nightly_folder / "rocm710", source, store / "nightly" / "rocm710",
                  nightly_wheels_prefix(url, "rocm710"), commit=h.nightly_folder, variant="rocm710",
                  log=lambda _: None)


def expected_tags(h: History, role: str, *, by_digest: bool) -> set[str]:
    """What must remain of ``role``'s tags after retention."""
    kept = h.kept_commits
    keep: set[str] = set()
    for tag in h.tags(role):
        commit = next((c for c in h.commits if c in tag), None)
        if commit is None:  # aliases, bases, strangers
            if any(f"{k}-" in tag for k in (K0,)):
                continue  # the unused base goes
            keep.add(tag)
        elif commit in kept or STRANGER in tag:
            keep.add(tag)
    if by_digest:  # a doomed tag sharing a digest with a kept one stays
        kept_digests = {h.digests[(role, t)] for t in keep}
        keep |= {t for t in h.tags(role) if h.digests[(role, t)] in kept_digests}
    return keep



def labelled_image(seed: str, labels: dict[str, str], created: str | None = None) -> tuple[bytes, bytes, bytes]:
    """(manifest, config, layer) of a one-layer image with ``labels``; deterministic bytes."""
    layer = seed.encode()
    config_doc: dict[str, Any] = {"architecture": "amd64", "os": "linux", "config": {"Labels": labels},
                                  "rootfs": {"type": "layers", "diff_ids": []}}
    if created:
        config_doc["created"] = created
    config = json.dumps(config_doc, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(layer), "size": len(layer)}],
    }, sort_keys=True).encode()
    return manifest, config, layer


class OciPusher(Pusher):
    """Real blobs and manifests over plain HTTP, independent of the code under test (one client, no
    HEADs: this pusher knows what it pushed). ``created`` — the OCI push time — is 2026-11-01 + seq minutes."""

    def __init__(self, urls: dict[str, str], repos: dict[str, str]) -> None:
        self.urls, self.repos = urls, repos
        self.client = httpx.Client(timeout=30)
        self.pushed: set[tuple[str, str]] = set()

    def _blob(self, role: str, data: bytes) -> str:
        digest = digest_of(data)
        if (role, digest) in self.pushed:
            return digest
        base, repo = self.urls[role], self.repos[role]
        start = self.client.post(f"{base}/v2/{repo}/blobs/uploads/")
        assert start.status_code == 202, start.text
        url = httpx.URL(base).join(start.headers["location"]).copy_merge_params({"digest": digest})
        done = self.client.put(url, content=data, headers={"Content-Type": "application/octet-stream"})
        assert done.status_code == 201, done.text
        self.pushed.add((role, digest))
        return digest

    def image(self, role: str, tag: str, seed: str, labels: dict[str, str], seq: int) -> str:
        created = f"2026-11-{1 + seq // 1440:02d}T{seq // 60 % 24:02d}:{seq % 60:02d}:00Z"
        manifest, config, layer = labelled_image(seed, labels, created)
        for blob in (config, layer):
            self._blob(role, blob)
        put = self.client.put(f"{self.urls[role]}/v2/{self.repos[role]}/manifests/{tag}", content=manifest,
                              headers={"Content-Type": OCI_MANIFEST})
        assert put.status_code == 201, put.text
        return digest_of(manifest)


class EcrPusher(Pusher):
    """PutImage of hand-made manifests (moto has no blob store); config blobs go to the blob server."""

    def __init__(self, client: Any, repos: dict[str, str], blobs: BlobServer) -> None:
        self.client, self.repos, self.blobs = client, repos, blobs

    def image(self, role: str, tag: str, seed: str, labels: dict[str, str], seq: int) -> str:
        manifest, config, _ = labelled_image(seed, labels)
        self.blobs.add(config)
        # imageDigest: moto stores ECR's digest (sha256 of the manifest) only when told (tests/support/ecr.py)
        self.client.put_image(repositoryName=self.repos[role], imageManifest=manifest.decode(),
                              imageManifestMediaType=OCI_MANIFEST, imageTag=tag, imageDigest=digest_of(manifest))
        return digest_of(manifest)


def after_window(config: ReleaseConfig) -> datetime:
    """A "now" just past the recent window of pushes made now: moto dates every push with the current time
    and cannot be told otherwise, so retention runs as if ``protect_recent_hours`` (+1) had passed."""
    return datetime.now(UTC) + timedelta(hours=config.retention.protect_recent_hours + 1)


def next_second() -> None:
    """moto's imagePushedAt has whole seconds: start the newest nights in a later second."""
    time.sleep(1.05 - (time.time() % 1.0))


def scene_config(cache: Registry, public: Registry, store_url: str, conn_id: str | None = None) -> ReleaseConfig:
    """The demo config (two variants) with this scene's registries and store."""
    from rocm_release.adapters.config_file import load_config

    demo = load_config(DEMO_CONFIG)
    return demo.model_copy(update={"cache_registry": cache, "public_registry": public,
                                   "wheel_store": WheelStore(url=store_url, connection_id=conn_id)})


@dataclass
class RetentionRun:
    """What one run planned and applied, the store calls it made, and its phases' wall times (s)."""

    plan: Any  # RetentionPlan
    applied: Any  # what apply_retention returned
    calls: Any  # CallCount
    phases: dict[str, float]
    log: list[str] = field(default_factory=list)


def run_retention(config: ReleaseConfig, cache: ImageRegistry, public: ImageRegistry, store: Any,
                  keep: int, *, now: datetime | None = None, runs: Sequence[Any] = (),
                  between: Callable[[Any], Sequence[Any] | None] = lambda plan: None) -> RetentionRun:
    """What the retention DAG's two tasks do, timed: observe, read labels, plan, read everything the plan
    assumed again, apply. ``now``: when the run happens (default now; moto's push times cannot be chosen, a
    later ``now`` ages them); ``runs``: nightly runs in progress (RunInUse); ``between(plan)``: what happens
    in the world between the two tasks; it may return the runs in progress by then (default: ``runs``)."""
    from rocm_release.adapters.retention import (
        CallCount,
        apply_retention,
        observe_retention,
        read_base_use,
    )
    from rocm_release.adapters.retention_current import read_current
    from rocm_release.core.retention import images_to_inspect, plan_retention

    now = now or datetime.now(UTC)
    calls = CallCount()
    log: list[str] = []
    t0 = time.perf_counter()
    inputs = observe_retention(config, cache=cache, public=public, store=store, keep_commits=keep, log=log.append,
                               calls=calls, runs=runs, now=now)
    t1 = time.perf_counter()
    base_use = read_base_use(cache, images_to_inspect(inputs), log.append, calls)
    t2 = time.perf_counter()
    plan = plan_retention(inputs, base_use)
    later = between(plan)
    runs = runs if later is None else later
    t3 = time.perf_counter()
    cache_location = f"{cache.name}/{config.cache_registry.repository}"
    targets = {cache_location: (cache, config.cache_registry.repository),
               f"{public.name}/{config.public_registry.repository}": (public, config.public_registry.repository)}
    current = read_current(config, plan.delete, targets=targets, public=public, store=store, runs=runs, now=now)
    applied = apply_retention(plan.delete, targets=targets, cache_location=cache_location, store=store,
                              store_url=config.wheel_store.url, log=log.append, current=current)
    t4 = time.perf_counter()
    phases = {"list": t1 - t0, "labels": t2 - t1, "plan": t3 - t2, "guard_and_delete": t4 - t3, "total": t4 - t0}
    return RetentionRun(plan, applied, calls, phases, log)
