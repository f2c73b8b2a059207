"""The nightly aliases stay true (issue #11, defects 2 and 3): on ``file://`` and on moto S3.

* Defect 2 — a rebuild of the nightly commit replaces its per-commit wheels with other bytes. On
  07d6ad6 ``publish_wheels`` rewrote the per-commit pages only, and ``nightly/<variant>/`` kept
  linking the old ``#sha256=``: pip failed with a hash mismatch for every user of the nightly index.
  The rule now: every page that links a replaced file is rewritten in the same task
  (``publish_variant_wheels`` passes ``withdraw_aliases_of`` as ``before_replace`` and calls
  ``restore_aliases_of`` after). ``publish_as_the_task_does`` below is exactly that sequence.
* Defect 3 — moving an alias is compare-and-swap: ``move_nightly_index`` and ``move_alias`` move only
  from what the decision saw, and read again after the write.

The ``store`` fixture is in tests/integration/conftest.py; the wheels and the fault injector
(``wrap``: every change followed by a reader check) come from test_wheels_publish.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rocm_release.adapters.images import move_alias
from rocm_release.adapters.registry.oci import OciRegistry
from rocm_release.adapters.store import StorePath, TransientStoreError
from rocm_release.adapters.wheels_alias import (
    MARKER,
    alias_commit,
    move_nightly_index,
    restore_aliases_of,
    withdraw_aliases_of,
)
from rocm_release.adapters.wheels_publish import promote_index, publish_wheels, read_published
from rocm_release.core.promotion import AliasMoved
from tests.integration.test_wheels_publish import (
    COMMIT_A,
    COMMIT_B,
    assert_alias_never_misleads,
    build_wheels,
    quiet,
    resolve_alias_links,
    sha256,
    wrap,
)
from tests.support.registries import make_image, unique_repo
from tests.support.stores import VARIANT, Store

pytestmark = pytest.mark.integration


def publish_as_the_task_does(store: Store, commit: str, wheels: list[Path], folder: Any = None,
                             log: Callable[[str], None] = quiet) -> None:
    """``steps.publish_variant_wheels`` after reading the images: publish, keeping every alias true."""
    where = store.commit_url(commit)
    target: StorePath = folder if folder is not None else store.commit_folder(commit)
    aliases = [(store.nightly_folder(), store.nightly_url())]
    publish_wheels(wheels, target, where, log, before_replace=lambda: withdraw_aliases_of(where, aliases, log))
    restore_aliases_of(store.commit_folder(commit), where, aliases, log)


def promote(store: Store, commit: str) -> None:
    promote_index(store.commit_folder(commit), store.commit_url(commit), store.nightly_folder(),
                  store.nightly_url(), commit=commit, variant=VARIANT, log=quiet)


# --------------------------------------------------------------------------- defect 2


def test_a_rebuild_of_the_nightly_commit_rewrites_the_nightly_pages_in_the_same_task(
    store: Store, tmp_path: Path
) -> None:
    old = build_wheels(tmp_path / "old")
    publish_as_the_task_does(store, COMMIT_A, old.both)
    promote(store, COMMIT_A)
    new = build_wheels(tmp_path / "new", marker="rebuilt")  # same names, other bytes
    assert new.thing.name == old.thing.name and sha256(new.thing) != sha256(old.thing)
    # After every change of the commit folder, no nightly page may link bytes with another sha256.
    wrapped, ops = wrap(store.commit_folder(COMMIT_A), store.commit_url(COMMIT_A),
                        check=lambda: assert_alias_never_misleads(store))
    messages: list[str] = []

    publish_as_the_task_does(store, COMMIT_A, new.both, folder=wrapped, log=messages.append)

    assert resolve_alias_links(store) == {new.dep.name: sha256(new.dep), new.thing.name: sha256(new.thing)}
    alias = read_published(store.nightly_folder(), store.nightly_url())
    assert alias is not None and (alias.commit, alias.variant) == (COMMIT_A, VARIANT)
    assert not (store.nightly_folder() / MARKER).exists()
    assert any("withdrawn while files of" in m for m in messages)
    assert any("restored to" in m for m in messages)
    assert ("commit", new.thing.name) in ops.log


def test_a_rebuild_of_another_commit_leaves_the_nightly_pages_alone(store: Store, tmp_path: Path) -> None:
    publish_as_the_task_does(store, COMMIT_A, build_wheels(tmp_path / "a").both)
    promote(store, COMMIT_A)
    publish_as_the_task_does(store, COMMIT_B, build_wheels(tmp_path / "b").both)
    before = (store.nightly_folder() / "index.html").read_text()
    messages: list[str] = []

    publish_as_the_task_does(store, COMMIT_B, build_wheels(tmp_path / "b2", marker="x").both, log=messages.append)

    assert (store.nightly_folder() / "index.html").read_text() == before
    assert not any("withdrawn" in m for m in messages)


def test_interrupted_after_the_withdrawal_the_retry_restores_the_nightly_index(store: Store, tmp_path: Path) -> None:
    publish_as_the_task_does(store, COMMIT_A, build_wheels(tmp_path / "old").both)
    promote(store, COMMIT_A)
    new = build_wheels(tmp_path / "new", marker="rebuilt")
    # Writes: the marker and root delete are on the alias; on the folder: the new wheel lands, its page fails.
    wrapped, _ = wrap(store.commit_folder(COMMIT_A), store.commit_url(COMMIT_A), fail_at_write=2,
                      check=lambda: assert_alias_never_misleads(store))

    with pytest.raises(TransientStoreError):
        publish_as_the_task_does(store, COMMIT_A, new.both, folder=wrapped)

    assert read_published(store.nightly_folder(), store.nightly_url()) is None  # "not published", not wrong
    assert alias_commit(store.nightly_folder(), store.nightly_url()) == COMMIT_A  # the marker remembers
    publish_as_the_task_does(store, COMMIT_A, new.both)  # the task's retry: nothing to replace any more
    assert resolve_alias_links(store) == {new.dep.name: sha256(new.dep), new.thing.name: sha256(new.thing)}
    assert not (store.nightly_folder() / MARKER).exists()


# --------------------------------------------------------------------------- defect 3: compare-and-swap


def test_the_nightly_index_moves_only_from_where_the_decision_saw_it(store: Store, tmp_path: Path) -> None:
    publish_as_the_task_does(store, COMMIT_A, build_wheels(tmp_path / "a").both)
    publish_as_the_task_does(store, COMMIT_B, build_wheels(tmp_path / "b", thing_version="0.2.0+rocm710").both)
    promote(store, COMMIT_B)  # another run moved it after "our" decision, made when it was absent
    before = (store.nightly_folder() / "index.html").read_text()

    with pytest.raises(AliasMoved, match=f"names {COMMIT_B} since the decision .it named nothing."):
        move_nightly_index(store.commit_folder(COMMIT_A), store.commit_url(COMMIT_A), store.nightly_folder(),
                           store.nightly_url(), expected_commit=None, commit=COMMIT_A, variant=VARIANT, log=quiet)
    assert (store.nightly_folder() / "index.html").read_text() == before

    moved = move_nightly_index(store.commit_folder(COMMIT_A), store.commit_url(COMMIT_A), store.nightly_folder(),
                               store.nightly_url(), expected_commit=COMMIT_B, commit=COMMIT_A, variant=VARIANT,
                               log=quiet)
    assert moved.commit == COMMIT_A


def test_a_writer_racing_the_move_is_caught_by_the_read_after(store: Store, tmp_path: Path) -> None:
    publish_as_the_task_does(store, COMMIT_A, build_wheels(tmp_path / "a").both)
    publish_as_the_task_does(store, COMMIT_B, build_wheels(tmp_path / "b", thing_version="0.2.0+rocm710").both)
    theirs = tmp_path / "theirs.html"
    promote(store, COMMIT_B)
    theirs.write_text((store.nightly_folder() / "index.html").read_text())
    (store.nightly_folder() / "index.html").unlink()
    for project in ("tinydep", "tinything"):
        (store.nightly_folder() / project / "index.html").unlink()

    def the_other_writer() -> None:  # right after our root page lands, theirs replaces it
        if ops.log[-1] == ("commit", "index.html"):
            with (store.nightly_folder() / "index.html").open("w") as out:
                out.write(theirs.read_text())

    wrapped, ops = wrap(store.nightly_folder(), store.nightly_url(), check=the_other_writer)
    with pytest.raises(AliasMoved, match=f"names {COMMIT_B} right after we pointed it at {COMMIT_A}"):
        move_nightly_index(store.commit_folder(COMMIT_A), store.commit_url(COMMIT_A), wrapped,
                           store.nightly_url(), expected_commit=None, commit=COMMIT_A, variant=VARIANT, log=quiet)


def test_an_image_alias_moves_only_from_where_the_decision_saw_it(services: dict[str, Any]) -> None:
    host = services["services"]["registry-public"]["address"]
    base = f"http://{host}"
    repo = unique_repo("rocm/alias")
    first, second, ours = (make_image(base, repo) for _ in range(3))
    with OciRegistry(host, scheme="http") as registry:
        registry.tag(repo, first.digest, "nightly")
        registry.tag(repo, second.digest, "nightly")  # another run moved it after our decision
        with pytest.raises(AliasMoved, match=f"nightly moved to {second.digest} since the decision"):
            move_alias(registry, repo, "nightly", expected=first.digest, digest=ours.digest, log=quiet)
        assert registry.lookup(repo, "nightly").digest == second.digest  # untouched
        assert move_alias(registry, repo, "nightly", expected=second.digest, digest=ours.digest, log=quiet)
        assert registry.lookup(repo, "nightly").digest == ours.digest
        assert not move_alias(registry, repo, "nightly", expected=second.digest, digest=ours.digest, log=quiet)
