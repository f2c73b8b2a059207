"""Fabricated but valid wheels at vLLM's sizes, and the ``/dist`` layer of a wheels image holding them.

A wheel here is a real one: ``METADATA``, ``WHEEL`` (``Tag:`` lines agreeing
with the file name: ``linux_x86_64`` for binary wheels as the build produces
them, ``py3-none-any`` for pure ones) and ``RECORD`` with every entry's sha256
and size, so ``wheel tags`` (the platform re-tagging) and the index code read
it like a built one. Its bulk is incompressible: ``lib/*.so`` entries of at
most 64 MiB (``wheel tags`` holds one entry in memory at a time) filled with
AES-CTR output, streamed to disk (ZIP_STORED), never whole in memory.

The bytes are a function of (seed, entry): the same wheel made again is the
same file, so a rerun pushes the same blobs and the shared registries'
storage does not grow by gigabytes per run (bench/README.md).
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MIB = 1 << 20
ENTRY_MAX = 64 * MIB
FIXED_TIME = (2026, 11, 1, 12, 0, 0)
FIXED_MTIME = 1793534400  # 2026-11-01 12:00 UTC, every tar member
SUMS_NAME = "SHA256SUMS"

# vLLM's ROCm base wheels (REFERENCE_PIPELINE.md: triton, flash-attn, amdsmi, torch/vision/audio, aiter,
# plus triton_kernels), with a share of the base set's bytes each, and whether the wheel is pure.
BASE_WHEELS: tuple[tuple[str, str, float, bool], ...] = (
    ("torch", "2.9.0", 0.30, False),
    ("triton", "3.5.0", 0.14, False),
    ("aiter", "0.1.6", 0.14, False),
    ("flash_attn", "2.8.3", 0.12, False),
    ("torchvision", "0.24.0", 0.10, False),
    ("torchaudio", "2.9.0", 0.08, False),
    ("amdsmi", "7.1.0", 0.06, True),
    ("triton_kernels", "1.0.0", 0.06, True),
)


@dataclass(frozen=True)
class WheelSpec:
    """One wheel to make: project, version, tag (``cp311-cp311-linux_x86_64`` or ``py3-none-any``), payload."""

    name: str
    version: str
    tag: str
    payload: int
    requires_python: str = ">=3.10"

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.tag}.whl"


def base_specs(variant: str, rocm_version: str, python: str, total: int) -> list[WheelSpec]:
    """The base wheels of one variant: ``total`` bytes of payload shared as vLLM's are."""
    cp = "cp" + python.replace(".", "")
    specs = []
    for name, version, share, pure in BASE_WHEELS:
        payload = max(MIB, -(-int(total * share) // MIB) * MIB)  # rounded up to whole MiB: the set is >= total
        tag = "py3-none-any" if pure else f"{cp}-{cp}-linux_x86_64"
        specs.append(WheelSpec(name, f"{version}+rocm{rocm_version}", tag, payload))
    return specs


def project_spec(commit: str, variant: str, python: str, total: int) -> WheelSpec:
    """The project's wheel at one commit (vLLM's version scheme: ``<next>.dev0+g<sha7>.<variant>``)."""
    cp = "cp" + python.replace(".", "")
    payload = max(MIB, -(-total // MIB) * MIB)
    return WheelSpec("vllm", f"0.11.1.dev0+g{commit[:7]}.{variant}", f"{cp}-{cp}-linux_x86_64", payload)


def keystream(seed: str) -> Cipher:  # type: ignore[type-arg]
    key = hashlib.sha256(seed.encode()).digest()
    return Cipher(algorithms.AES(key), modes.CTR(b"\0" * 16))


def _record_hash(digest: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _small_entries(spec: WheelSpec) -> dict[str, bytes]:
    module = spec.name
    dist = f"{module}-{spec.version}.dist-info"
    purelib = str(spec.tag.endswith("-any")).lower()
    metadata = (f"Metadata-Version: 2.1\nName: {spec.name}\nVersion: {spec.version}\n"
                f"Requires-Python: {spec.requires_python}\nSummary: fabricated for rocm-nightly's scale benchmark\n")
    wheel = f"Wheel-Version: 1.0\nGenerator: rocm-nightly-bench\nRoot-Is-Purelib: {purelib}\nTag: {spec.tag}\n"
    return {f"{module}/__init__.py": f"__version__ = {spec.version!r}\n".encode(),
            f"{dist}/METADATA": metadata.encode(), f"{dist}/WHEEL": wheel.encode()}


def make_wheel(folder: Path, spec: WheelSpec, seed: str) -> Path:
    """Write ``spec`` into ``folder``: incompressible ``lib/*.so`` entries + valid metadata and RECORD."""
    path = folder / spec.filename
    dist = f"{spec.name}-{spec.version}.dist-info"
    record: list[str] = []
    blank = bytes(min(spec.payload, MIB))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for arcname, data in _small_entries(spec).items():
            archive.writestr(_info(arcname), data)
            record.append(f"{arcname},{_record_hash(hashlib.sha256(data).digest())},{len(data)}")
        left, number = spec.payload, 0
        while left:
            size = min(left, ENTRY_MAX)
            arcname = f"{spec.name}/lib/lib{spec.name}_{number}.so"
            encryptor = keystream(f"{seed}/{spec.filename}/{number}").encryptor()
            digest = hashlib.sha256()
            with archive.open(_info(arcname), "w", force_zip64=True) as out:
                todo = size
                while todo:
                    piece = encryptor.update(blank[:min(todo, MIB)])
                    digest.update(piece)
                    out.write(piece)
                    todo -= len(piece)
            record.append(f"{arcname},{_record_hash(digest.digest())},{size}")
            left -= size
            number += 1
        record.append(f"{dist}/RECORD,,")
        archive.writestr(_info(f"{dist}/RECORD"), ("\n".join(record) + "\n").encode())
    return path


def _info(arcname: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(arcname, date_time=FIXED_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


class HashingWriter(io.RawIOBase):
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.digest, self.size = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.out.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)


@dataclass(frozen=True)
class DistLayer:
    """An uncompressed tar layer holding ``dist/*.whl`` and ``dist/SHA256SUMS``: its file and what it holds."""

    path: Path
    digest: str
    size: int
    sums: str
    wheels: dict[str, int]

    @property
    def wheel_bytes(self) -> int:
        return sum(self.wheels.values())


def _member(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mtime, info.mode = size, kind, FIXED_MTIME, 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def make_dist_layer(scratch: Path, layer: Path, specs: list[WheelSpec], seed: str) -> DistLayer:
    """Make each wheel in ``scratch``, append it to the tar ``layer`` and delete it (one wheel on disk at a time)."""
    sums: list[str] = []
    wheels: dict[str, int] = {}
    with layer.open("wb") as raw:
        writer = HashingWriter(raw)
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            tar.addfile(_member("dist", 0, tarfile.DIRTYPE))
            for spec in specs:
                wheel = make_wheel(scratch, spec, seed)
                digest = hashlib.sha256()
                with wheel.open("rb") as source:
                    for piece in iter(lambda: source.read(MIB), b""):  # noqa: B023 - consumed at once
                        digest.update(piece)
                size = wheel.stat().st_size
                with wheel.open("rb") as source:
                    tar.addfile(_member(f"dist/{wheel.name}", size), source)
                wheel.unlink()
                sums.append(f"{digest.hexdigest()}  {wheel.name}")
                wheels[wheel.name] = size
            text = "\n".join(sums) + "\n"
            tar.addfile(_member(f"dist/{SUMS_NAME}", len(text)), io.BytesIO(text.encode()))
    return DistLayer(layer, "sha256:" + writer.digest.hexdigest(), writer.size, text, wheels)
