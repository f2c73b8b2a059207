"""Real wheels made in tests with ``wheel.wheelfile.WheelFile`` (RECORD written by it), deterministic bytes."""

from __future__ import annotations

import calendar
import os
import platform
import struct
import subprocess
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

ARCH = platform.machine()  # the pip checks install the binary wheel on this machine
PLATFORM_TAG = f"manylinux_2_28_{ARCH}"
# Every entry gets this zip timestamp, so a wheel made twice from the same arguments is the same bytes.
FIXED_TIME = (2026, 11, 1, 12, 0, 0)
# ELF e_machine of the architectures a variant may publish.
ELF_MACHINES = {"x86_64": 62, "aarch64": 183}


def fake_elf(payload: bytes = b"", arch: str | None = None) -> bytes:
    """A "shared library" that is a valid ELF header (64-bit, little-endian, ET_DYN, ``arch``'s machine)
    without sections, then ``payload``: it needs no symbol versions, so the publish-time platform check
    (adapters/wheel_platform.py) reads it and passes it under any manylinux tag. ``arch``: this machine's
    by default."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # ELFCLASS64, ELFDATA2LSB, EV_CURRENT, System V
    machine = ELF_MACHINES[arch or platform.machine()]
    # e_type ET_DYN, e_machine, e_version, no entry, no program or section headers, e_ehsize 64.
    header = struct.pack("<HHIQQQIHHHHHH", 3, machine, 1, 0, 0, 0, 0, 64, 56, 0, 64, 0, 0)
    return ident + header + payload


def make_wheel(
    folder: Path,
    name: str,
    version: str,
    *,
    tag: str = "py3-none-any",
    requires_python: str | None = ">=3.9",
    requires: Sequence[str] = (),
    modules: Mapping[str, bytes] | None = None,
    wheel_tags: Sequence[str] | None = None,
    date_time: tuple[int, int, int, int, int, int] = FIXED_TIME,
    compress_type: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """Write ``<name>-<version>-<tag>.whl`` into ``folder``; ``wheel_tags`` overrides WHEEL's Tag lines.

    ``modules`` maps archive paths to bytes; by default one ``<module>/__init__.py`` that records
    the version, plus a ``_native.so`` (``fake_elf``) when the tag is not ``any`` (a "binary" wheel).
    """
    from wheel.wheelfile import WheelFile

    module = canonicalize_name(name).replace("-", "_")
    dist = f"{module}-{version}"
    python, abi, platforms = tag.split("-")
    if modules is None:
        modules = {f"{module}/__init__.py": f"VERSION = {version!r}\n".encode()}
        if not tag.endswith("-any"):
            modules = {**modules, f"{module}/_native.so": fake_elf(bytes(range(256)) * 8, _arch_of(platforms))}
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        metadata.append(f"Requires-Python: {requires_python}")
    metadata += [f"Requires-Dist: {r}" for r in requires]
    tags = wheel_tags if wheel_tags is not None else [
        f"{i}-{a}-{p}" for i in python.split(".") for a in abi.split(".") for p in platforms.split(".")
    ]
    purelib = str(tag.endswith("-any")).lower()
    wheel_file = ["Wheel-Version: 1.0", "Generator: rocm-nightly-tests", f"Root-Is-Purelib: {purelib}"]
    wheel_file += [f"Tag: {t}" for t in tags]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module}-{version}-{tag}.whl"
    entries = {
        **modules,
        f"{dist}.dist-info/METADATA": ("\n".join(metadata) + "\n").encode(),
        f"{dist}.dist-info/WHEEL": ("\n".join(wheel_file) + "\n").encode(),
    }
    # WheelFile writes RECORD on close, stamped with SOURCE_DATE_EPOCH (else the wall clock).
    saved = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = str(calendar.timegm((*date_time, 0, 0, 0)))
    try:
        with WheelFile(path, "w") as archive:
            for arcname, data in entries.items():
                info = zipfile.ZipInfo(arcname, date_time=date_time)
                info.compress_type = compress_type
                info.external_attr = 0o644 << 16
                archive.writestr(info, data)
    finally:
        if saved is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = saved
    return path


@dataclass(frozen=True)
class Wheels:
    dep: Path  # tinydep, pure Python
    thing: Path  # tinything, binary (a fake .so), re-tagged linux → manylinux, depends on tinydep

    @property
    def both(self) -> list[Path]:
        return [self.dep, self.thing]


def build_wheels(folder: Path, *, thing_version: str = "0.1.0.dev3+rocm710", marker: str = "") -> Wheels:
    """The two wheels of a release, retagged as publishing does; ``marker`` changes tinything's bytes."""
    raw = folder / "raw"
    dep = make_wheel(raw, "tinydep", "1.0", requires_python=">=3.9")
    module = {
        "tinything/__init__.py": f"import tinydep\nVERSION = {thing_version!r}\nMARK = {marker!r}\n".encode(),
        "tinything/_native.so": fake_elf(marker.encode() + bytes(range(256)) * 16),
    }
    thing = make_wheel(
        raw, "tinything", thing_version, tag=f"py3-none-linux_{ARCH}", requires=["tinydep>=1.0"], modules=module
    )
    out = folder / "dist"
    return Wheels(dep=_retag(dep, PLATFORM_TAG, out), thing=_retag(thing, PLATFORM_TAG, out))


def _retag(path: Path, platform_tag: str, out: Path) -> Path:
    from rocm_release.adapters.wheel_retag import retag_platform

    return retag_platform(path, platform_tag, out)


def _arch_of(platforms: str) -> str:
    """The architecture a wheel's platform tags name (``linux_aarch64`` → aarch64), else this machine's."""
    return next((arch for arch in ELF_MACHINES if platforms.endswith(arch)), platform.machine())


def compile_library(folder: Path, name: str, source: str, *, args: Sequence[str] = ()) -> Path:
    """``source`` (C) compiled by the system's gcc into ``folder/<name>``, a shared library; ``args``:
    more of gcc's arguments (``-L``, ``-l``, ``-Wl,…``). Real ELF, real symbol versions."""
    folder.mkdir(parents=True, exist_ok=True)
    c_file = folder / f"{name}.c"
    c_file.write_text(source)
    out = folder / name
    done = subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(out), str(c_file), *args],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"gcc failed for {name}: {done.stderr}"
    return out
