"""check_platform_tag on real wheels whose libraries the system's gcc compiles here.

Each wheel is made as the build leaves it (``linux_x86_64``), re-tagged by ``retag_platform`` as
publishing does, then checked. The symbols are chosen for the glibc version that introduced them:
``arc4random`` (GLIBC_2.36, this machine's glibc: Debian 12) and ``getrandom`` (GLIBC_2.25).
"""

from __future__ import annotations

import platform
import struct
import sysconfig
import zipfile
from pathlib import Path

import pytest

from rocm_release.adapters.config_file import REPO_ROOT, load_config
from rocm_release.adapters.wheel_platform import (
    PlatformTagTooLow,
    WheelPlatformError,
    check_platform_tag,
    platform_needs,
)
from rocm_release.adapters.wheel_retag import retag_platform
from rocm_release.core.errors import FatalError
from tests.support.wheels import compile_library, fake_elf, make_wheel

ARCH = platform.machine()
OTHER_ARCH = {"x86_64": "aarch64", "aarch64": "x86_64"}[ARCH]
EM_AMDGPU = 224

ARC4RANDOM = """
#include <stdlib.h>
unsigned tinyllm_seed(void) { return arc4random(); }
"""
GETRANDOM = """
#include <sys/random.h>
long tinyllm_seed(void) { char b[8]; return getrandom(b, sizeof b, 0); }
"""
OLD_LIBC = """
#include <string.h>
unsigned long tinyllm_len(const char *s) { return strlen(s); }
"""


def tag(glibc: str) -> str:
    return f"manylinux_{glibc}_{ARCH}"


def binary_wheel(folder: Path, library: Path, *, name: str = "tinyllm", extra: dict[str, bytes] | None = None) -> Path:
    """A ``linux_<arch>`` wheel holding ``library`` as ``<name>/_ops.so`` and a module."""
    modules = {f"{name}/__init__.py": b"VERSION = 1\n", f"{name}/_ops.so": library.read_bytes(), **(extra or {})}
    return make_wheel(folder, name, "0.1.0", tag=f"cp311-cp311-linux_{ARCH}", modules=modules)


def retagged(wheel: Path, platform_tag: str, out: Path) -> Path:
    return retag_platform(wheel, platform_tag, out / platform_tag)


@pytest.fixture(scope="module")
def arc4random_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("arc4random")
    return binary_wheel(folder / "raw", compile_library(folder / "build", "ops.so", ARC4RANDOM))


# -- the tag is checked against the symbol versions ----------------------------------------------------


def test_a_glibc_2_36_symbol_under_manylinux_2_17_fails_naming_the_symbol(arc4random_wheel: Path,
                                                                          tmp_path: Path) -> None:
    wheel = retagged(arc4random_wheel, tag("2_17"), tmp_path)

    with pytest.raises(PlatformTagTooLow) as failure:
        check_platform_tag(wheel, tag("2_17"))

    message = str(failure.value)
    assert isinstance(failure.value, FatalError) and isinstance(failure.value, ValueError)
    assert wheel.name in message
    assert f"configured platform tag {tag('2_17')} is too low" in message
    assert f"need {tag('2_36')}" in message  # what auditwheel detects
    assert "tinyllm/_ops.so needs GLIBC_2.36" in message  # the file and its offending version
    assert "GLIBC_2.2.5" not in message  # versions the tag allows are not named


@pytest.mark.parametrize("glibc, passes", [("2_35", False), ("2_36", True), ("2_39", True)])
def test_the_tag_passes_from_the_glibc_that_has_the_symbol_on(arc4random_wheel: Path, tmp_path: Path,
                                                               glibc: str, passes: bool) -> None:
    wheel = retagged(arc4random_wheel, tag(glibc), tmp_path)
    if passes:
        check_platform_tag(wheel, tag(glibc))
    else:
        with pytest.raises(PlatformTagTooLow, match="GLIBC_2.36"):
            check_platform_tag(wheel, tag(glibc))


def test_a_tag_between_two_auditwheel_policies_is_held_to_its_own_glibc(tmp_path: Path) -> None:
    # auditwheel has policies for 2.24 and 2.26, none for 2.25: getrandom (GLIBC_2.25) is allowed under
    # manylinux_2_25 all the same, and refused under 2_24.
    raw = binary_wheel(tmp_path / "raw", compile_library(tmp_path / "build", "ops.so", GETRANDOM))

    assert platform_needs(raw, ARCH).minimum_tag == tag("2_26")  # auditwheel's lowest policy that has it
    check_platform_tag(retagged(raw, tag("2_25"), tmp_path), tag("2_25"))
    with pytest.raises(PlatformTagTooLow, match=r"tinyllm/_ops\.so needs GLIBC_2\.25"):
        check_platform_tag(retagged(raw, tag("2_24"), tmp_path), tag("2_24"))


def test_an_old_symbol_passes_under_the_oldest_tag(tmp_path: Path) -> None:
    raw = binary_wheel(tmp_path / "raw", compile_library(tmp_path / "build", "ops.so", OLD_LIBC))
    needs = platform_needs(raw, ARCH)
    assert needs.minimum_tag is not None and needs.minimum_tag.startswith("manylinux_2_")
    check_platform_tag(retagged(raw, tag("2_17"), tmp_path), tag("2_17"))


def test_every_elf_file_of_the_wheel_counts_not_only_the_extension(tmp_path: Path) -> None:
    """A bundled library (torch/lib/*.so) is loaded by the same glibc as the extension."""
    old = compile_library(tmp_path / "build", "ops.so", OLD_LIBC)
    bundled = compile_library(tmp_path / "build", "libbundled.so", ARC4RANDOM)
    raw = binary_wheel(tmp_path / "raw", old, extra={"tinyllm/lib/libbundled.so.1": bundled.read_bytes()})

    with pytest.raises(PlatformTagTooLow, match=r"tinyllm/lib/libbundled\.so\.1 needs GLIBC_2\.36"):
        check_platform_tag(retagged(raw, tag("2_28"), tmp_path), tag("2_28"))


def test_legacy_manylinux2014_is_glibc_2_17(arc4random_wheel: Path) -> None:
    with pytest.raises(PlatformTagTooLow, match="GLIBC_2.36"):
        check_platform_tag(arc4random_wheel, f"manylinux2014_{ARCH}")


@pytest.mark.parametrize("source", ["csrc/ops.c", "third_party/tinytorch/csrc/C.c"])
def test_the_demo_s_extensions_pass_the_demo_s_tags(tmp_path: Path, source: str) -> None:
    """The demo's two C extensions, compiled here (Debian 12, like the demo's base image), under each
    variant's tag of include/config/demo.yaml: what `make demo` publishes must pass its own check."""
    demo = REPO_ROOT / "include" / "demo" / "tinyllm"
    library = compile_library(tmp_path / "build", "ext.so", (demo / source).read_text(),
                              args=[f"-I{sysconfig.get_paths()['include']}"])
    raw = binary_wheel(tmp_path / "raw", library)
    tags = [v.platform_tag for v in load_config(REPO_ROOT / "include" / "config" / "demo.yaml").variants]

    assert platform_needs(raw, ARCH).minimum_tag == tag("2_5")  # GLIBC_2.2.5 / 2.4 at most
    for platform_tag in tags:
        check_platform_tag(retagged(raw, platform_tag, tmp_path), platform_tag)


# -- what is not the tag's business ---------------------------------------------------------------------


def test_a_pure_python_wheel_passes(tmp_path: Path) -> None:
    pure = make_wheel(tmp_path, "tinydep", "1.0")
    assert platform_needs(pure, ARCH).minimum_tag is None
    check_platform_tag(pure, tag("2_5"))


def test_external_libraries_do_not_fail_the_check(tmp_path: Path) -> None:
    """libamdhip64 comes with ROCm on the target, not in the wheel: auditwheel would graft it (or call the
    wheel plain ``linux``); only its symbol versions' policy applies here. libz is the system's."""
    build = tmp_path / "build"
    hip = compile_library(build, "libamdhip64.so", "int hipMalloc(void **p, unsigned long n) { return 0; }\n",
                          args=["-Wl,-soname,libamdhip64.so.6", f"-Wl,--version-script={version_script(build)}"])
    ops = compile_library(build, "ops.so", """
#include <string.h>
#include <zlib.h>
int hipMalloc(void **p, unsigned long n);
int tinyllm_alloc(void) { void *p; return hipMalloc(&p, 16); }
const char *tinyllm_zlib(void) { return zlibVersion(); }
unsigned long tinyllm_len(const char *s) { return strlen(s); }
""", args=[f"-L{build}", "-lamdhip64", "-lz"])
    hip.unlink()  # not on this machine either, like ROCm on a CPU worker
    raw = binary_wheel(tmp_path / "raw", ops)

    needs = platform_needs(raw, ARCH)
    assert "hip_4.2" in needs.symbol_versions["tinyllm/_ops.so"]  # seen, and not a manylinux matter
    check_platform_tag(retagged(raw, tag("2_17"), tmp_path), tag("2_17"))
    # The counterpart: auditwheel's whole-wheel verdict, which also judges grafting, refuses manylinux.
    from auditwheel.wheel_abi import analyze_wheel_abi

    verdict = analyze_wheel_abi(None, None, raw, frozenset(), disable_isa_ext_check=True, allow_graft=False)
    assert verdict.overall_policy.name == f"linux_{ARCH}"
    assert verdict.sym_policy.name != f"linux_{ARCH}"


def version_script(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "hip.map"
    script.write_text("hip_4.2 { global: hipMalloc; local: *; };\n")
    return script


def test_a_gpu_code_object_is_not_checked(tmp_path: Path) -> None:
    code_object = bytearray(fake_elf(b"kernels"))
    code_object[18:20] = struct.pack("<H", EM_AMDGPU)
    old = compile_library(tmp_path / "build", "ops.so", OLD_LIBC)
    raw = binary_wheel(tmp_path / "raw", old, extra={"tinyllm/kernels/gfx942.co": bytes(code_object)})

    assert list(platform_needs(raw, ARCH).symbol_versions) == ["tinyllm/_ops.so"]
    check_platform_tag(raw, tag("2_17"))


# -- what cannot be checked fails fatally -------------------------------------------------------------


@pytest.mark.parametrize("content", [b"\x7fELF" + bytes(range(256)) * 8, b"\x7fELF\x02\x01\x01"])
def test_a_corrupt_elf_file_fails_fatally(tmp_path: Path, content: bytes) -> None:
    raw = make_wheel(tmp_path, "tinyllm", "0.1.0", tag=f"cp311-cp311-linux_{ARCH}",
                     modules={"tinyllm/__init__.py": b"", "tinyllm/_ops.so": content})

    with pytest.raises(WheelPlatformError, match=r"tinyllm/_ops\.so starts like an ELF file but cannot be read") as e:
        check_platform_tag(raw, tag("2_35"))
    assert isinstance(e.value, FatalError) and not isinstance(e.value, PlatformTagTooLow)


def test_a_truncated_library_fails_fatally(arc4random_wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(arc4random_wheel) as archive:
        library = archive.read("tinyllm/_ops.so")
    raw = make_wheel(tmp_path, "tinyllm", "0.1.0", tag=f"cp311-cp311-linux_{ARCH}",
                     modules={"tinyllm/_ops.so": library[: len(library) // 2]})

    with pytest.raises(WheelPlatformError, match="cannot be read"):
        check_platform_tag(raw, tag("2_39"))


def test_a_library_built_for_the_other_architecture_fails(tmp_path: Path) -> None:
    raw = make_wheel(tmp_path, "tinyllm", "0.1.0", tag=f"cp311-cp311-linux_{ARCH}",
                     modules={"tinyllm/_ops.so": fake_elf(arch=OTHER_ARCH)})

    with pytest.raises(WheelPlatformError, match=f"built for {OTHER_ARCH}, the wheel is published for {ARCH}"):
        check_platform_tag(raw, tag("2_35"))


def test_a_file_that_is_not_a_wheel_fails_fatally(tmp_path: Path) -> None:
    broken = tmp_path / f"tinyllm-0.1.0-cp311-cp311-{tag('2_35')}.whl"
    broken.write_bytes(b"PK\x03\x04 not really")

    with pytest.raises(WheelPlatformError, match="cannot read the wheel"):
        check_platform_tag(broken, tag("2_35"))


@pytest.mark.parametrize("platform_tag", [f"linux_{ARCH}", "any", "manylinux_x86_64", "manylinux2014"])
def test_a_tag_that_promises_no_glibc_is_refused(arc4random_wheel: Path, platform_tag: str) -> None:
    with pytest.raises(WheelPlatformError, match="not a manylinux tag"):
        check_platform_tag(arc4random_wheel, platform_tag)
