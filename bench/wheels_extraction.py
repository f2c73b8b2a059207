#!/usr/bin/env python3
"""Benchmark 2 — getting the wheels out of a cached image, ready to publish.

**Ours** (``publish_wheels``): the wheels image is ``FROM scratch`` with only
``/dist`` (the wheels and ``SHA256SUMS``); ``rocm_release.adapters.wheels_image.read_dist``
streams its layers through the registry API, verifies every sha256 and writes
the wheels to a folder. No docker daemon.

**Reference** (REFERENCE_PIPELINE.md §1 step 2/1: ``docker create`` / ``docker cp``):
the wheels sit inside a big image (base OS layers + 4×256 MiB of "toolchain" +
the ``/dist`` layer); an empty CI host (a private dockerd) does ``docker pull``,
``docker create``, ``docker cp <container>:/dist``, ``docker rm``.

Both end with the same verified wheel files on local disk; what happens after
(platform retag, upload, index) is the same on both sides and not measured.

    .venv/bin/python bench/wheels_extraction.py [--wheel-mib 64] [--layers 4] [--layer-mib 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from big_image import build_and_push
from local_services import Services, bench_prefix, registry_client, run_id
from registry_traffic import RegistryTraffic, Traffic, human_bytes
from report import Ratio, Result, fmt_spread, main, median, progress, ratio

from tests.support.dockerd import private_dockerd
from tests.support.registries import remove_tags
from tests.support.wheels import make_wheel as fabricated_wheel


def make_wheel(folder: Path, payload_mib: int) -> Path:
    """A real wheel (``WheelFile`` writes RECORD) with a ``payload_mib`` MiB native library, same bytes every
    run (stored, not deflated: the library is random bytes); ``SHA256SUMS`` next to it."""
    filler = random.Random(7)  # noqa: S311 - filler bytes, the same in every run
    modules = {
        "benchllm/__init__.py": b"VERSION = '0.1.0'\n",
        "benchllm/_C.so": b"".join(filler.randbytes(1 << 20) for _ in range(payload_mib)),
    }
    path = fabricated_wheel(folder, "benchllm", "0.1.0", tag="cp311-cp311-linux_x86_64", requires_python=None,
                            modules=modules, compress_type=zipfile.ZIP_STORED)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "SHA256SUMS").write_text(f"{digest}  {path.name}\n")
    return path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wheel-mib", type=int, default=64, help="size of the wheel's native library (MiB)")
    parser.add_argument("--layers", type=int, default=4, help="big image: random-data layers")
    parser.add_argument("--layer-mib", type=int, default=256, help="big image: MiB per layer")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of the reference (median)")
    parser.add_argument("--ours-repeat", type=int, default=5, help="repetitions of ours (median)")


def run(args: argparse.Namespace, result: Result) -> None:
    from rocm_release.adapters.wheels_image import file_sink, read_dist

    services = Services.load()
    rid = run_id()
    prefix = bench_prefix(rid)
    wheels_repo, release_repo = f"{prefix}/wheels", f"{prefix}/release"
    traffic = RegistryTraffic(services, prefix)
    result.what = (
        f"A {args.wheel_mib} MiB wheel is taken out of a cached image onto local disk, verified. Ours: "
        "`read_dist` on the `FROM scratch` wheels image (registry API, /dist layers only). Reference: "
        f"`docker pull` of a release-shaped image (base OS + {args.layers}×{args.layer_mib} MiB + /dist) on an "
        "empty private dockerd, `docker create`, `docker cp /dist`, `docker rm`."
    )
    cache = registry_client(services.cache_host)
    ours, ours_traffic, ref, ref_traffic = [], [], [], []
    try:
        with tempfile.TemporaryDirectory(prefix="rocm-nightly-bench-wheels-") as tmp:
            root = Path(tmp)
            progress(f"making a {args.wheel_mib} MiB wheel and the two images")
            wheel = make_wheel(root / "dist", args.wheel_mib)
            wheel_size = wheel.stat().st_size
            with private_dockerd() as builder:
                wheels_image = build_and_push(services, builder, f"{services.cache_host}/{wheels_repo}:w-{rid}",
                                              layers=0, dist=root / "dist", base="scratch")
                release_image = build_and_push(services, builder, f"{services.cache_host}/{release_repo}:r-{rid}",
                                               layers=args.layers, layer_mib=args.layer_mib, dist=root / "dist")
            for i in range(args.ours_repeat):
                out = root / f"ours-{i}"
                out.mkdir()
                traffic.start()
                started = time.monotonic()
                files = read_dist(cache, wheels_repo, wheels_image.digest, sink=file_sink(out))
                ours.append(time.monotonic() - started)
                ours_traffic.append(traffic.stop())
                if [f.name for f in files] != [wheel.name] or (out / wheel.name).read_bytes() != wheel.read_bytes():
                    raise RuntimeError(f"read_dist gave {files}, not the wheel that was built in")
            for i in range(args.repeat):
                out = root / f"ref-{i}"
                progress("reference: docker pull + create + cp /dist on an empty private dockerd")
                with private_dockerd() as host:
                    traffic.start()
                    started = time.monotonic()
                    services.docker(["pull", release_image.ref], host=host.host)
                    container = services.docker(["create", release_image.ref, "/bin/true"],
                                                host=host.host).stdout.strip()
                    services.docker(["cp", f"{container}:/dist", str(out)], host=host.host)
                    services.docker(["rm", container], host=host.host)
                    ref.append(time.monotonic() - started)
                    ref_traffic.append(traffic.stop())
                if (out / wheel.name).read_bytes() != wheel.read_bytes():
                    raise RuntimeError("docker cp gave other bytes than the wheel that was built in")
    finally:
        problems = remove_tags(services.cache_host, [wheels_repo, release_repo])
        cache.close()
        if problems:
            result.notes.append("cleanup problems: " + "; ".join(problems))

    def row(name: str, seconds: list[float], seen: Traffic) -> list[str]:
        return [name, fmt_spread(seconds), human_bytes(seen.total_bytes), str(seen.total_requests)]

    result.columns = ["way", "wall time (median)", "bytes read from the registry", "registry requests"]
    result.rows = [
        row("ours: read_dist on the wheels image (FROM scratch, /dist only)", ours, ours_traffic[0]),
        row("reference: docker pull + create + cp /dist of the release-shaped image", ref, ref_traffic[0]),
    ]
    result.ratios = [
        Ratio("wall time, reference ÷ ours", ratio(median(ref), median(ours))),
        Ratio("bytes read, reference ÷ ours", ratio(ref_traffic[0].total_bytes, ours_traffic[0].total_bytes)),
    ]
    result.notes += [
        f"Wheel: {human_bytes(wheel_size)}; the physical limit is reading it once. Ours reads "
        f"{human_bytes(ours_traffic[0].total_bytes)} ({ours_traffic[0].total_bytes / wheel_size:.2f}× the wheel: "
        "the layer's tar framing, SHA256SUMS, the manifest), and verifies every sha256 while streaming.",
        f"Reference image: {human_bytes(ref_traffic[0].blob_bytes_down)} of blobs pulled for one wheel; "
        "the pull also unpacks every layer to disk before `docker cp` can read /dist.",
        f"Repetitions: ours {args.ours_repeat}, reference {args.repeat} (median shown); each reference run "
        "starts on a new, empty private dockerd (its start is not timed).",
    ]
    result.raw.update({
        "wheel_bytes": wheel_size, "ours_seconds": ours, "ref_seconds": ref,
        "ours_traffic": ours_traffic[0].as_dict(), "ref_traffic": [t.as_dict() for t in ref_traffic],
        "wheels_image": wheels_image.digest, "release_image": release_image.digest,
    })


if __name__ == "__main__":
    sys.exit(main("wheels", "2. Wheels out of a cached image", run, configure))
