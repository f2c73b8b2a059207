"""retag_platform and wheel_metadata on real wheels made with wheel.wheelfile.WheelFile."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wheel.wheelfile import WheelFile

from rocm_release.adapters.wheel_retag import (
    RetagError,
    WheelMetadataError,
    core_metadata,
    retag_platform,
    wheel_metadata,
)
from tests.support.wheels import FIXED_TIME, make_wheel

MANYLINUX = "manylinux_2_28_x86_64"


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def wheel_tag_lines(path: Path) -> list[str]:
    entries = members(path)
    [wheel] = [n for n in entries if n.endswith(".dist-info/WHEEL")]
    return [line.split(":", 1)[1].strip() for line in entries[wheel].decode().splitlines() if line.startswith("Tag:")]


def assert_record_verifies(path: Path) -> None:
    """Every entry but RECORD is listed in RECORD with its sha256 and size, and nothing else is."""
    entries = members(path)
    [record_name] = [n for n in entries if n.endswith(".dist-info/RECORD")]
    rows = list(csv.reader(io.StringIO(entries[record_name].decode())))
    listed = {row[0]: (row[1], row[2]) for row in rows if row[0] != record_name}
    assert set(listed) == set(entries) - {record_name}
    for name, (hash_field, size) in listed.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(entries[name]).digest()).rstrip(b"=").decode()
        assert hash_field == f"sha256={digest}", name
        assert int(size) == len(entries[name]), name


# -- re-tagging a binary wheel -------------------------------------------------------------------


def test_linux_wheel_gets_the_manylinux_tag_in_name_wheel_and_record(tmp_path: Path) -> None:
    source = make_wheel(tmp_path / "in", "tinyllm", "0.1.0.dev3+rocm710", tag="cp312-cp312-linux_x86_64")

    out = retag_platform(source, MANYLINUX, tmp_path / "out")

    assert out.name == f"tinyllm-0.1.0.dev3+rocm710-cp312-cp312-{MANYLINUX}.whl"
    assert out.parent == tmp_path / "out"
    assert wheel_tag_lines(out) == [f"cp312-cp312-{MANYLINUX}"]
    assert_record_verifies(out)
    meta = wheel_metadata(out)
    assert meta.tags == (f"cp312-cp312-{MANYLINUX}",)
    assert (meta.name, meta.version, meta.requires_python) == ("tinyllm", "0.1.0.dev3+rocm710", ">=3.9")
    # Only WHEEL and RECORD change; the payload (the fake .so) and METADATA are the same bytes.
    before, after = members(source), members(out)
    changed = {n for n in before if before[n] != after.get(n)}
    assert {n.rsplit("/", 1)[1] for n in changed} == {"WHEEL", "RECORD"}
    assert set(before) == set(after)
    assert source.exists()  # the input is left alone


def test_retagged_wheel_reads_back_through_wheel_unpack(tmp_path: Path) -> None:
    """`wheel unpack` checks every entry against RECORD; the unpacked WHEEL agrees with the file name."""
    out = retag_platform(
        make_wheel(tmp_path / "in", "tinyllm", "0.1.0", tag="cp312-cp312-linux_x86_64"), MANYLINUX, tmp_path / "out"
    )
    subprocess.run(
        [sys.executable, "-m", "wheel", "unpack", "--dest", str(tmp_path / "unpacked"), str(out)],
        check=True, capture_output=True,
    )
    wheel = (tmp_path / "unpacked" / "tinyllm-0.1.0" / "tinyllm-0.1.0.dist-info" / "WHEEL").read_text()
    assert f"Tag: cp312-cp312-{MANYLINUX}" in wheel
    assert "linux_x86_64" not in wheel.replace(MANYLINUX, "")


def test_retagging_is_deterministic_whatever_the_clock_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_wheel(tmp_path / "in", "tinyllm", "0.1.0", tag="cp312-cp312-linux_x86_64")

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = retag_platform(source, MANYLINUX, tmp_path / "one")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "2000000000")  # a caller's setting does not leak into the bytes
    second = retag_platform(source, MANYLINUX, tmp_path / "two")

    assert first.name == second.name
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        assert {info.date_time for info in archive.infolist()} == {FIXED_TIME}  # RECORD too, not "now"


def test_retagging_twice_into_the_same_folder_gives_the_same_file(tmp_path: Path) -> None:
    source = make_wheel(tmp_path / "in", "tinyllm", "0.1.0", tag="cp312-cp312-linux_x86_64")
    first = retag_platform(source, MANYLINUX, tmp_path / "out").read_bytes()
    again = retag_platform(source, MANYLINUX, tmp_path / "out")
    assert again.read_bytes() == first
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [again.name]  # no scratch left behind


def test_newest_input_timestamp_stamps_record(tmp_path: Path) -> None:
    built = (2025, 3, 4, 5, 6, 8)
    source = make_wheel(tmp_path / "in", "tinyllm", "0.1.0", tag="cp312-cp312-linux_x86_64", date_time=built)
    out = retag_platform(source, MANYLINUX, tmp_path / "out")
    with zipfile.ZipFile(out) as archive:
        assert {info.date_time for info in archive.infolist()} == {built}


@pytest.mark.parametrize(
    ("tag", "platform_tag"),
    [
        ("cp312-cp312-linux_aarch64", "manylinux_2_28_aarch64"),
        ("cp311-abi3-linux_x86_64", "manylinux_2_35_x86_64"),
        ("py3-none-linux_x86_64", "manylinux2014_x86_64"),
    ],
)
def test_each_architecture_maps_to_its_own_manylinux_tag(tmp_path: Path, tag: str, platform_tag: str) -> None:
    source = make_wheel(tmp_path / "in", "tinyllm", "1.2.3", tag=tag)
    out = retag_platform(source, platform_tag, tmp_path / "out")
    python, abi, _ = tag.split("-")
    assert out.name == f"tinyllm-1.2.3-{python}-{abi}-{platform_tag}.whl"
    assert wheel_tag_lines(out) == [f"{python}-{abi}-{platform_tag}"]
    assert_record_verifies(out)


# -- wheels left as they are -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag", ["py3-none-any", f"cp312-cp312-{MANYLINUX}", "cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64"]
)
def test_pure_python_and_manylinux_wheels_are_copied_unchanged(tmp_path: Path, tag: str) -> None:
    source = make_wheel(tmp_path / "in", "tinydep", "2.0", tag=tag)
    out = retag_platform(source, MANYLINUX, tmp_path / "out")
    assert out == tmp_path / "out" / source.name
    assert out.read_bytes() == source.read_bytes()


def test_a_wheel_already_in_the_output_folder_is_left_in_place(tmp_path: Path) -> None:
    source = make_wheel(tmp_path, "tinydep", "2.0")
    assert retag_platform(source, MANYLINUX, tmp_path) == source


# -- refusals ------------------------------------------------------------------------------------


def test_architecture_mismatch_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    source = make_wheel(tmp_path / "in", "tinyllm", "0.1.0", tag="cp312-cp312-linux_aarch64")
    with pytest.raises(RetagError, match=r"built for aarch64 .* publishes x86_64"):
        retag_platform(source, MANYLINUX, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_manylinux_wheel_of_another_architecture_is_refused(tmp_path: Path) -> None:
    source = make_wheel(tmp_path / "in", "tinyllm", "0.1.0", tag="cp312-cp312-manylinux_2_28_aarch64")
    with pytest.raises(RetagError, match="aarch64"):
        retag_platform(source, MANYLINUX, tmp_path / "out")


@pytest.mark.parametrize("tag", ["cp312-cp312-macosx_14_0_arm64", "cp312-cp312-win_amd64"])
def test_non_linux_wheel_is_refused(tmp_path: Path, tag: str) -> None:
    source = make_wheel(tmp_path / "in", "tinyllm", "0.1.0", tag=tag)
    with pytest.raises(RetagError, match="not a Linux platform"):
        retag_platform(source, MANYLINUX, tmp_path / "out")


@pytest.mark.parametrize("platform_tag", ["linux_x86_64", "manylinux_x86_64", "any", ""])
def test_target_must_be_a_manylinux_tag(tmp_path: Path, platform_tag: str) -> None:
    source = make_wheel(tmp_path / "in", "tinyllm", "0.1.0", tag="cp312-cp312-linux_x86_64")
    with pytest.raises(RetagError, match="is not a manylinux tag"):
        retag_platform(source, platform_tag, tmp_path / "out")


def test_wheel_whose_wheel_file_disagrees_with_its_name_is_refused(tmp_path: Path) -> None:
    source = make_wheel(
        tmp_path / "in", "tinyllm", "0.1.0", tag="cp312-cp312-linux_x86_64", wheel_tags=["cp311-cp311-linux_x86_64"]
    )
    with pytest.raises(RetagError, match="wheel tags"):
        retag_platform(source, MANYLINUX, tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())


def test_wheel_with_tampered_payload_is_refused(tmp_path: Path) -> None:
    """`wheel tags` reads every entry against RECORD: a corrupted wheel is never re-signed."""
    source = make_wheel(tmp_path / "in", "tinyllm", "0.1.0", tag="cp312-cp312-linux_x86_64")
    entries = members(source)
    tampered = tmp_path / "bad" / source.name
    tampered.parent.mkdir()
    with zipfile.ZipFile(tampered, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data + b"#" if name.endswith(".so") else data)
    with pytest.raises(RetagError, match="failed"):
        retag_platform(tampered, MANYLINUX, tmp_path / "out")


# -- wheel_metadata --------------------------------------------------------------------------------


def test_wheel_metadata_reads_metadata_and_wheel(tmp_path: Path) -> None:
    path = make_wheel(tmp_path, "Tiny_Thing", "1.0rc1", tag="py2.py3-none-any", requires_python=">=3.10,<3.14")
    meta = wheel_metadata(path)
    assert meta == ("Tiny_Thing", "1.0rc1", ">=3.10,<3.14", ("py2-none-any", "py3-none-any"))
    name, version, requires_python, tags = meta  # a plain tuple, too
    assert requires_python == ">=3.10,<3.14"


def test_wheel_metadata_without_requires_python(tmp_path: Path) -> None:
    assert wheel_metadata(make_wheel(tmp_path, "tinydep", "1", requires_python=None)).requires_python is None


def test_wheel_metadata_refuses_tags_that_disagree_with_the_name(tmp_path: Path) -> None:
    path = make_wheel(tmp_path, "tinyllm", "0.1.0", tag="cp312-cp312-manylinux_2_28_x86_64",
                      wheel_tags=["cp312-cp312-linux_x86_64"])  # the reference pipeline's rename-only result
    with pytest.raises(WheelMetadataError, match="Tag lines"):
        wheel_metadata(path)


def test_wheel_metadata_refuses_a_name_that_disagrees_with_metadata(tmp_path: Path) -> None:
    path = make_wheel(tmp_path, "tinyllm", "0.1.0")
    renamed = path.rename(tmp_path / "otherthing-0.1.0-py3-none-any.whl")
    with pytest.raises(WheelMetadataError):
        wheel_metadata(renamed)


def test_wheel_metadata_refuses_a_file_that_is_not_a_wheel(tmp_path: Path) -> None:
    bogus = tmp_path / "tinyllm-0.1.0-py3-none-any.whl"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(WheelMetadataError, match="cannot read"):
        wheel_metadata(bogus)


# -- core_metadata (PEP 658) ------------------------------------------------------------------------


def test_core_metadata_is_the_wheels_metadata_file_byte_for_byte(tmp_path: Path) -> None:
    metadata = "Metadata-Version: 2.1\r\nName: tinyllm\r\nVersion: 0.1.0\r\nSummary: caf\u00e9 \u2615\r\n".encode()
    path = make_wheel(tmp_path, "tinyllm", "0.1.0", modules={"tinyllm/__init__.py": b""})
    rewritten = tmp_path / "out" / path.name  # the same wheel with a METADATA no parser would round-trip
    rewritten.parent.mkdir()
    with WheelFile(rewritten, "w") as archive:
        for name, data in members(path).items():
            if not name.endswith("RECORD"):
                archive.writestr(name, metadata if name.endswith("/METADATA") else data)
    assert core_metadata(rewritten) == metadata
    assert members(rewritten)["tinyllm-0.1.0.dist-info/METADATA"] == metadata


def test_core_metadata_refuses_a_metadata_file_that_disagrees_with_record(tmp_path: Path) -> None:
    path = make_wheel(tmp_path / "in", "tinyllm", "0.1.0")
    tampered = tmp_path / path.name
    with zipfile.ZipFile(tampered, "w") as archive:
        for name, data in members(path).items():
            archive.writestr(name, data + b"Requires-Dist: evil\n" if name.endswith("/METADATA") else data)
    with pytest.raises(WheelMetadataError, match="cannot read"):
        core_metadata(tampered)


def test_core_metadata_refuses_a_file_that_is_not_a_wheel(tmp_path: Path) -> None:
    bogus = tmp_path / "tinyllm-0.1.0-py3-none-any.whl"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(WheelMetadataError, match="cannot read"):
        core_metadata(bogus)


# -- any version, any interpreter tag ------------------------------------------------------------

versions = st.builds(
    lambda release, dev, local: ".".join(map(str, release)) + (f".dev{dev}" if dev is not None else "")
    + (f"+{local}" if local else ""),
    st.lists(st.integers(0, 99), min_size=1, max_size=3),
    st.one_of(st.none(), st.integers(0, 999)),
    st.one_of(st.none(), st.sampled_from(["rocm710", "rocm721.g1234abc", "cu128"])),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(version=versions, python=st.sampled_from(["cp311-cp311", "cp312-cp312", "cp313-abi3", "py3-none"]))
def test_retag_keeps_name_version_and_interpreter_tags(tmp_path: Path, version: str, python: str) -> None:
    folder = tmp_path / f"{abs(hash((version, python)))}"
    source = make_wheel(folder / "in", "tinyllm", version, tag=f"{python}-linux_x86_64")
    out = retag_platform(source, MANYLINUX, folder / "out")
    meta = wheel_metadata(out)
    assert out.name == source.name.replace("linux_x86_64", MANYLINUX)
    assert meta.version == version
    assert meta.tags == (f"{python}-{MANYLINUX}",)
