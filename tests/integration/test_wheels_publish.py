"""publish_wheels, promote_index and read_published against both stores: ``file://`` and ``s3://``.

Every store test runs twice: on a ``file://`` folder (tmp_path) and on a real moto S3 server of
this module's own (``python -m moto.server`` on 127.0.0.1), reached the production way, through
``store_root`` and an Airflow connection (``AIRFLOW_CONN_WHEELS_MOTO``) whose ``endpoint_url`` is
the moto server. Each test gets its own bucket.

Interruptions are made by ``FaultInjectingStore``, a fault injector *around* the real store path:
it lets N writes through and fails the next one (when it opens, or after its first chunk), logs
every change, and after each change checks what a reader would see: the root index either does
not exist or is complete and verified, and no project page links a missing or different file.

pip is checked on ``file://`` only (pip cannot read ``s3://``): a fresh ``python -m venv`` (its
own pip, from ensurepip, offline) installs a package and its dependency from the index that
``publish_wheels`` wrote, and from the nightly alias that ``promote_index`` wrote.
"""

from __future__ import annotations

import hashlib
import os
import platform
import posixpath
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from rocm_release.adapters.store import StorePath, TransientStoreError, observe_published, store_root
from rocm_release.adapters.wheel_retag import WheelMetadataError, retag_platform
from rocm_release.adapters.wheels_publish import (
    NotPublished,
    PublishedFile,
    UploadMismatch,
    promote_index,
    publish_wheels,
    read_published,
)
from rocm_release.core.index import parse_project_page
from rocm_release.core.plan import wheels_prefix
from tests.support.moto import admin_client
from tests.support.stores import VARIANT, Store
from tests.support.wheels import fake_elf, make_wheel

pytestmark = pytest.mark.integration

COMMIT_A = "3f1c2b9d8e7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e"
COMMIT_B = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b"
ARCH = platform.machine()  # the pip check installs the binary wheel on this machine
PLATFORM_TAG = f"manylinux_2_28_{ARCH}"


# -- wheels ---------------------------------------------------------------------------------------


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
    return Wheels(dep=retag_platform(dep, PLATFORM_TAG, out), thing=retag_platform(thing, PLATFORM_TAG, out))


@pytest.fixture
def wheels(tmp_path: Path) -> Wheels:
    return build_wheels(tmp_path / "wheels")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- what a reader sees ---------------------------------------------------------------------------


def assert_reader_never_misled(folder: StorePath, where: str, projects: tuple[str, ...]) -> None:
    """The root index is absent or complete and verified; every project page that exists links only
    files that are there with the linked sha256 (pip reads project pages without the root)."""
    observed = observe_published(folder, where)
    assert observed.present or observed.reason == f"{where}index.html does not exist", observed.reason
    for project in projects:
        page = folder / project / "index.html"
        if not page.exists():
            continue
        for link in parse_project_page(page.read_text()):
            target = folder / link.filename
            assert target.exists(), f"{where}{project}/index.html links missing {link.filename}"
            with target.open("rb") as stream:
                assert hashlib.sha256(stream.read()).hexdigest() == link.sha256, f"{link.filename} changed bytes"


class InjectedFault(RuntimeError):
    """The fault FaultInjectingStore raises (stands for a dropped connection or a killed task)."""


@dataclass
class StoreOps:
    """Shared state of one wrapped store: the change log, the write budget and the reader check."""

    real_root: StorePath
    where: str
    projects: tuple[str, ...] = ("tinydep", "tinything")
    fail_at_write: int | None = None
    fail_mid_stream: bool = False
    cut_after_bytes: int | None = None  # mid-stream: bytes let through; default half the first chunk
    check: Callable[[], None] | None = None  # what a reader must see after each change; default below
    meddle_with_uploads: bool = False  # another writer replaces each wheel right after it lands
    writes: int = 0
    log: list[tuple[str, str]] = field(default_factory=list)

    def changed(self, action: str, name: str) -> None:
        self.log.append((action, name))
        if self.meddle_with_uploads and action == "commit" and name.endswith(".whl"):
            with (self.real_root / name).open("wb") as out:
                out.write(b"someone else's bytes")
        if self.check:
            self.check()
        else:
            assert_reader_never_misled(self.real_root, self.where, self.projects)

    @property
    def uploads(self) -> list[str]:
        return [name for action, name in self.log if action == "commit" and name.endswith(".whl")]


class FaultInjectingStore:
    """A fault injector around a real store path: write number ``fail_at_write`` fails, at open or part-way
    through its bytes; every change (commit, delete) is logged and followed by the reader check."""

    def __init__(self, real: Any, ops: StoreOps, parts: tuple[str, ...] = ()) -> None:
        self._real = real
        self._ops = ops
        self._parts = parts

    @property
    def protocol(self) -> str:
        return str(self._real.protocol)

    @property
    def name(self) -> str:
        return "/".join(self._parts)

    def __truediv__(self, other: str) -> FaultInjectingStore:
        return FaultInjectingStore(self._real / other, self._ops, (*self._parts, other))

    def exists(self) -> bool:
        return bool(self._real.exists())

    def read_text(self) -> str:
        return str(self._real.read_text())

    def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        self._real.mkdir(parents=parents, exist_ok=exist_ok)

    def unlink(self, missing_ok: bool = False) -> None:
        self._real.unlink(missing_ok=missing_ok)
        self._ops.changed("delete", self.name)

    def rename(self, target: FaultInjectingStore) -> Any:
        result = self._real.rename(target._real)
        self._ops.changed("commit", target.name)
        return result

    def open(self, mode: str = "r") -> Any:
        if "w" not in mode:
            return self._real.open(mode)
        ops = self._ops
        ops.writes += 1
        failing = ops.fail_at_write == ops.writes
        if failing and not ops.fail_mid_stream:
            # No path in the message: store.classify reads "403" anywhere in it as "access denied".
            raise InjectedFault(f"write #{ops.writes} refused at open")
        stream = self._real.open(mode)
        ops.log.append(("open", self.name))
        if failing:
            real_write, sent = stream.write, [0]

            def write_then_cut(data: bytes) -> int:
                allowed = (len(data) // 2 if ops.cut_after_bytes is None else ops.cut_after_bytes) - sent[0]
                if len(data) <= allowed:
                    sent[0] += len(data)
                    return int(real_write(data))
                real_write(data[: max(allowed, 0)])  # part of the bytes are on their way
                raise InjectedFault(f"write #{ops.writes} cut after {sent[0] + max(allowed, 0)} bytes")

            stream.write = write_then_cut
        if self.protocol != "file":  # an object store commits on close; file:// on rename
            real_close, name = stream.close, self.name

            def close_and_check() -> None:
                was_closed = stream.closed
                real_close()
                if not was_closed:
                    ops.changed("commit", name)

            stream.close = close_and_check
        return stream


def wrap(folder: StorePath, where: str, **kwargs: Any) -> tuple[FaultInjectingStore, StoreOps]:
    ops = StoreOps(real_root=folder, where=where, **kwargs)
    return FaultInjectingStore(folder, ops), ops


def quiet(_: str) -> None:
    """A log that drops messages (tests that read the messages use a list)."""


# -- publishing -----------------------------------------------------------------------------------


def test_published_folder_is_observed_as_published(store: Store, wheels: Wheels) -> None:
    folder, where = store.commit_folder(COMMIT_A), store.commit_url(COMMIT_A)
    messages: list[str] = []

    files = publish_wheels(wheels.both, folder, where, messages.append)

    assert [f.filename for f in files] == [wheels.dep.name, wheels.thing.name]
    assert all(f.uploaded for f in files)
    assert files[1] == PublishedFile(
        filename=wheels.thing.name,
        sha256=sha256(wheels.thing),
        size=wheels.thing.stat().st_size,
        project="tinything",
        version="0.1.0.dev3+rocm710",
        requires_python=">=3.9",
        uploaded=True,
    )
    observed = observe_published(store.commit_folder(COMMIT_A), where)
    assert observed.present, observed.reason
    # The pages: the root lists both projects; links are relative, %2B-quoted, with sha256 and
    # data-requires-python (HTML-escaped).
    page = (folder / "tinything" / "index.html").read_text()
    quoted = wheels.thing.name.replace("+", "%2B")
    assert f'href="../{quoted}#sha256={sha256(wheels.thing)}"' in page
    assert 'data-requires-python="&gt;=3.9"' in page
    published = read_published(folder, where)
    assert published is not None
    assert published.projects == ("tinydep", "tinything")
    assert {(link.project, link.filename, link.sha256) for link in published.links} == {
        ("tinydep", wheels.dep.name, sha256(wheels.dep)),
        ("tinything", wheels.thing.name, sha256(wheels.thing)),
    }
    assert published.commit is None
    assert any(m.endswith("index.html: written") for m in messages)


def test_pages_are_written_after_the_wheels_and_the_root_last(store: Store, wheels: Wheels) -> None:
    where = store.commit_url(COMMIT_A)
    wrapped, ops = wrap(store.commit_folder(COMMIT_A), where)

    publish_wheels(wheels.both, wrapped, where, quiet)

    commits = [name for action, name in ops.log if action == "commit"]
    assert commits == [wheels.dep.name, wheels.thing.name, "tinydep/index.html", "tinything/index.html", "index.html"]


def test_rerun_uploads_nothing_and_writes_nothing(store: Store, wheels: Wheels) -> None:
    where = store.commit_url(COMMIT_A)
    publish_wheels(wheels.both, store.commit_folder(COMMIT_A), where, quiet)
    wrapped, ops = wrap(store.commit_folder(COMMIT_A), where)
    messages: list[str] = []

    files = publish_wheels(wheels.both, wrapped, where, messages.append)

    assert [f.uploaded for f in files] == [False, False]
    assert ops.log == []  # no wheel uploaded, no page rewritten
    assert sum("already there" in m for m in messages) == 2


def test_rerun_with_freshly_retagged_wheels_uploads_nothing(store: Store, tmp_path: Path) -> None:
    """Re-tagging is deterministic: wheels retagged again by a later run are the same bytes."""
    where = store.commit_url(COMMIT_A)
    publish_wheels(build_wheels(tmp_path / "first").both, store.commit_folder(COMMIT_A), where, quiet)
    again = build_wheels(tmp_path / "second")

    files = publish_wheels(again.both, store.commit_folder(COMMIT_A), where, quiet)

    assert not any(f.uploaded for f in files)


@pytest.mark.parametrize("fail_at_write", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("mid_stream", [False, True], ids=["at-open", "mid-stream"])
def test_interrupted_publish_is_never_inconsistent_and_a_rerun_completes_it(
    store: Store, wheels: Wheels, fail_at_write: int, mid_stream: bool
) -> None:
    """Writes are: the two wheels, the two project pages, the root. Fail each in turn."""
    where = store.commit_url(COMMIT_A)
    wrapped, ops = wrap(store.commit_folder(COMMIT_A), where, fail_at_write=fail_at_write, fail_mid_stream=mid_stream)

    with pytest.raises(TransientStoreError, match="InjectedFault"):
        publish_wheels(wheels.both, wrapped, where, quiet)

    folder = store.commit_folder(COMMIT_A)
    observed = observe_published(folder, where)
    assert not observed.present and observed.reason == f"{where}index.html does not exist"
    assert_reader_never_misled(folder, where, ops.projects)
    assert ops.uploads == [wheels.dep.name, wheels.thing.name][: min(fail_at_write - 1, 2)]
    # The half-written file never appears under its name, nor as a leftover temporary file.
    failed_name = [wheels.dep.name, wheels.thing.name, "tinydep/index.html", "tinything/index.html", "index.html"][
        fail_at_write - 1
    ]
    assert not (folder / failed_name).exists()
    if store.kind == "file":
        leftovers = [p.name for p in Path(urlsplit(where).path).rglob(".*.part")]
        assert leftovers == []

    rerun, rerun_ops = wrap(store.commit_folder(COMMIT_A), where)
    files = publish_wheels(wheels.both, rerun, where, quiet)

    assert observe_published(store.commit_folder(COMMIT_A), where).present
    assert [f.uploaded for f in files] == [i >= fail_at_write - 1 for i in range(2)]
    assert rerun_ops.uploads == [f.filename for f in files if f.uploaded]


def test_interrupted_update_of_a_published_folder_keeps_it_published(store: Store, tmp_path: Path) -> None:
    """Adding a wheel to a published folder: until the new index is complete, the old one stays."""
    where = store.commit_url(COMMIT_A)
    first = build_wheels(tmp_path / "first")
    publish_wheels(first.both, store.commit_folder(COMMIT_A), where, quiet)
    extra = make_wheel(tmp_path / "extra", "tinyextra", "3.0")
    wrapped, ops = wrap(
        store.commit_folder(COMMIT_A), where, fail_at_write=3, projects=("tinydep", "tinything", "tinyextra")
    )

    with pytest.raises(TransientStoreError):
        publish_wheels([*first.both, extra], wrapped, where, quiet)

    assert ops.uploads == [extra.name]
    observed = observe_published(store.commit_folder(COMMIT_A), where)
    assert observed.present, observed.reason
    published = read_published(store.commit_folder(COMMIT_A), where)
    assert published is not None and published.projects == ("tinydep", "tinything")

    publish_wheels([*first.both, extra], store.commit_folder(COMMIT_A), where, quiet)
    published = read_published(store.commit_folder(COMMIT_A), where)
    assert published is not None and published.projects == ("tinydep", "tinyextra", "tinything")


def test_changed_wheel_withdraws_the_pages_before_its_bytes_change(store: Store, tmp_path: Path) -> None:
    where = store.commit_url(COMMIT_A)
    old = build_wheels(tmp_path / "old")
    publish_wheels(old.both, store.commit_folder(COMMIT_A), where, quiet)
    new = build_wheels(tmp_path / "new", marker="rebuilt")
    assert new.thing.name == old.thing.name and sha256(new.thing) != sha256(old.thing)
    wrapped, ops = wrap(store.commit_folder(COMMIT_A), where)
    messages: list[str] = []

    files = publish_wheels(new.both, wrapped, where, messages.append)

    changes = [(a, n) for a, n in ops.log if a != "open"]
    assert changes == [
        ("delete", "index.html"),
        ("delete", "tinything/index.html"),
        ("commit", new.thing.name),
        ("commit", "tinything/index.html"),
        ("commit", "index.html"),
    ]
    assert [f.uploaded for f in files] == [False, True]
    assert any("replacing it" in m for m in messages)
    observed = observe_published(store.commit_folder(COMMIT_A), where)
    assert observed.present, observed.reason
    published = read_published(store.commit_folder(COMMIT_A), where)
    assert published is not None
    assert {link.sha256 for link in published.links} == {sha256(new.dep), sha256(new.thing)}


def test_changed_wheel_interrupted_after_its_upload_reads_as_absent_then_completes(
    store: Store, tmp_path: Path
) -> None:
    where = store.commit_url(COMMIT_A)
    publish_wheels(build_wheels(tmp_path / "old").both, store.commit_folder(COMMIT_A), where, quiet)
    new = build_wheels(tmp_path / "new", marker="rebuilt")
    wrapped, _ = wrap(store.commit_folder(COMMIT_A), where, fail_at_write=2)  # the new bytes are in, pages not

    with pytest.raises(TransientStoreError):
        publish_wheels(new.both, wrapped, where, quiet)

    observed = observe_published(store.commit_folder(COMMIT_A), where)
    assert not observed.present and observed.reason.endswith("index.html does not exist")
    files = publish_wheels(new.both, store.commit_folder(COMMIT_A), where, quiet)
    assert [f.uploaded for f in files] == [False, False]  # the new bytes were already in place
    assert observe_published(store.commit_folder(COMMIT_A), where).present


def test_file_that_reads_back_different_is_never_linked(store: Store, wheels: Wheels) -> None:
    """Another writer replaces our upload before verification: no page is written, the error is fatal."""
    where = store.commit_url(COMMIT_A)
    folder = store.commit_folder(COMMIT_A)

    wrapped, _ = wrap(folder, where, meddle_with_uploads=True)
    with pytest.raises(UploadMismatch, match="reads back as"):
        publish_wheels(wheels.both, wrapped, where, quiet)
    assert not (store.commit_folder(COMMIT_A) / "index.html").exists()
    assert not (store.commit_folder(COMMIT_A) / "tinything" / "index.html").exists()


def test_bad_input_is_refused_before_anything_is_written(store: Store, wheels: Wheels, tmp_path: Path) -> None:
    where = store.commit_url(COMMIT_A)
    wrapped, ops = wrap(store.commit_folder(COMMIT_A), where)
    with pytest.raises(ValueError, match="more than once"):
        publish_wheels([wheels.dep, wheels.dep], wrapped, where, quiet)
    with pytest.raises(ValueError, match="no wheels"):
        publish_wheels([], wrapped, where, quiet)
    liar = make_wheel(tmp_path / "liar", "tinyliar", "1.0", tag=f"py3-none-{PLATFORM_TAG}",
                      wheel_tags=[f"py3-none-linux_{ARCH}"])  # a rename-only "retag"
    with pytest.raises(WheelMetadataError):
        publish_wheels([wheels.dep, liar], wrapped, where, quiet)
    assert ops.log == []


@pytest.mark.parametrize("store", ["s3"], indirect=True)  # multipart uploads are an object-store matter
def test_large_upload_cut_after_its_first_part_leaves_no_object_and_no_pending_upload(
    store: Store, tmp_path: Path, moto_url: str
) -> None:
    """Above s3fs's 50 MiB block size an upload is multipart: cut after one part, it is aborted."""
    payload = hashlib.sha256(b"seed").digest() * (60 * (1 << 20) // 32)  # 60 MiB
    big = make_wheel(tmp_path / "big", "tinybig", "1.0", modules={"tinybig/blob.bin": payload},
                     compress_type=zipfile.ZIP_STORED)
    where = store.commit_url(COMMIT_A)
    wrapped, _ = wrap(store.commit_folder(COMMIT_A), where, projects=("tinybig",), fail_at_write=1,
                      fail_mid_stream=True, cut_after_bytes=55 * (1 << 20))

    with pytest.raises(TransientStoreError, match="InjectedFault"):
        publish_wheels([big], wrapped, where, quiet)

    bucket = urlsplit(store.base_url).netloc
    s3 = admin_client("s3", moto_url)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    files = publish_wheels([big], store.commit_folder(COMMIT_A), where, quiet)
    assert files[0].uploaded and files[0].size > 60 * (1 << 20)
    assert observe_published(store.commit_folder(COMMIT_A), where).present


# -- the nightly alias ----------------------------------------------------------------------------


def resolve_link(store: Store, page_url: str, href: str) -> StorePath:
    """The store path a (relative) link on the page at ``page_url`` leads to."""
    page = urlsplit(page_url)
    target = posixpath.normpath(posixpath.join(posixpath.dirname(page.path), unquote(href)))
    directory, filename = posixpath.split(target)
    return store_root(f"{page.scheme}://{page.netloc}{directory}/", store.conn_id) / filename


def assert_alias_never_misleads(store: Store, projects: tuple[str, ...] = ("tinydep", "tinything")) -> None:
    """Every alias page that exists links only files that are there with the linked sha256."""
    for project in projects:
        page = store.nightly_folder() / project / "index.html"
        if not page.exists():
            continue
        for link in parse_project_page(page.read_text()):
            target = resolve_link(store, f"{store.nightly_url()}{project}/index.html", link.href)
            with target.open("rb") as stream:
                assert hashlib.sha256(stream.read()).hexdigest() == link.sha256, f"{project}: {link.href}"


def resolve_alias_links(store: Store) -> dict[str, str]:
    """filename → sha256 of the file each alias link resolves to (reading it), per the link's own URL."""
    alias = read_published(store.nightly_folder(), store.nightly_url())
    assert alias is not None
    found = {}
    for link in alias.links:
        target = resolve_link(store, f"{store.nightly_url()}{link.project}/index.html", link.href)
        with target.open("rb") as stream:
            found[link.filename] = hashlib.sha256(stream.read()).hexdigest()
        assert found[link.filename] == link.sha256
    return found


def test_promote_points_nightly_at_the_commit_without_copying_wheels(store: Store, wheels: Wheels) -> None:
    publish_wheels(wheels.both, store.commit_folder(COMMIT_A), store.commit_url(COMMIT_A), quiet)
    wrapped, ops = wrap(store.nightly_folder(), store.nightly_url(), check=lambda: assert_alias_never_misleads(store))

    alias = promote_index(
        store.commit_folder(COMMIT_A), store.commit_url(COMMIT_A), wrapped, store.nightly_url(),
        commit=COMMIT_A, variant=VARIANT, log=quiet,
    )

    assert (alias.commit, alias.variant, alias.source) == (COMMIT_A, VARIANT, store.commit_url(COMMIT_A))
    hrefs = {link.filename: link.href for link in alias.links}
    assert hrefs[wheels.thing.name] == f"../../../{COMMIT_A}/{VARIANT}/{wheels.thing.name.replace('+', '%2B')}"
    assert [n for a, n in ops.log if a == "commit"] == ["tinydep/index.html", "tinything/index.html", "index.html"]
    assert not any(n.endswith(".whl") for _, n in ops.log)  # pages only, no wheel bytes
    assert resolve_alias_links(store) == {wheels.dep.name: sha256(wheels.dep), wheels.thing.name: sha256(wheels.thing)}
    again = read_published(store.nightly_folder(), store.nightly_url())
    assert again == alias


def test_promote_moves_nightly_to_the_next_commit_and_drops_stale_projects(
    store: Store, wheels: Wheels, tmp_path: Path
) -> None:
    publish_wheels(wheels.both, store.commit_folder(COMMIT_A), store.commit_url(COMMIT_A), quiet)
    promote_index(store.commit_folder(COMMIT_A), store.commit_url(COMMIT_A), store.nightly_folder(),
                  store.nightly_url(), commit=COMMIT_A, variant=VARIANT, log=quiet)
    newer = make_wheel(tmp_path / "b", "tinything", "0.2.0+rocm710")  # commit B ships tinything alone
    publish_wheels([newer], store.commit_folder(COMMIT_B), store.commit_url(COMMIT_B), quiet)
    messages: list[str] = []

    alias = promote_index(store.commit_folder(COMMIT_B), store.commit_url(COMMIT_B), store.nightly_folder(),
                          store.nightly_url(), commit=COMMIT_B, variant=VARIANT, log=messages.append)

    assert alias.commit == COMMIT_B
    assert alias.projects == ("tinything",)
    expected = f"../../../{COMMIT_B}/{VARIANT}/tinything-0.2.0%2Brocm710-py3-none-any.whl"
    assert [link.href for link in alias.links] == [expected]
    assert not (store.nightly_folder() / "tinydep" / "index.html").exists()
    assert any("tinydep/index.html: deleted" in m for m in messages)
    assert resolve_alias_links(store) == {newer.name: sha256(newer)}


def test_interrupted_promotion_leaves_nightly_on_the_old_commit_and_never_dangling(
    store: Store, wheels: Wheels, tmp_path: Path
) -> None:
    publish_wheels(wheels.both, store.commit_folder(COMMIT_A), store.commit_url(COMMIT_A), quiet)
    promote_index(store.commit_folder(COMMIT_A), store.commit_url(COMMIT_A), store.nightly_folder(),
                  store.nightly_url(), commit=COMMIT_A, variant=VARIANT, log=quiet)
    newer = build_wheels(tmp_path / "b", thing_version="0.2.0+rocm710")
    publish_wheels(newer.both, store.commit_folder(COMMIT_B), store.commit_url(COMMIT_B), quiet)
    check = lambda: assert_alias_never_misleads(store)  # noqa: E731
    wrapped, _ = wrap(store.nightly_folder(), store.nightly_url(), fail_at_write=2, check=check)

    with pytest.raises(TransientStoreError):
        promote_index(store.commit_folder(COMMIT_B), store.commit_url(COMMIT_B), wrapped,
                      store.nightly_url(), commit=COMMIT_B, variant=VARIANT, log=quiet)

    alias = read_published(store.nightly_folder(), store.nightly_url())
    assert alias is not None and alias.commit == COMMIT_A  # the root moves last
    assert_alias_never_misleads(store)
    promote_index(store.commit_folder(COMMIT_B), store.commit_url(COMMIT_B), store.nightly_folder(),
                  store.nightly_url(), commit=COMMIT_B, variant=VARIANT, log=quiet)
    assert resolve_alias_links(store) == {newer.dep.name: sha256(newer.dep), newer.thing.name: sha256(newer.thing)}


def test_promote_refuses_a_source_that_is_not_published(store: Store, wheels: Wheels) -> None:
    where = store.commit_url(COMMIT_A)
    wrapped, _ = wrap(store.commit_folder(COMMIT_A), where, fail_at_write=5)  # everything but the root
    with pytest.raises(TransientStoreError):
        publish_wheels(wheels.both, wrapped, where, quiet)

    with pytest.raises(NotPublished, match="index.html does not exist"):
        promote_index(store.commit_folder(COMMIT_A), where, store.nightly_folder(), store.nightly_url(),
                      commit=COMMIT_A, variant=VARIANT, log=quiet)
    assert read_published(store.nightly_folder(), store.nightly_url()) is None


def test_promote_with_a_public_url_writes_absolute_links(store: Store, wheels: Wheels) -> None:
    publish_wheels(wheels.both, store.commit_folder(COMMIT_A), store.commit_url(COMMIT_A), quiet)
    public = wheels_prefix("https://wheels.example.invalid/rocm", COMMIT_A, VARIANT)

    alias = promote_index(store.commit_folder(COMMIT_A), store.commit_url(COMMIT_A), store.nightly_folder(),
                          store.nightly_url(), commit=COMMIT_A, variant=VARIANT, log=quiet, source_public_url=public)

    assert {link.href for link in alias.links} == {
        public + wheels.dep.name, public + wheels.thing.name.replace("+", "%2B")
    }


# -- pip installs from what was published ----------------------------------------------------------


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with its own pip (ensurepip: offline)."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    return venv / "bin" / "python"


def pip_install(python: Path, index_url: str, target: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PIP_CONFIG_FILE": os.devnull,  # no user/site pip config (no other index, no proxy)
        "PIP_NO_INPUT": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.pop("PIP_INDEX_URL", None)
    env.pop("PIP_EXTRA_INDEX_URL", None)
    return subprocess.run(
        [str(python), "-m", "pip", "install", "--no-cache-dir", "--index-url", index_url,
         "--target", str(target), "tinything"],
        capture_output=True, text=True, env=env, check=False, timeout=120,
    )


def imported_version(python: Path, target: Path) -> str:
    result = subprocess.run(
        [str(python), "-c", "import tinything, tinydep; print(tinything.VERSION)"],
        capture_output=True, text=True, env={"PYTHONPATH": str(target), "PATH": os.environ.get("PATH", "")},
        check=True,
    )
    return result.stdout.strip()


def test_pip_installs_a_package_and_its_dependency_from_the_published_and_the_nightly_index(
    tmp_path: Path, wheels: Wheels, venv_python: Path
) -> None:
    store = Store("file", f"file://{tmp_path}/store/rocm", None)
    publish_wheels(wheels.both, store.commit_folder(COMMIT_A), store.commit_url(COMMIT_A), quiet)
    promote_index(store.commit_folder(COMMIT_A), store.commit_url(COMMIT_A), store.nightly_folder(),
                  store.nightly_url(), commit=COMMIT_A, variant=VARIANT, log=quiet)

    for name, index_url in [("commit", store.commit_url(COMMIT_A)), ("nightly", store.nightly_url())]:
        target = tmp_path / f"installed-{name}"
        result = pip_install(venv_python, index_url, target)
        assert result.returncode == 0, f"{name}: {result.stdout}\n{result.stderr}"
        assert imported_version(venv_python, target) == "0.1.0.dev3+rocm710", name
        installed = sorted(p.name for p in target.glob("*.dist-info"))
        assert installed == ["tinydep-1.0.dist-info", "tinything-0.1.0.dev3+rocm710.dist-info"], name


def test_pip_refuses_a_file_whose_bytes_differ_from_the_link(
    tmp_path: Path, wheels: Wheels, venv_python: Path
) -> None:
    """The sha256 in every link is checked by pip: what the index promises is what gets installed."""
    store = Store("file", f"file://{tmp_path}/store/rocm", None)
    publish_wheels(wheels.both, store.commit_folder(COMMIT_A), store.commit_url(COMMIT_A), quiet)
    on_disk = Path(urlsplit(store.commit_url(COMMIT_A)).path) / wheels.dep.name
    on_disk.write_bytes(build_wheels(tmp_path / "other", marker="x").dep.read_bytes() + b"\0")

    result = pip_install(venv_python, store.commit_url(COMMIT_A), tmp_path / "installed")

    assert result.returncode != 0
    assert "HASHES" in result.stderr.upper() or "hash" in result.stderr.lower()

