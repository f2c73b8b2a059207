"""The scale benchmark's own parts: its fabricated wheels are valid wheels, its proxy counts what passes.

The benchmark's figures are only worth something if its wheels are what the publishing code accepts
(metadata agreeing with the name, RECORD hashes that ``wheel tags`` verifies) and if the counting proxy
counts body bytes exactly, in both directions, for fixed-length and chunked bodies.
"""

from __future__ import annotations

import hashlib
import http.client
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rocm_release.adapters.wheel_retag import retag_platform, wheel_metadata
from rocm_release.adapters.wheels_image import parse_sums
from tests.support.net import HttpServer, QuietHandler
from tests.support.services import REPO

sys.path.insert(0, str(REPO / "bench"))

from counting_proxy import CountingProxy  # noqa: E402 - bench/ is not a package
from scale_wheels import MIB, WheelSpec, base_specs, make_dist_layer, make_wheel, project_spec  # noqa: E402


def test_a_fabricated_binary_wheel_is_valid_and_retags(tmp_path: Path) -> None:
    spec = WheelSpec("torch", "2.9.0+rocm7.1.0", "cp311-cp311-linux_x86_64", 3 * MIB // 2)
    wheel = make_wheel(tmp_path, spec, "seed")
    assert wheel.name == "torch-2.9.0+rocm7.1.0-cp311-cp311-linux_x86_64.whl"
    assert wheel_metadata(wheel).tags == ("cp311-cp311-linux_x86_64",)
    assert wheel.stat().st_size > spec.payload
    # `wheel tags` reads every entry against RECORD: a wrong hash would fail here.
    tagged = retag_platform(wheel, "manylinux_2_35_x86_64", tmp_path / "out")
    assert wheel_metadata(tagged).tags == ("cp311-cp311-manylinux_2_35_x86_64",)
    (tmp_path / "again").mkdir()
    assert make_wheel(tmp_path / "again", spec, "seed").read_bytes() == wheel.read_bytes()  # same seed, same bytes


def test_the_sets_have_the_asked_sizes_and_pure_wheels_stay_pure(tmp_path: Path) -> None:
    specs = base_specs("rocm710", "7.1.0", "3.11", 48 * MIB)
    assert len(specs) == 8 and sum(s.payload for s in specs) >= 48 * MIB
    assert {s.tag for s in specs} == {"py3-none-any", "cp311-cp311-linux_x86_64"}
    project = project_spec("a" * 40, "rocm710", "3.11", 16 * MIB)
    assert project.payload == 16 * MIB and project.filename.startswith("vllm-0.11.1.dev0+gaaaaaaa.rocm710-")
    pure = next(s for s in specs if s.tag == "py3-none-any")
    wheel = make_wheel(tmp_path, WheelSpec(pure.name, pure.version, pure.tag, MIB), "seed")
    assert retag_platform(wheel, "manylinux_2_35_x86_64", tmp_path / "out").name == wheel.name


def test_a_dist_layer_holds_the_wheels_and_their_sums(tmp_path: Path) -> None:
    specs = [WheelSpec("triton", "3.5.0", "cp311-cp311-linux_x86_64", MIB),
             WheelSpec("vllm", "0.1", "py3-none-any", MIB)]
    (tmp_path / "scratch").mkdir()
    layer = make_dist_layer(tmp_path / "scratch", tmp_path / "layer.tar", specs, "seed")
    assert layer.digest == "sha256:" + hashlib.sha256(layer.path.read_bytes()).hexdigest()
    assert layer.size == layer.path.stat().st_size and not list((tmp_path / "scratch").iterdir())
    with tarfile.open(layer.path) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    sums = parse_sums(files.pop("dist/SHA256SUMS").decode())
    assert sums == {name.removeprefix("dist/"): hashlib.sha256(data).hexdigest() for name, data in files.items()}
    assert layer.wheels == {name.removeprefix("dist/"): len(data) for name, data in files.items()}


class _Echo(QuietHandler):
    protocol_version = "HTTP/1.1"

    def do_PUT(self) -> None:  # noqa: N802 - http.server's name
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            body = b""
            while size := int(self.rfile.readline().strip(), 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = hashlib.sha256(body).hexdigest().encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self) -> None:  # noqa: N802
        body = b"x" * 3_000_000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "3000000")
        self.end_headers()


@pytest.fixture
def proxy() -> Iterator[CountingProxy]:
    with HttpServer(_Echo) as upstream:
        counting = CountingProxy("echo", f"127.0.0.1:{upstream.port}")
        try:
            yield counting
        finally:
            counting.close()


def test_the_proxy_counts_body_bytes_both_ways_per_phase(proxy: CountingProxy) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    proxy.phase = "one"
    data = bytes(range(256)) * 10_000
    conn.request("PUT", "/a", body=data)
    assert conn.getresponse().read() == hashlib.sha256(data).hexdigest().encode()
    conn.request("PUT", "/b", body=iter([data[:1000], data[1000:]]), encode_chunked=True)
    assert conn.getresponse().read() == hashlib.sha256(data).hexdigest().encode()
    proxy.phase = "two"
    conn.request("GET", "/c")
    assert len(conn.getresponse().read()) == 3_000_000
    conn.request("HEAD", "/c")
    assert conn.getresponse().read() == b""
    conn.close()
    one, two = proxy.tally("one"), proxy.tally("two")
    assert dict(one.requests) == {"PUT": 2} and one.bytes_written == 2 * len(data) and one.bytes_read == 128
    assert dict(two.requests) == {"GET": 1, "HEAD": 1} and two.bytes_read == 3_000_000 and two.bytes_written == 0
