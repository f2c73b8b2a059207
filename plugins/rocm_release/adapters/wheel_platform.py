"""Checking a wheel's ELF files against the manylinux tag it is published under, with auditwheel.

``retag_platform`` names a wheel ``manylinux_X_Y_<arch>`` because the variant's config says so;
this module checks that claim. A manylinux_X_Y tag promises that the wheel runs on any Linux with
glibc ≥ X.Y (PEP 600), so every symbol version its ELF files need (``GLIBC_2.36``,
``GLIBCXX_3.4.30``, ``CXXABI_…``, ``GCC_…``, ``ZLIB_…``) must exist there. What each glibc
provides is auditwheel's policy table (``auditwheel.policy.WheelPolicies``); the versions an ELF
file needs are read from its ``.gnu.version_r`` section by ``auditwheel.elfutils``.

Only that symbol-version policy is applied. auditwheel's other verdicts are about *repairing*
(grafting libraries into the wheel), which we never do: a library outside its whitelist (ROCm's
``libamdhip64.so``, ``librocblas.so``, …) comes from the ROCm install on the target machine,
built for it, and is no reason to refuse a tag. So neither the wheel's libraries are resolved on
this host (the host's libraries say nothing about the target's) nor is the wheel unpacked: each
ELF entry is read on its own, one at a time.

ELF files of another machine than the tag's are skipped (GPU code objects, ``EM_AMDGPU``), except
the other CPU architecture a variant may publish: an aarch64 library in an x86_64 wheel is a build
for the wrong machine.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, NamedTuple

from auditwheel.architecture import Architecture
from auditwheel.elfutils import elf_find_versioned_symbols
from auditwheel.libc import Libc
from auditwheel.policy import WheelPolicies
from elftools.common.exceptions import ELFError
from elftools.construct import ConstructError
from elftools.elf.elffile import ELFFile

from rocm_release.core.errors import FatalError

ELF_MAGIC = b"\x7fELF"
# The e_machine of each architecture a variant may publish (core/config.py: Variant.platform_tag).
MACHINES = {"EM_X86_64": "x86_64", "EM_AARCH64": "aarch64"}
MANYLINUX_TAG = re.compile(r"^manylinux_(?P<major>\d+)_(?P<minor>\d+)_(?P<arch>[a-z0-9_]+)$")
# PEP 600's names for the legacy tags.
LEGACY_TAGS = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
# An ELF entry up to this size is read into memory; a larger one is spooled to a temporary file.
IN_MEMORY_BYTES = 64 * 1024 * 1024
SHOWN_FILES = 5

_ELF_ERRORS = (ELFError, ConstructError, struct.error, ValueError, EOFError)
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError)


class WheelPlatformError(ValueError, FatalError):
    """A wheel whose ELF files cannot be checked against its platform tag (unreadable, wrong machine)."""


class PlatformTagTooLow(WheelPlatformError):
    """The configured manylinux tag promises an older glibc than the wheel's ELF files need."""


class PlatformNeeds(NamedTuple):
    """What a wheel's ELF files need, as auditwheel's symbol-version policy sees it."""

    # ELF path in the wheel → the symbol versions it needs (GLIBC_2.36, GLIBCXX_3.4.30, …).
    symbol_versions: dict[str, frozenset[str]]
    # The lowest manylinux tag whose policy allows every one of them; ``linux_<arch>`` when no policy
    # auditwheel knows does; None for a wheel without ELF files of the architecture (pure Python).
    minimum_tag: str | None


def auditwheel_version() -> str:
    """The installed auditwheel's version (its policy table decides the minimum tag)."""
    return importlib.metadata.version("auditwheel")


def platform_needs(wheel: Path, arch: str) -> PlatformNeeds:
    """The symbol versions each ELF file of ``wheel`` built for ``arch`` needs, and the lowest manylinux
    tag that allows them all. Raises WheelPlatformError for an unreadable wheel or ELF file, or an ELF
    file built for the other CPU architecture."""
    needs: dict[str, frozenset[str]] = {}
    try:
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                versions = _elf_needs(wheel, archive, info, arch)
                if versions is not None:
                    needs[info.filename] = versions
    except _ZIP_ERRORS as exc:
        raise WheelPlatformError(f"{wheel.name}: cannot read the wheel ({exc})") from exc
    if not needs:
        return PlatformNeeds(symbol_versions={}, minimum_tag=None)
    policies = _policies(wheel, arch)
    minimum = policies.versioned_symbols_policy({path: set(versions) for path, versions in needs.items()})
    return PlatformNeeds(symbol_versions=needs, minimum_tag=minimum.name)


def check_platform_tag(wheel: Path, platform_tag: str) -> None:
    """Refuse ``wheel`` under ``platform_tag`` when its ELF files need symbol versions newer than the tag's glibc.

    Raises PlatformTagTooLow naming the wheel, the tag, the lowest tag auditwheel finds for it and
    the offending symbol versions (with the files that need them); WheelPlatformError for a tag that
    is not manylinux or an ELF file that cannot be read. A wheel without ELF files passes.
    """
    glibc, arch = _parse_tag(platform_tag)
    needs = platform_needs(wheel, arch)
    if needs.minimum_tag is None:
        return
    allowed = _allowed_versions(_policies(wheel, arch), glibc)
    offending = {path: bad for path, versions in needs.symbol_versions.items()
                 if (bad := _not_allowed(versions, allowed, glibc))}
    if not offending:
        return
    by_file = "; ".join(f"{path} needs {', '.join(sorted(bad, key=_version_key))}"
                        for path, bad in sorted(offending.items())[:SHOWN_FILES])
    more = f"; and {len(offending) - SHOWN_FILES} more files" if len(offending) > SHOWN_FILES else ""
    minimum = needs.minimum_tag
    if minimum.startswith("linux_"):
        need = f"symbol versions that no manylinux policy of auditwheel {auditwheel_version()} allows"
        fix = "build on an older base image"
    else:
        need = f"{minimum} (auditwheel {auditwheel_version()})"
        fix = f"set the variant's platform_tag to {minimum} (the build image's glibc) or build on an older base"
    raise PlatformTagTooLow(
        f"{wheel.name}: the configured platform tag {platform_tag} is too low: its ELF files need {need}: "
        f"{by_file}{more}; {fix}"
    )


def _parse_tag(platform_tag: str) -> tuple[tuple[int, int], str]:
    """``manylinux_2_35_x86_64`` → ((2, 35), "x86_64"); the legacy names too."""
    if match := MANYLINUX_TAG.match(platform_tag):
        return (int(match["major"]), int(match["minor"])), match["arch"]
    legacy, _, arch = platform_tag.partition("_")
    if legacy in LEGACY_TAGS and arch:
        return LEGACY_TAGS[legacy], arch
    raise WheelPlatformError(
        f"platform tag {platform_tag!r} is not a manylinux tag (manylinux_<glibc major>_<minor>_<arch>): "
        "it says nothing to check a wheel's glibc needs against"
    )


def _policies(wheel: Path, arch: str) -> WheelPolicies:
    try:
        return WheelPolicies(libc=Libc.GLIBC, arch=Architecture(arch))
    except ValueError as exc:
        raise WheelPlatformError(f"{wheel.name}: auditwheel has no manylinux policy for {arch!r} ({exc})") from exc


def _allowed_versions(policies: WheelPolicies, glibc: tuple[int, int]) -> dict[str, frozenset[str]]:
    """Prefix → the versions every policy up to ``glibc`` allows (``GLIBCXX`` → {``3.4``, …, ``3.4.30``}).

    A tag between two of auditwheel's policies (manylinux_2_30) gets the lower one's libstdc++/gcc
    versions, and every GLIBC_x.y up to its own (``_not_allowed``): strict, never more than promised.
    """
    allowed: dict[str, set[str]] = {}
    for policy in policies:
        glibc_of_policy = _policy_glibc(policy.name)
        for prefix, versions in policy.symbol_versions.items():
            known = allowed.setdefault(prefix, set())  # a prefix counts even when all its versions are too new
            if glibc_of_policy is not None and glibc_of_policy <= glibc:
                known |= versions
    return {prefix: frozenset(versions) for prefix, versions in allowed.items()}


def _not_allowed(versions: frozenset[str], allowed: dict[str, frozenset[str]], glibc: tuple[int, int]) -> set[str]:
    """The versions a manylinux system of ``glibc`` may lack. Prefixes no policy knows (``hip_4.2``:
    ROCm's own libraries, external to the wheel) are not a manylinux matter and pass, as in auditwheel."""
    bad = set()
    for version in versions:
        prefix, _, number = version.partition("_")
        if prefix not in allowed:
            continue
        if prefix == "GLIBC" and (numeric := _numbers(number)) is not None and numeric[:2] <= glibc:
            continue
        if number not in allowed[prefix]:
            bad.add(version)
    return bad


def _policy_glibc(name: str) -> tuple[int, int] | None:
    """A policy's glibc (``manylinux_2_28_x86_64`` → (2, 28)); None for ``linux_<arch>``, which has no versions."""
    match = MANYLINUX_TAG.match(name)
    return (int(match["major"]), int(match["minor"])) if match else None


def _numbers(version: str) -> tuple[int, ...] | None:
    parts = version.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else None


def _version_key(version: str) -> tuple[str, tuple[int, ...]]:
    prefix, _, number = version.partition("_")
    return prefix, _numbers(number) or ()


def _elf_needs(wheel: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, arch: str) -> frozenset[str] | None:
    """The symbol versions one entry needs; None when it is not an ELF file of ``arch``'s machine."""
    if info.is_dir() or info.file_size < len(ELF_MAGIC):
        return None
    with archive.open(info) as member:
        head = member.read(len(ELF_MAGIC))
        if head != ELF_MAGIC:
            return None
        # pyelftools seeks back and forth (the section headers are at the end): a seekable copy.
        with tempfile.SpooledTemporaryFile(max_size=IN_MEMORY_BYTES) as copy:
            copy.write(head)
            shutil.copyfileobj(member, copy, 1024 * 1024)
            return _read_elf(wheel, info.filename, copy, arch)


def _read_elf(wheel: Path, name: str, stream: IO[bytes], arch: str) -> frozenset[str] | None:
    try:
        elf = ELFFile(stream)
        machine = MACHINES.get(str(elf["e_machine"]))
        versions = frozenset(v for _library, v in elf_find_versioned_symbols(elf)) if machine == arch else None
    except _ELF_ERRORS as exc:
        raise WheelPlatformError(
            f"{wheel.name}: {name} starts like an ELF file but cannot be read as one ({type(exc).__name__}: {exc}); "
            "its glibc needs cannot be checked"
        ) from exc
    if machine is not None and machine != arch:
        raise WheelPlatformError(f"{wheel.name}: {name} is built for {machine}, the wheel is published for {arch}")
    return versions  # None for a GPU code object or another non-CPU ELF: nothing glibc loads
