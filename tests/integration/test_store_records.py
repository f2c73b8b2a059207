"""Checking published wheels without reading them, and base wheels stored once and linked (issue #13).

Every publishing test runs on both stores (the ``store`` fixture: ``file://`` and S3 on moto). A wheel's
sha256 is recorded when it is uploaded (S3: the object's metadata; ``file://``: a record file beside it) and
checked with one HEAD-class request; only a file without a record is read. ``NoWheelReads`` wraps a real
store path and fails the test on any read of a wheel's bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from rocm_release.adapters.retention import CallCount, delete_wheel_folder, read_base_folders
from rocm_release.adapters.steps import already_published
from rocm_release.adapters.store import (
    StorePath,
    observe_published,
    read_text_or_none,
    record_name,
    stat_or_none,
    store_root,
)
from rocm_release.adapters.wheels_publish import PublishedLink, promote_index, publish_wheels, read_published
from rocm_release.core.index import wheel_href
from rocm_release.core.plan import base_wheels_prefix
from tests.integration.test_wheels_publish import (
    COMMIT_A,
    build_wheels,
    quiet,
    resolve_alias_links,
    resolve_link,
    sha256,
)
from tests.support.moto import admin_client
from tests.support.stores import VARIANT, Store
from tests.support.wheels import Wheels

pytestmark = pytest.mark.integration

BASE_KEY = "b" * 16
BASE_DIGEST = "sha256:" + "c" * 64


class NoWheelReads:
    """A real store path whose wheels may be checked (stat, HEAD) but never opened for reading."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __truediv__(self, other: str) -> NoWheelReads:
        return NoWheelReads(self._real / other)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def open(self, mode: str = "r", **kwargs: Any) -> Any:
        if "r" in mode and str(self._real).endswith(".whl"):
            raise AssertionError(f"{self._real}: a wheel's bytes were read")
        return self._real.open(mode, **kwargs)

    def read_text(self) -> str:
        return str(self._real.read_text())


@pytest.fixture
def wheels(tmp_path: Path) -> Wheels:
    return build_wheels(tmp_path / "wheels")


def test_published_wheels_are_checked_and_skipped_without_reading_them(store: Store, wheels: Wheels) -> None:
    where = store.commit_url(COMMIT_A)
    publish_wheels(wheels.both, store.commit_folder(COMMIT_A), where, quiet)
    folder: StorePath = NoWheelReads(store.commit_folder(COMMIT_A))  # type: ignore[assignment]

    observed = observe_published(folder, where)
    again = publish_wheels(wheels.both, folder, where, quiet)

    assert observed.present, observed.reason
    assert [f.uploaded for f in again] == [False, False]
    for wheel in wheels.both:
        stored = stat_or_none(store.commit_folder(COMMIT_A), wheel.name, where + wheel.name)
        assert stored is not None and (stored.size, stored.sha256) == (wheel.stat().st_size, sha256(wheel))
        assert stored.uploaded is not None and stored.uploaded.endswith("Z")


def test_pages_on_s3_are_html_and_never_cached_and_wheels_carry_their_sha256(
    store: Store, wheels: Wheels, request: pytest.FixtureRequest
) -> None:
    if store.kind != "s3":
        pytest.skip("S3 object headers")
    where = store.commit_url(COMMIT_A)
    publish_wheels(wheels.both, store.commit_folder(COMMIT_A), where, quiet)
    promote_index(store.commit_folder(COMMIT_A), where, store.nightly_folder(), store.nightly_url(),
                  commit=COMMIT_A, variant=VARIANT, log=quiet)
    s3 = admin_client("s3", str(request.getfixturevalue("moto_url")))
    bucket = urlsplit(store.base_url).netloc

    for url in (where, store.nightly_url()):
        for page in ("index.html", "tinydep/index.html", "tinything/index.html"):
            head = s3.head_object(Bucket=bucket, Key=urlsplit(url + page).path.lstrip("/"))
            assert head["CacheControl"] == "no-cache", url + page
            assert head["ContentType"].startswith("text/html"), url + page
    for wheel in wheels.both:
        head = s3.head_object(Bucket=bucket, Key=urlsplit(where + wheel.name).path.lstrip("/"))
        assert head["Metadata"]["sha256"] == sha256(wheel)


def test_a_file_without_its_record_is_hashed_once_and_recorded_again(store: Store, wheels: Wheels) -> None:
    if store.kind != "file":
        pytest.skip("file:// records")
    where = store.commit_url(COMMIT_A)
    publish_wheels(wheels.both, store.commit_folder(COMMIT_A), where, quiet)
    on_disk = Path(urlsplit(where).path)
    (on_disk / record_name(wheels.thing.name)).unlink()  # a store written before records, or a cut write

    assert observe_published(store.commit_folder(COMMIT_A), where).present  # read and hashed instead
    publish_wheels(wheels.both, store.commit_folder(COMMIT_A), where, quiet)

    record = json.loads((on_disk / record_name(wheels.thing.name)).read_text())
    assert record["sha256"] == sha256(wheels.thing) and record["size"] == wheels.thing.stat().st_size


@pytest.mark.parametrize("same_size", [False, True], ids=["other-size", "same-size"])
def test_a_record_never_vouches_for_other_bytes(store: Store, wheels: Wheels, same_size: bool) -> None:
    """Bytes replaced behind the publisher's back (another size, or one byte flipped in place): the record no
    longer applies (size or modification time), the file is hashed, and the folder reads as not published."""
    if store.kind != "file":
        pytest.skip("file:// records")
    where = store.commit_url(COMMIT_A)
    publish_wheels(wheels.both, store.commit_folder(COMMIT_A), where, quiet)
    on_disk = Path(urlsplit(where).path) / wheels.thing.name
    data = bytearray(on_disk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    on_disk.write_bytes(bytes(data) if same_size else b"someone else's bytes")

    observed = observe_published(store.commit_folder(COMMIT_A), where)

    assert not observed.present and "sha256" in observed.reason


# -- base wheels stored once -------------------------------------------------------------------------


def publish_with_base(store: Store, wheels: Wheels) -> tuple[str, str]:
    """tinydep as the base wheels (``<store>/base/…``), tinything in the commit folder linking it."""
    base_url = base_wheels_prefix(store.base_url, BASE_KEY, VARIANT, BASE_DIGEST)
    publish_wheels([wheels.dep], store_folder(store, base_url), base_url, quiet)
    base = read_published(store_folder(store, base_url), base_url)
    assert base is not None
    where = store.commit_url(COMMIT_A)
    linked = [PublishedLink(project=link.project, filename=link.filename, sha256=link.sha256,
                            href=wheel_href(f"../../../base/{base_url.rstrip('/').rsplit('/', 1)[-1]}/",
                                            link.filename),
                            requires_python=link.requires_python) for link in base.links]
    publish_wheels([wheels.thing], store.commit_folder(COMMIT_A), where, quiet, linked=linked)
    return base_url, where


def store_folder(store: Store, url: str) -> StorePath:
    return store.folder(*url[len(store.base_url) + 1:].strip("/").split("/"))


def test_a_commit_links_the_base_wheels_instead_of_holding_a_copy(store: Store, wheels: Wheels) -> None:
    base_url, where = publish_with_base(store, wheels)

    observed = observe_published(store.commit_folder(COMMIT_A), where)
    page = read_text_or_none(store.commit_folder(COMMIT_A) / "tinydep" / "index.html", where)

    assert observed.present, observed.reason
    assert page is not None and f'href="../../../base/{BASE_KEY}-{VARIANT}-cccccccccccc/{wheels.dep.name}' in page
    assert stat_or_none(store.commit_folder(COMMIT_A), wheels.dep.name, where) is None  # no copy
    assert observe_published(store_folder(store, base_url), base_url).present


def test_a_missing_base_wheel_makes_the_commit_not_published(store: Store, wheels: Wheels) -> None:
    base_url, where = publish_with_base(store, wheels)
    (store_folder(store, base_url) / wheels.dep.name).unlink()  # type: ignore[attr-defined]

    observed = observe_published(store.commit_folder(COMMIT_A), where)

    assert not observed.present and observed.reason == f"{base_url}{wheels.dep.name} is linked but missing"


def test_the_nightly_index_links_the_base_folder_too(store: Store, wheels: Wheels) -> None:
    base_url, where = publish_with_base(store, wheels)

    promote_index(store.commit_folder(COMMIT_A), where, store.nightly_folder(), store.nightly_url(),
                  commit=COMMIT_A, variant=VARIANT, log=quiet)

    alias = read_published(store.nightly_folder(), store.nightly_url())
    assert alias is not None
    targets = {link.filename: resolve_link(store, f"{store.nightly_url()}{link.project}/index.html", link.href)
               for link in alias.links}
    assert str(targets[wheels.dep.name]).endswith(urlsplit(base_url + wheels.dep.name).path)
    assert str(targets[wheels.thing.name]).endswith(urlsplit(where + wheels.thing.name).path)
    assert resolve_alias_links(store) == {w.name: sha256(w) for w in wheels.both}  # reads and checks each


@pytest.mark.parametrize("href", [
    "../../../base/../x/tinydep-1.0-py3-none-any.whl",
    "../../../other/x/tinydep-1.0-py3-none-any.whl",
    "../../base/x/tinydep-1.0-py3-none-any.whl",
    "../../../base/.hidden/tinydep-1.0-py3-none-any.whl",
])
def test_a_page_linking_outside_the_folder_and_the_base_folders_is_not_a_publication(
    store: Store, wheels: Wheels, href: str
) -> None:
    where = store.commit_url(COMMIT_A)
    publish_wheels([wheels.thing], store.commit_folder(COMMIT_A), where, quiet, linked=[
        PublishedLink(project="tinydep", filename=wheels.dep.name, sha256=sha256(wheels.dep), href=href)])

    observed = observe_published(store.commit_folder(COMMIT_A), where)

    assert not observed.present and "unexpected link" in observed.reason


# -- retention of base folders ------------------------------------------------------------------------


def test_retention_reads_which_base_folders_each_commit_links_and_deletes_only_base_folders(
    store: Store, wheels: Wheels
) -> None:
    base_url, _ = publish_with_base(store, wheels)
    orphan_url = base_wheels_prefix(store.base_url, BASE_KEY, VARIANT, "sha256:" + "d" * 64)
    publish_wheels([wheels.dep], store_folder(store, orphan_url), orphan_url, quiet)
    root: Any = store_root(store.base_url + "/", store.conn_id)
    linked, orphan = (u.rstrip("/").rsplit("/", 1)[-1] for u in (base_url, orphan_url))
    calls = CallCount()

    found = read_base_folders(root, store.base_url, [COMMIT_A, "base", "nightly"], calls)

    assert [f.name for f in found["base_folders"]] == sorted([linked, orphan])
    assert all(f.modified_at is not None for f in found["base_folders"])
    assert found["base_links"] == {COMMIT_A: frozenset({linked})}
    assert delete_wheel_folder(root, store.base_url, f"base/{orphan}")
    assert not observe_published(store_folder(store, orphan_url), orphan_url).present
    assert observe_published(store.commit_folder(COMMIT_A), store.commit_url(COMMIT_A)).present
    for name in ("base", "base/..", "base/../" + COMMIT_A, "nightly", "base/x/y"):
        with pytest.raises(ValueError, match="refusing to delete"):
            delete_wheel_folder(root, store.base_url, name)


# -- a no-op night's publish_wheels -------------------------------------------------------------------


def test_a_folder_published_from_the_same_images_is_recognised_without_reading_a_wheel(
    store: Store, wheels: Wheels
) -> None:
    where = store.commit_url(COMMIT_A)
    images = {"wheels-image": "sha256:" + "1" * 64, "base-wheels-image": "sha256:" + "2" * 64}
    publish_wheels(wheels.both, store.commit_folder(COMMIT_A), where, quiet, root_meta=images)
    folder: StorePath = NoWheelReads(store.commit_folder(COMMIT_A))  # type: ignore[assignment]

    same = already_published(folder, where, images)
    rebuilt = already_published(folder, where, {**images, "wheels-image": "sha256:" + "3" * 64})

    assert same is not None and rebuilt is None
    assert [(f.filename, f.sha256, f.size, f.uploaded) for f in same] == [
        (w.name, sha256(w), w.stat().st_size, False) for w in wheels.both]
