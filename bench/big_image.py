"""The ~1 GiB image the promotion and wheels benchmarks move around, built on a private daemon.

``FROM`` the base OS image (pinned by digest), then ``layers`` layers of
``layer_mib`` MiB of pseudo-random bytes each (incompressible, like compiled
GPU kernels; gzip cannot shrink them), optionally a last ``COPY dist/ /dist/``
layer. Built with ``--network none`` on a private daemon that is removed
afterwards, and pushed to the cache registry.

The bytes come from a seeded generator and every file and folder gets mtime 0,
so the layers are the same blobs in every run: repeated benchmark runs do not
pile up new gigabytes in the shared registries' storage (their repositories
differ, so every transfer still moves every byte).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from local_services import Services

from tests.support.dockerd import PrivateDockerd

PUSH_DIGEST_RE = re.compile(r"digest: (?P<digest>sha256:[0-9a-f]{64}) size: [0-9]+")


def dockerfile(base: str, layers: int, layer_mib: int, with_dist: bool) -> str:
    # BuildKit creates /etc/hosts and /etc/resolv.conf as mount points for a RUN when they are
    # missing, and removes them after: /etc's mtime would then differ in every layer. Files of
    # our own there (a tiny first layer) keep the RUN layers byte-for-byte repeatable.
    lines = [f"FROM {base}"]
    if layers:
        lines += ["COPY etc/hosts /etc/hosts", "COPY etc/resolv.conf /etc/resolv.conf"]
    for n in range(1, layers + 1):
        path = f"/bench/layer-{n}.bin"
        # 1 MiB at a time: randbytes() of more than 256 MiB overflows a C int.
        gen = (f"import os, random; os.makedirs('/bench', exist_ok=True); r = random.Random({n}); "
               f"f = open('{path}', 'wb'); [f.write(r.randbytes(1 << 20)) for _ in range({layer_mib})]; f.close()")
        lines.append(f'RUN python3 -c "{gen}" && touch -d @0 /bench {path}')
    if with_dist:
        lines.append("COPY dist/ /dist/")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class BuiltImage:
    ref: str  # host/repo:tag
    digest: str
    build_seconds: float
    push_seconds: float


def build_and_push(services: Services, daemon: PrivateDockerd, ref: str, *, layers: int = 4, layer_mib: int = 256,
                   dist: Path | None = None, base: str | None = None) -> BuiltImage:
    """Build the image on ``daemon`` (``--network none``), push it as ``ref``; return its digest.

    ``dist``: a folder whose files become ``/dist/`` in a last layer. ``base``: the ``FROM``
    (default the base OS image; ``scratch`` with ``layers=0`` makes a wheels image).
    """
    with tempfile.TemporaryDirectory(prefix="rocm-nightly-bench-ctx-") as tmp:
        context = Path(tmp)
        if dist is not None:
            shutil.copytree(dist, context / "dist")
        (context / "etc").mkdir()
        (context / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
        (context / "etc" / "resolv.conf").write_text("")
        (context / "Dockerfile").write_text(dockerfile(base or services.base_os_image, layers, layer_mib,
                                                       dist is not None))
        started = time.monotonic()
        services.docker(["build", "--network", "none", "--progress=plain", "--tag", ref, str(context)],
                        host=daemon.host)
        built = time.monotonic()
        out = services.docker(["push", ref], host=daemon.host).stdout
        pushed = time.monotonic()
    found = PUSH_DIGEST_RE.findall(out)
    if not found:
        raise RuntimeError(f"docker push {ref} printed no digest:\n{out[-2000:]}")
    return BuiltImage(ref=ref, digest=found[-1], build_seconds=built - started, push_seconds=pushed - built)
