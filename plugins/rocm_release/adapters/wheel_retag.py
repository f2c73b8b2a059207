"""Re-tagging binary wheels from ``linux_<arch>`` to the variant's manylinux platform tag.

The build produces wheels tagged ``linux_x86_64`` (not installable from an
index by pip); the variant's config names the manylinux tag its base image
satisfies. The reference pipeline only renamed the file (``${wheel/linux/
manylinux_2_35}``), leaving ``WHEEL``'s ``Tag:`` lines saying ``linux``; here
the wheel's own metadata is rewritten too — the ``Tag:`` lines of ``WHEEL``,
``RECORD`` (the new ``WHEEL``'s hash) and the file name — by ``wheel tags``,
the ``wheel`` package's public command.

The output is deterministic: every zip entry keeps its timestamp and
``RECORD`` gets the newest one of the input (``SOURCE_DATE_EPOCH``), so
re-tagging the same input twice gives the same bytes. Publishing relies on
that to skip files already uploaded with the same sha256.
"""

from __future__ import annotations

import calendar
import email.message
import email.parser
import email.policy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from rocm_release.core.errors import FatalError

LINUX_PLATFORM = re.compile(r"^linux_(?P<arch>[a-z0-9_]+)$")
MANYLINUX_PLATFORM = re.compile(r"^manylinux(?:_\d+_\d+|1|2010|2014)_(?P<arch>[a-z0-9_]+)$")
# wheel's own lower bound for zip timestamps (zip cannot store dates before 1980).
MIN_ZIP_EPOCH = 315532800


class RetagError(ValueError, FatalError):
    """A wheel that cannot be re-tagged for this variant (wrong architecture, not Linux, broken)."""


class WheelMetadataError(ValueError, FatalError):
    """A wheel whose METADATA/WHEEL disagree with its file name, or that cannot be read."""


class WheelMetadata(NamedTuple):
    """What the index needs from a wheel: from METADATA (name, version, Requires-Python) and WHEEL (tags)."""

    name: str
    version: str
    requires_python: str | None
    tags: tuple[str, ...]


def wheel_metadata(path: Path) -> WheelMetadata:
    """Read METADATA and WHEEL (hash-checked against RECORD) and check they agree with the file name.

    Raises WheelMetadataError when the name, version or tag set of the metadata
    differs from the file name's, so a half-renamed wheel is never published.
    """
    from wheel.wheelfile import WheelError, WheelFile

    try:
        name, version, _build, filename_tags = parse_wheel_filename(path.name)
        with WheelFile(path) as archive:
            info = archive.dist_info_path
            metadata = _headers(archive.read(f"{info}/METADATA"))
            wheel = _headers(archive.read(f"{info}/WHEEL"))
    except (InvalidWheelFilename, WheelError, zipfile.BadZipFile, KeyError, OSError) as exc:
        raise WheelMetadataError(f"{path.name}: cannot read the wheel's metadata ({exc})") from exc
    meta_name, meta_version = metadata.get("Name"), metadata.get("Version")
    if meta_name is None or canonicalize_name(meta_name) != name:
        raise WheelMetadataError(f"{path.name}: METADATA names project {meta_name!r}, the file name {name!r}")
    try:
        same_version = meta_version is not None and Version(meta_version) == version
    except InvalidVersion:
        same_version = False
    if not same_version:
        raise WheelMetadataError(f"{path.name}: METADATA has version {meta_version!r}, the file name {version}")
    tags = tuple(sorted(str(t).strip() for t in wheel.get_all("Tag", [])))
    expected = tuple(sorted(str(t) for t in filename_tags))
    if tags != expected:
        raise WheelMetadataError(f"{path.name}: WHEEL has Tag lines {list(tags)}, the file name {list(expected)}")
    requires_python = metadata.get("Requires-Python")
    return WheelMetadata(
        name=str(meta_name),
        version=str(meta_version),
        requires_python=str(requires_python).strip() if requires_python else None,
        tags=tags,
    )


def core_metadata(path: Path) -> bytes:
    """The wheel's ``*.dist-info/METADATA``, byte for byte: what PEP 658 publishes as ``<wheel>.metadata``.

    Read through ``WheelFile``, which checks the entry against its RECORD hash; WheelMetadataError
    when the wheel cannot be read or has no METADATA.
    """
    from wheel.wheelfile import WheelError, WheelFile

    try:
        with WheelFile(path) as archive:
            return bytes(archive.read(f"{archive.dist_info_path}/METADATA"))
    except (WheelError, zipfile.BadZipFile, KeyError, OSError) as exc:
        raise WheelMetadataError(f"{path.name}: cannot read the wheel's METADATA ({exc})") from exc


def retag_platform(wheel_path: Path, platform_tag: str, out_dir: Path) -> Path:
    """Write ``wheel_path`` into ``out_dir`` with ``linux_<arch>`` platform tags replaced by ``platform_tag``.

    Pure-Python (``any``) wheels and wheels that already carry a manylinux tag
    are copied unchanged. Raises RetagError for a platform that is not Linux,
    or whose architecture differs from ``platform_tag``'s (``linux_aarch64`` →
    ``manylinux_2_28_x86_64`` is a wheel built for the wrong machine, not a
    naming problem). Returns the path of the written wheel.
    """
    target = MANYLINUX_PLATFORM.match(platform_tag)
    if not target:
        raise RetagError(
            f"platform tag {platform_tag!r} is not a manylinux tag "
            "(manylinux_<glibc major>_<minor>_<arch>, or manylinux1/2010/2014_<arch>)"
        )
    try:
        _name, _version, _build, tags = parse_wheel_filename(wheel_path.name)
    except InvalidWheelFilename as exc:
        raise RetagError(f"{wheel_path.name}: not a wheel file name ({exc})") from exc
    platforms = {t.platform for t in tags}
    linux: set[str] = set()
    for platform in sorted(platforms - {"any"}):
        match = LINUX_PLATFORM.match(platform) or MANYLINUX_PLATFORM.match(platform)
        if not match:
            raise RetagError(
                f"{wheel_path.name}: platform {platform!r} is not a Linux platform; "
                f"it cannot be published as {platform_tag}"
            )
        if match["arch"] != target["arch"]:
            raise RetagError(
                f"{wheel_path.name}: built for {match['arch']} ({platform}), "
                f"but this variant publishes {target['arch']} ({platform_tag}); refusing to re-tag"
            )
        if LINUX_PLATFORM.match(platform):
            linux.add(platform)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not linux:
        return _copy(wheel_path, out_dir)
    new_platforms = ".".join(sorted((platforms - linux) | {platform_tag}))
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".retag-") as scratch:
        # `wheel tags` writes its output next to its input: give it a link in a scratch folder of
        # out_dir (same filesystem, so the final move is a rename) rather than copying gigabytes.
        staged = Path(scratch) / wheel_path.name
        staged.symlink_to(wheel_path.resolve())
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(_newest_entry_epoch(wheel_path))}
        result = subprocess.run(
            [sys.executable, "-m", "wheel", "tags", "--platform-tag", new_platforms, str(staged)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        produced = result.stdout.strip().splitlines()[-1:] if result.returncode == 0 else []
        if not produced or not (Path(scratch) / produced[0]).is_file():
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise RetagError(
                f"{wheel_path.name}: 'wheel tags --platform-tag {new_platforms}' failed "
                f"(exit {result.returncode}): {' | '.join(tail)}"
            )
        final = out_dir / produced[0]
        os.replace(Path(scratch) / produced[0], final)
    try:
        wheel_metadata(final)  # the re-tagged wheel's WHEEL, RECORD and name must agree
    except WheelMetadataError as exc:
        final.unlink(missing_ok=True)
        raise RetagError(f"{wheel_path.name}: re-tagged wheel is inconsistent: {exc}") from exc
    return final


def _copy(wheel_path: Path, out_dir: Path) -> Path:
    destination = out_dir / wheel_path.name
    if destination.exists() and destination.samefile(wheel_path):
        return destination
    shutil.copyfile(wheel_path, destination)
    return destination


def _newest_entry_epoch(wheel_path: Path) -> int:
    """The newest zip-entry timestamp of a wheel, as a Unix time (wheel reads zip times as UTC)."""
    with zipfile.ZipFile(wheel_path) as archive:
        stamps = [calendar.timegm((*info.date_time, 0, 0, 0)) for info in archive.infolist()]
    return max([MIN_ZIP_EPOCH, *stamps])


def _headers(data: bytes) -> email.message.Message:
    return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(data)
