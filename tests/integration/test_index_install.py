"""pip and uv install from the published indexes over HTTP, and resolve from PEP 658 metadata files.

One store (``file://`` under a module tmp folder) is published with ``publish_wheels`` and promoted
with ``promote_index``, as the nightly DAG does, then served by ``tests/support/index_server.py``
(a stdlib HTTP server on 127.0.0.1 that logs every request). Each install runs with only that index:
``--index-url`` pointing at it, no config file (``PIP_CONFIG_FILE=/dev/null``, ``uv --no-config``), no
``PIP_*``/``UV_*`` variables, no cache — offline, nothing from PyPI.

* pip: a fresh venv's own pip (``python -m venv``: ensurepip's pip, 23.2 on Python 3.11), installing
  with ``--target``; and ``pip-dev``: the dev requirements' pip (``>=25.3``) driving that same venv
  (``pip --python``);
* uv: ``/work/main/.venv``'s ``uv`` (or ``uv`` next to this Python), ``uv pip install`` into a
  fresh ``uv venv`` per install.

The PEP 658 case: ``tinypick`` 2.0 requires a distribution no index has, so a resolver must read 2.0's
metadata and back off to 1.0. The access log shows ``GET …/tinypick-2.0-….whl.metadata`` and no request
for the 2.0 wheel itself; the same install from pages without the metadata attributes downloads it
(the check can fail).
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

from rocm_release.adapters.store import observe_published, stat_or_none
from rocm_release.adapters.wheel_retag import retag_platform
from rocm_release.adapters.wheels_publish import promote_index, publish_wheels, read_published
from rocm_release.core.index import parse_project_page, project_page
from tests.support.index_server import IndexServer, serve_folder
from tests.support.stores import VARIANT, Store
from tests.support.wheels import make_wheel

pytestmark = pytest.mark.integration

COMMIT = "3f1c2b9d8e7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e"
NO_METADATA = "0000000000000000000000000000000000000000"  # a copy of COMMIT's folder, pages without PEP 658
ARCH = platform.machine()
THING_VERSION = "0.1.0.dev3+rocm710"
OLD_PICK, NEW_PICK = "tinypick-1.0-py3-none-any.whl", "tinypick-2.0-py3-none-any.whl"
UV = Path("/work/main/.venv/bin/uv")
TOOLS = ["pip", "pip-dev", "uv"]


def uv_binary() -> Path:
    for candidate in (UV, Path(sys.executable).parent / "uv"):
        if candidate.is_file():
            return candidate
    pytest.fail(f"no uv at {UV} nor next to {sys.executable}: install the dev requirements")


def quiet(_: str) -> None:
    pass


# -- the published store and its server ------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    root: Path  # the folder served: <root>/rocm/<commit>/<variant>/…
    store: Store
    wheels: tuple[Path, ...]

    def served_path(self, which: str) -> str:
        """The URL path (``/rocm/<commit>/<variant>/``) of the per-commit, nightly or no-metadata index."""
        url = {"commit": self.store.commit_url(COMMIT), "nightly": self.store.nightly_url(),
               "no-metadata": self.store.commit_url(NO_METADATA)}[which]
        return "/" + Path(urlsplit(url).path).relative_to(self.root).as_posix() + "/"

    def index_url(self, server: IndexServer, which: str) -> str:
        return server.url + self.served_path(which)


def release_wheels(folder: Path) -> list[Path]:
    """The project (binary, re-tagged as publishing does) with its dependency, and two versions of tinypick."""
    raw, out = folder / "raw", folder / "dist"
    dep = make_wheel(raw, "tinydep", "1.0")
    module = {"tinything/__init__.py": f"import tinydep\nVERSION = {THING_VERSION!r}\n".encode(),
              "tinything/_native.so": b"\x7fELF" + bytes(range(256)) * 16}
    thing = make_wheel(raw, "tinything", THING_VERSION, tag=f"py3-none-linux_{ARCH}", requires=["tinydep>=1.0"],
                       modules=module)
    old = make_wheel(raw, "tinypick", "1.0")
    new = make_wheel(raw, "tinypick", "2.0", requires=["tinymissing>=1"])  # no index has tinymissing
    return [retag_platform(w, f"manylinux_2_28_{ARCH}", out) for w in (dep, thing, old, new)]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    root = tmp_path_factory.mktemp("served")
    store = Store("file", f"file://{root}/rocm", None)
    wheels = release_wheels(tmp_path_factory.mktemp("wheels"))
    publish_wheels(wheels, store.commit_folder(COMMIT), store.commit_url(COMMIT), quiet)
    promote_index(store.commit_folder(COMMIT), store.commit_url(COMMIT), store.nightly_folder(), store.nightly_url(),
                  commit=COMMIT, variant=VARIANT, log=quiet)
    # The control: the same files, pages as an index without PEP 658 writes them.
    source, copy = Path(urlsplit(store.commit_url(COMMIT)).path), Path(urlsplit(store.commit_url(NO_METADATA)).path)
    shutil.copytree(source, copy)
    for page in copy.glob("*/index.html"):
        links = [replace(link, metadata_sha256=None) for link in parse_project_page(page.read_text())]
        page.write_text(project_page(page.parent.name, links))
    return Published(root=root, store=store, wheels=tuple(wheels))


@pytest.fixture(scope="module")
def module_server(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexServer]:
    log_file = tmp_path_factory.mktemp("log") / "access.log"
    with serve_folder(published.root, log_file) as server:
        yield server


@pytest.fixture
def server(module_server: IndexServer) -> IndexServer:
    """The module's server, its access log emptied for this test."""
    module_server.log.clear()
    return module_server


# -- the installers ------------------------------------------------------------------------------


def offline_env() -> dict[str, str]:
    """This process's environment without any pip/uv setting (no other index, no find-links, no proxy)."""
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(("PIP_", "UV_", "PYTHON", "VIRTUAL_ENV")) and "PROXY" not in k.upper()}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "NO_PROXY": "*"}


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with its own pip (ensurepip: offline)."""
    venv = tmp_path_factory.mktemp("pip-venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, env=offline_env())
    return venv / "bin" / "python"


@dataclass(frozen=True)
class Installed:
    python: Path  # runs with what was installed importable
    pythonpath: str | None  # pip installs with --target
    output: str


def run(command: list[str], what: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env=offline_env(), check=False, timeout=180)
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def install(tool: str, index_url: str, project: str, where: Path, venv_python: Path) -> Installed:
    """``pip install`` or ``uv pip install`` ``project`` from ``index_url`` only; asserts it succeeded."""
    if tool in ("pip", "pip-dev"):
        pip = [str(venv_python), "-m", "pip"] if tool == "pip" else [sys.executable, "-m", "pip", "--python",
                                                                    str(venv_python)]
        output = run([*pip, "install", "--no-cache-dir", "--index-url", index_url, "--target", str(where), project],
                     f"{tool} install {project} from {index_url}")
        return Installed(venv_python, str(where), output)
    uv = str(uv_binary())
    run([uv, "venv", "--no-config", "--no-python-downloads", "--python", sys.executable, str(where)], "uv venv")
    python = where / "bin" / "python"
    output = run([uv, "pip", "install", "--no-config", "--no-cache", "--python", str(python), "--index-url",
                  index_url, project], f"uv pip install {project} from {index_url}")
    return Installed(python, None, output)


def imported(installed: Installed, code: str) -> str:
    env = {"PATH": os.environ.get("PATH", "")}
    if installed.pythonpath:
        env["PYTHONPATH"] = installed.pythonpath
    result = subprocess.run([str(installed.python), "-c", code],
                            capture_output=True, text=True, env=env, check=True)
    return result.stdout.strip()


@pytest.fixture(scope="module")
def versions(venv_python: Path) -> dict[str, str]:
    """The pip (the venv's own) and uv versions that ran, for the test output."""
    pip = run([str(venv_python), "-m", "pip", "--version"], "pip --version").split()[1]
    pip_dev = run([sys.executable, "-m", "pip", "--version"], "pip --version").split()[1]
    uv = run([str(uv_binary()), "--version"], "uv --version").split()[1]
    return {"pip": pip, "pip-dev": pip_dev, "uv": uv}


# -- installs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["commit", "nightly"])
@pytest.mark.parametrize("tool", TOOLS)
def test_pip_and_uv_install_the_project_from_the_commit_and_the_nightly_index(
    tool: str, which: str, published: Published, server: IndexServer, venv_python: Path, tmp_path: Path
) -> None:
    index_url = published.index_url(server, which)

    installed = install(tool, index_url, "tinything", tmp_path / "installed", venv_python)

    code = "import tinything, tinydep, importlib.metadata as m; print(tinything.VERSION, m.version('tinydep'))"
    assert imported(installed, code) == f"{THING_VERSION} 1.0"
    fetched = server.log.paths("GET")
    assert {p.rsplit("/", 1)[-1] for p in fetched if p.endswith(".whl")} == {
        w.name for w in published.wheels if w.name.startswith(("tinydep", "tinything"))
    }
    assert all(line.endswith(" 200") for line in server.log.lines()), server.log.lines()


@pytest.mark.parametrize("which", ["commit", "nightly"])
@pytest.mark.parametrize("tool", TOOLS)
def test_the_resolver_reads_the_metadata_file_of_a_version_it_does_not_choose_not_its_wheel(
    tool: str, which: str, published: Published, server: IndexServer, venv_python: Path, tmp_path: Path,
    versions: dict[str, str],
) -> None:
    prefix = published.served_path("commit")  # nightly links resolve to the commit's files

    installed = install(tool, published.index_url(server, which), "tinypick", tmp_path / "installed", venv_python)

    assert imported(installed, "import importlib.metadata as m; print(m.version('tinypick'))") == "1.0"
    log = server.log.lines()
    assert f"GET {prefix}{NEW_PICK}.metadata 200" in log, log
    assert not any(r.path == prefix + NEW_PICK for r in server.log.requests), log  # neither GET nor HEAD
    assert f"GET {prefix}{OLD_PICK} 200" in log, log  # the chosen one is downloaded
    print(f"{tool} {versions[tool]} from the {which} index:", *log, sep="\n  ")


@pytest.mark.parametrize("tool", TOOLS)
def test_without_the_metadata_attributes_the_resolver_fetches_the_unchosen_wheel(
    tool: str, published: Published, server: IndexServer, venv_python: Path, tmp_path: Path,
    versions: dict[str, str],
) -> None:
    """The control of the test above: the same files, pages without PEP 658 attributes."""
    prefix = published.served_path("no-metadata")

    install(tool, published.index_url(server, "no-metadata"), "tinypick", tmp_path / "installed", venv_python)

    assert any(r.path == prefix + NEW_PICK for r in server.log.requests), server.log.lines()
    assert not any(r.path.endswith(".metadata") for r in server.log.requests), server.log.lines()
    print(f"{tool} {versions[tool]} from pages without PEP 658:", *server.log.lines(), sep="\n  ")


# -- what the pages carry ------------------------------------------------------------------------


class _Anchors(HTMLParser):
    """Every <a>'s attributes, read independently of core.index's parser."""

    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.anchors.append(dict(attrs))


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (a 127.0.0.1 URL of this test)
        return bytes(response.read())


def anchors(url: str) -> list[dict[str, str | None]]:
    parser = _Anchors()
    parser.feed(fetch(url).decode("utf-8"))
    return parser.anchors


@pytest.mark.parametrize("which", ["commit", "nightly"])
def test_every_link_carries_sha256_and_both_metadata_attributes_that_match_the_served_files(
    which: str, published: Published, server: IndexServer
) -> None:
    index_url = published.index_url(server, which)
    seen = []
    for project in anchors(index_url):
        page_url = urljoin(index_url, project["href"] or "")
        for link in anchors(page_url):
            url = urljoin(page_url, link["href"] or "")
            file_url, _, fragment = url.partition("#")
            wheel = fetch(file_url)
            assert fragment == f"sha256={hashlib.sha256(wheel).hexdigest()}", url
            core, dist_info = link.get("data-core-metadata"), link.get("data-dist-info-metadata")
            assert core is not None and core == dist_info, link
            metadata = fetch(file_url + ".metadata")
            assert core == f"sha256={hashlib.sha256(metadata).hexdigest()}", url
            with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
                (entry,) = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
                assert archive.read(entry) == metadata  # PEP 658: the wheel's own METADATA, byte for byte
            assert link.get("data-requires-python") == ">=3.9"
            seen.append(file_url.rsplit("/", 1)[-1])
    assert sorted(seen) == sorted(w.name.replace("+", "%2B") for w in published.wheels)


def test_read_published_and_promotion_keep_the_metadata_sha256_and_the_upload_time(tmp_path: Path) -> None:
    store = Store("file", f"file://{tmp_path}/rocm", None)
    wheels = release_wheels(tmp_path / "wheels")[:2]
    publish_wheels(wheels, store.commit_folder(COMMIT), store.commit_url(COMMIT), quiet)

    alias = promote_index(store.commit_folder(COMMIT), store.commit_url(COMMIT), store.nightly_folder(),
                          store.nightly_url(), commit=COMMIT, variant=VARIANT, log=quiet)

    source = read_published(store.commit_folder(COMMIT), store.commit_url(COMMIT))
    assert source is not None
    expected = {w.name: hashlib.sha256(metadata_of(w)).hexdigest() for w in wheels}
    # The upload time on the pages is the one the store recorded when the wheel was uploaded.
    recorded = {w.name: stat_or_none(store.commit_folder(COMMIT), w.name, w.name) for w in wheels}
    times = {name: stored.uploaded if stored else None for name, stored in recorded.items()}
    assert all(times.values())
    for published in (source, alias):
        assert {x.filename: x.metadata_sha256 for x in published.links} == expected
        assert {x.filename: x.upload_time for x in published.links} == times


def test_a_publication_without_metadata_files_gets_them_on_the_next_run(tmp_path: Path) -> None:
    """A folder published before PEP 658 files existed: the rerun adds them, then the attributes, no wheel."""
    store = Store("file", f"file://{tmp_path}/rocm", None)
    wheels = release_wheels(tmp_path / "wheels")
    where = store.commit_url(COMMIT)
    publish_wheels(wheels, store.commit_folder(COMMIT), where, quiet)
    folder = Path(urlsplit(where).path)
    for page in folder.glob("*/index.html"):
        links = [replace(x, metadata_sha256=None) for x in parse_project_page(page.read_text())]
        page.write_text(project_page(page.parent.name, links))
    for metadata in folder.glob("*.metadata"):
        metadata.unlink()
    messages: list[str] = []

    files = publish_wheels(wheels, store.commit_folder(COMMIT), where, messages.append)

    assert not any(f.uploaded for f in files)
    assert sorted(p.name for p in folder.glob("*.metadata")) == sorted(f"{w.name}.metadata" for w in wheels)
    assert sum(".metadata: uploaded" in m for m in messages) == 4
    published = read_published(store.commit_folder(COMMIT), where)
    assert published is not None and all(x.metadata_sha256 for x in published.links)
    assert observe_published(store.commit_folder(COMMIT), where).present


def metadata_of(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        (entry,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return archive.read(entry)
