"""A nightly history for retention tests: N nights of images in a cache and a public repository, a store.

``build_history`` pushes, through a ``Pusher`` (ECR or OCI), three old bases, N nights (per variant a
wheels and a release image whose labels name their base; public copies of the recent nights), a newest
base no image uses yet, the ``nightly``/``base-nightly`` aliases (``nightly-rocm723`` stuck on an old
night) and tags that are not ours. Commit names sort *against* push time. ``expected_tags`` says what
must remain. Shared by tests/integration/test_retention.py and tests/e2e/test_retention_dag.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rocm_release.adapters.wheels_publish import promote_index, publish_wheels
from rocm_release.core.config import PublicTagPatterns
from rocm_release.core.names import OCI_MANIFEST
from rocm_release.core.plan import (
    LABEL_BASE_DIGEST,
    LABEL_BASE_KEY,
    LABEL_COMMIT,
    LABEL_KIND,
    LABEL_VARIANT,
    base_tag,
    base_wheels_tag,
    public_tag,
    release_tag,
    wheels_tag,
)
from tests.fabricated_wheels import make_wheel

VARIANTS = ("rocm710", "rocm723")
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
    put("cache", f"{old}-rocm7100", f"stranger {old}", {})
    copy("cache", "latest", ("cache", release_tag(commits[3], "rocm710")))
    put("public", f"nightly-{old}-rocm7100", f"public stranger {old}", {})
    return h


def build_store(store: Any, url: str, h: History, tmp_path: Path) -> None:
    """A folder per commit (one file each) and the rocm710 nightly alias naming an old commit."""
    for c in h.commits:
        if c != h.nightly_folder:
            (store / c / "rocm710").mkdir(parents=True, exist_ok=True)
            (store / c / "rocm710" / "index.html").write_text("<html></html>")
    wheel = make_wheel(tmp_path / "wheels", "tinything", "0.1.0")
    source = f"{url}/{h.nightly_folder}/rocm710/"
    publish_wheels([wheel], store / h.nightly_folder / "rocm710", source, lambda _: None)
    promote_index(store / h.nightly_folder / "rocm710", source, store / "nightly" / "rocm710",
                  f"{url}/nightly/rocm710/", commit=h.nightly_folder, variant="rocm710", log=lambda _: None)


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
        elif commit in kept or "rocm7100" in tag:
            keep.add(tag)
    if by_digest:  # a doomed tag sharing a digest with a kept one stays
        kept_digests = {h.digests[(role, t)] for t in keep}
        keep |= {t for t in h.tags(role) if h.digests[(role, t)] in kept_digests}
    return keep



class OciPusher(Pusher):
    """Real blobs and manifests over plain HTTP, independent of the code under test (one client, no
    HEADs: this pusher knows what it pushed). ``created`` — the OCI push time — is 2026-11-01 + seq minutes."""

    def __init__(self, urls: dict[str, str], repos: dict[str, str]) -> None:
        self.urls, self.repos = urls, repos
        self.client = httpx.Client(timeout=30)
        self.pushed: set[tuple[str, str]] = set()

    def _blob(self, role: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
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
        layer = seed.encode()
        config = json.dumps({"architecture": "amd64", "os": "linux", "created": created,
                             "config": {"Labels": labels}, "rootfs": {"type": "layers", "diff_ids": []}},
                            sort_keys=True).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": self._blob(role, config),
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": self._blob(role, layer), "size": len(layer)}],
        }, sort_keys=True).encode()
        put = self.client.put(f"{self.urls[role]}/v2/{self.repos[role]}/manifests/{tag}", content=manifest,
                              headers={"Content-Type": OCI_MANIFEST})
        assert put.status_code == 201, put.text
        return "sha256:" + hashlib.sha256(manifest).hexdigest()
