"""GitMirror against the demo history (include/demo/make_history.py) in a temp directory.

git is a local program, so these are unit tests: no service, no network.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from rocm_release.adapters.config_file import REPO_ROOT, load_config
from rocm_release.adapters.git import GitMirror, SourceError, mirror_dir_name
from rocm_release.core.names import redact
from rocm_release.core.plan import base_key
from tests.support.demo import MAKE_HISTORY, make_history

DEMO_TREE = REPO_ROOT / "include" / "demo" / "tinyllm"
DAY = {label: datetime(2026, 11, n, 12, 0, tzinfo=UTC) for n, label in enumerate(
    ["initial", "source_change", "base_change", "source_change_2"], start=1
)}
BASE_INPUTS = ("docker/Dockerfile.rocm_base", "requirements/base.txt")
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid",
    "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t.invalid",
}


def git(cwd: Path, *args: str, date: str | None = None) -> str:
    env = {**os.environ, **GIT_ENV}
    if date:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="session")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    bare = tmp_path_factory.mktemp("demo") / "tinyllm.git"
    return bare, make_history(bare)


@pytest.fixture(scope="session")
def mirror(history: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> GitMirror:
    """A read-only mirror shared by the tests that do not change the upstream repository."""
    bare, _ = history
    m = GitMirror(f"file://{bare}", tmp_path_factory.mktemp("cache"))
    m.update()
    return m


@pytest.fixture(scope="session")
def shas(history: tuple[Path, dict[str, str]]) -> dict[str, str]:
    return history[1]


@pytest.fixture
def own_upstream(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A history of the test's own, for tests that push to it."""
    bare = tmp_path / "upstream" / "tinyllm.git"
    return bare, make_history(bare)


# --------------------------------------------------------------------------- the demo history


def test_make_history_gives_the_same_shas_every_run(history: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    bare, shas = history
    again = make_history(tmp_path / "again.git")
    assert again == shas
    assert json.loads(Path(f"{bare}.commits.json").read_text()) == shas
    assert make_history(tmp_path / "again.git") == shas  # re-running on an existing repository
    assert list(shas) == ["initial", "source_change", "base_change", "source_change_2", "main"]
    assert shas["main"] == shas["source_change_2"]


def test_make_history_replaces_a_repository_with_another_history(tmp_path: Path) -> None:
    bare = tmp_path / "tinyllm.git"
    shas = make_history(bare)
    work = tmp_path / "work"
    git(tmp_path, "clone", "--quiet", str(bare), str(work))
    (work / "extra.txt").write_text("x\n")
    git(work, "add", "extra.txt")
    git(work, "commit", "--quiet", "-m", "extra")
    git(work, "push", "--quiet", "origin", "main")
    assert make_history(bare) == shas
    assert git(bare, "rev-parse", "refs/heads/main") == shas["main"]


def test_history_commits_change_what_their_labels_say(mirror: GitMirror, shas: dict[str, str]) -> None:
    def changed(label: str, parent: str) -> set[str]:
        out = subprocess.run(
            ["git", f"--git-dir={mirror.path}", "diff", "--name-only", shas[parent], shas[label]],
            capture_output=True, text=True, check=True,
        ).stdout
        return set(out.split())

    assert changed("source_change", "initial") == {"src/tinyllm/__init__.py", "src/tinyllm/_version.py"}
    assert changed("base_change", "source_change") == {"docker/Dockerfile.rocm_base"}
    assert changed("source_change_2", "base_change") == {"src/tinyllm/__init__.py", "src/tinyllm/_version.py"}


# --------------------------------------------------------------------------- resolve


def test_resolve_branch_tag_and_shas(mirror: GitMirror, shas: dict[str, str]) -> None:
    assert mirror.resolve("main") == shas["main"]
    assert mirror.resolve(shas["source_change"]) == shas["source_change"]
    assert mirror.resolve(shas["source_change"][:10]) == shas["source_change"]
    assert mirror.resolve(shas["initial"][:7]) == shas["initial"]
    assert mirror.resolve("refs/heads/main") == shas["main"]


def test_resolve_peels_annotated_tags_to_their_commit(mirror: GitMirror, shas: dict[str, str]) -> None:
    assert mirror.resolve("v0.1.0") == shas["initial"]
    assert mirror.resolve("v0.1.1") == shas["source_change"]


def test_unknown_ref_error_names_the_ref_and_the_repository(mirror: GitMirror) -> None:
    with pytest.raises(SourceError, match=r"'no-such-branch'.*file://.*tinyllm\.git"):
        mirror.resolve("no-such-branch")
    with pytest.raises(SourceError, match="'0000000000000000000000000000000000000000'"):
        mirror.resolve("0" * 40)


@pytest.mark.parametrize(
    "ref",
    [
        "--upload-pack=evil", "-n", "--end-of-options",
        "main~1", "main^", "HEAD@{1}", "main..v0.1.0", "a b", "", "main:x",
    ],
)
def test_option_like_or_revision_syntax_refs_are_refused(mirror: GitMirror, ref: str) -> None:
    with pytest.raises(SourceError, match="is not a commit SHA or a branch/tag name"):
        mirror.resolve(ref)
    with pytest.raises(SourceError, match="is not a commit SHA or a branch/tag name"):
        mirror.tip_as_of(ref, DAY["base_change"])


@pytest.mark.parametrize(
    "url", ["--upload-pack=touch /tmp/pwned", "ext::sh -c touch% /tmp/pwned", "fd::3", "not a url", "/tmp/x"]
)
def test_option_like_or_unsafe_urls_are_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(SourceError, match="is not one git may fetch"):
        GitMirror(url, tmp_path)


def test_reads_before_the_first_update_say_so(history: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    m = GitMirror(f"file://{history[0]}", tmp_path)
    with pytest.raises(SourceError, match="call update"):
        m.resolve("main")


# --------------------------------------------------------------------------- tip_as_of / commit_time


def test_tip_as_of_returns_the_commit_that_was_the_tip_then(mirror: GitMirror, shas: dict[str, str]) -> None:
    assert mirror.tip_as_of("main", DAY["initial"]) == shas["initial"]  # exactly at the commit time
    assert mirror.tip_as_of("main", DAY["source_change"] - timedelta(seconds=1)) == shas["initial"]
    assert mirror.tip_as_of("main", DAY["source_change"] + timedelta(hours=6)) == shas["source_change"]
    assert mirror.tip_as_of("main", DAY["base_change"] + timedelta(microseconds=500)) == shas["base_change"]
    assert mirror.tip_as_of("main", datetime(2027, 1, 1, tzinfo=UTC)) == shas["main"]


def test_tip_as_of_compares_instants_in_any_timezone(mirror: GitMirror, shas: dict[str, str]) -> None:
    plus_two = timezone(timedelta(hours=2))
    # 2026-11-02 13:59 at +02:00 is 11:59 UTC: before source_change (12:00 UTC).
    assert mirror.tip_as_of("main", datetime(2026, 11, 2, 13, 59, tzinfo=plus_two)) == shas["initial"]
    assert mirror.tip_as_of("main", datetime(2026, 11, 2, 14, 0, tzinfo=plus_two)) == shas["source_change"]


def test_tip_as_of_before_the_first_commit_is_an_error(mirror: GitMirror) -> None:
    with pytest.raises(SourceError, match=r"branch 'main' of file://.* has no commit at or before 2026-10-31"):
        mirror.tip_as_of("main", datetime(2026, 10, 31, tzinfo=UTC))


def test_tip_as_of_needs_an_aware_datetime(mirror: GitMirror) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        mirror.tip_as_of("main", datetime(2026, 11, 3, 12))  # naive on purpose


def test_tip_as_of_an_unknown_branch_names_it(mirror: GitMirror) -> None:
    with pytest.raises(SourceError, match=r"unknown branch 'release'.*file://"):
        mirror.tip_as_of("release", DAY["base_change"])
    with pytest.raises(SourceError, match="unknown branch 'v0.1.0'"):  # a tag is not a branch
        mirror.tip_as_of("v0.1.0", DAY["base_change"])


def test_commit_time_is_the_committer_time(mirror: GitMirror, shas: dict[str, str]) -> None:
    for label, when in DAY.items():
        assert mirror.commit_time(shas[label]) == when
    assert mirror.commit_time("main") == DAY["source_change_2"]


def test_is_ancestor(mirror: GitMirror, shas: dict[str, str]) -> None:
    assert mirror.is_ancestor(shas["initial"], shas["main"])
    assert mirror.is_ancestor("v0.1.1", "main")
    assert mirror.is_ancestor(shas["main"], shas["main"])
    assert not mirror.is_ancestor(shas["main"], shas["initial"])


# --------------------------------------------------------------------------- files and trees


def test_read_file_returns_the_bytes_at_that_commit(mirror: GitMirror, shas: dict[str, str]) -> None:
    assert mirror.read_file(shas["initial"], "src/tinyllm/_version.py") == b'__version__ = "0.1.0"\n'
    assert mirror.read_file(shas["source_change"], "src/tinyllm/_version.py") == b'__version__ = "0.1.1"\n'
    assert mirror.read_file("main", "./src/tinyllm/_version.py") == b'__version__ = "0.1.2"\n'
    assert mirror.read_file("v0.1.0", "requirements/base.txt") == (DEMO_TREE / "requirements/base.txt").read_bytes()


def test_read_file_of_a_missing_or_escaping_path_is_an_error(mirror: GitMirror, shas: dict[str, str]) -> None:
    with pytest.raises(SourceError, match=rf"no file 'nope.txt' at commit {shas['main']} of file://"):
        mirror.read_file("main", "nope.txt")
    with pytest.raises(SourceError, match="no file 'src' at commit"):  # a directory is not a file
        mirror.read_file("main", "src")
    for bad in ("../etc/passwd", "/etc/passwd", ""):
        with pytest.raises(SourceError, match="must be relative"):
            mirror.read_file("main", bad)


def test_export_writes_the_tree_at_the_commit(mirror: GitMirror, shas: dict[str, str], tmp_path: Path) -> None:
    dest = mirror.export(shas["initial"], tmp_path / "ctx")
    exported = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    ignored = {"__pycache__", "build", "dist"}
    expected = {
        p.relative_to(DEMO_TREE).as_posix(): p.read_bytes()
        for p in DEMO_TREE.rglob("*")
        if p.is_file() and not ignored & set(p.relative_to(DEMO_TREE).parts)
        and p.suffix not in (".pyc", ".so") and ".egg-info" not in p.as_posix()
    }
    assert exported == expected  # commit 1 is include/demo/tinyllm/ as it is
    assert (dest / "docker" / "Dockerfile.rocm_base").stat().st_mtime == DAY["initial"].timestamp()
    assert not list(tmp_path.glob(".ctx.export-*"))


def test_export_of_a_later_commit_has_its_changes(mirror: GitMirror, tmp_path: Path) -> None:
    dest = mirror.export("main", tmp_path / "ctx")
    assert (dest / "src/tinyllm/_version.py").read_text() == '__version__ = "0.1.2"\n'
    assert "org.opencontainers.image.vendor" in (dest / "docker/Dockerfile.rocm_base").read_text()


def test_export_refuses_a_non_empty_destination(mirror: GitMirror, tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "stale.txt").write_text("x")
    with pytest.raises(SourceError, match="not an empty directory"):
        mirror.export("main", tmp_path / "ctx")
    (tmp_path / "empty").mkdir()
    assert (mirror.export("main", tmp_path / "empty") / "pyproject.toml").is_file()


# --------------------------------------------------------------------------- base inputs


def _base_key(mirror: GitMirror, sha: str) -> str:
    config = load_config(REPO_ROOT / "include" / "config" / "demo.yaml")
    assert (config.project.base_dockerfile, *config.project.base_inputs) == BASE_INPUTS
    variant = config.variants[0]
    parent = config.project.parent_image + "@sha256:" + "ab" * 32
    return base_key(
        dockerfile=mirror.read_file(sha, config.project.base_dockerfile),
        inputs={p: mirror.read_file(sha, p) for p in config.project.base_inputs},
        parent_image=parent,
        build_args={"BASE_IMAGE": parent},
        variant=variant,
    )


def test_source_only_commits_leave_the_base_inputs_and_key_alone(mirror: GitMirror, shas: dict[str, str]) -> None:
    for before, after in (("initial", "source_change"), ("base_change", "source_change_2")):
        for path in BASE_INPUTS:
            assert mirror.read_file(shas[before], path) == mirror.read_file(shas[after], path)
        assert _base_key(mirror, shas[before]) == _base_key(mirror, shas[after])


def test_a_base_dockerfile_commit_changes_the_base_inputs_and_key(mirror: GitMirror, shas: dict[str, str]) -> None:
    old, new = shas["source_change"], shas["base_change"]
    assert mirror.read_file(old, BASE_INPUTS[0]) != mirror.read_file(new, BASE_INPUTS[0])
    assert _base_key(mirror, old) != _base_key(mirror, new)


# --------------------------------------------------------------------------- the cache


def test_update_fetches_new_commits_and_prunes_deleted_refs(
    own_upstream: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    bare, shas = own_upstream
    m = GitMirror(f"file://{bare}", tmp_path / "cache")
    m.update()
    work = tmp_path / "work"
    git(tmp_path, "clone", "--quiet", str(bare), str(work))
    (work / "NEWS").write_text("0.1.3\n")
    git(work, "add", "NEWS")
    git(work, "commit", "--quiet", "-m", "news", date="2026-11-05T12:00:00+00:00")
    new = git(work, "rev-parse", "HEAD")
    git(work, "push", "--quiet", "origin", "main")
    git(work, "push", "--quiet", "origin", "--delete", "v0.1.0")

    assert m.resolve("main") == shas["main"]  # reads never touch the network
    assert not m.has_commit(new)
    m.update()
    assert m.resolve("main") == new
    assert m.tip_as_of("main", datetime(2026, 11, 5, 12, tzinfo=UTC)) == new
    assert m.tip_as_of("main", datetime(2026, 11, 4, 12, tzinfo=UTC)) == shas["source_change_2"]
    with pytest.raises(SourceError, match="'v0.1.0'"):
        m.resolve("v0.1.0")


def test_ensure_commit_fetches_only_when_missing(own_upstream: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    bare, shas = own_upstream
    m = GitMirror(f"file://{bare}", tmp_path / "cache")
    m.ensure_commit(shas["initial"])  # no mirror yet: clones
    assert m.has_commit(shas["main"])
    with pytest.raises(SourceError, match=r"commit 0{40} is not on any branch or tag of file://"):
        m.ensure_commit("0" * 40)


def test_mirrors_are_one_per_url_in_the_cache_dir(history: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    url = f"file://{history[0]}"
    a, b = GitMirror(url, tmp_path), GitMirror(url, tmp_path)
    other = GitMirror(url + "/", tmp_path)
    assert a.path == b.path != other.path
    assert a.path.parent == tmp_path
    assert a.path.name.startswith("tinyllm-") and a.path.name.endswith(".git")
    assert mirror_dir_name("https://github.com/vllm-project/vllm.git").startswith("vllm-")
    a.update()
    b.update()  # the second one fetches into the same directory
    assert b.resolve("main") == history[1]["main"]
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == [a.path.name]


def test_credentials_never_appear_in_errors(tmp_path: Path) -> None:
    url = "http://user:s3cret@127.0.0.1:9/tinyllm.git"  # nothing listens on the discard port
    assert redact(url) == "http://***@127.0.0.1:9/tinyllm.git"
    m = GitMirror(url, tmp_path)
    with pytest.raises(SourceError) as caught:
        m.update()
    assert "s3cret" not in str(caught.value) and "127.0.0.1:9" in str(caught.value)
    assert "s3cret" not in repr(m)
    assert not m.path.exists()


def test_make_history_never_replaces_a_folder_that_is_not_a_repository(tmp_path: Path) -> None:
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine\n")
    proc = subprocess.run([sys.executable, str(MAKE_HISTORY), str(folder)], capture_output=True, text=True)
    assert proc.returncode != 0 and "not a bare git repository" in proc.stderr
    assert (folder / "keep.txt").read_text() == "mine\n"


# --------------------------------------------------------------------------- issue #11: the release branch


def _side_branch(bare: Path, tmp_path: Path, name: str = "feature") -> str:
    """Push a commit on a new branch ``name`` of ``bare``; its SHA."""
    work = tmp_path / f"work-{name}"
    git(tmp_path, "clone", "--quiet", str(bare), str(work))
    git(work, "checkout", "--quiet", "-b", name)
    (work / "SIDE").write_text("side\n")
    git(work, "add", "SIDE")
    git(work, "commit", "--quiet", "-m", "side", date="2026-11-06T12:00:00+00:00")
    git(work, "push", "--quiet", "origin", name)
    return git(work, "rev-parse", "HEAD")


def test_a_commit_of_a_deleted_branch_no_longer_resolves(
    own_upstream: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """Issue #11 defect 4: the objects stay in the mirror after ``fetch --prune``; the commit must not resolve."""
    bare, _ = own_upstream
    side = _side_branch(bare, tmp_path)
    m = GitMirror(f"file://{bare}", tmp_path / "cache")
    m.update()
    assert m.resolve(side) == side
    assert m.resolve(side[:10]) == side
    git(tmp_path, "--git-dir", str(bare), "branch", "-D", "feature")
    m.update()
    assert m.has_commit(side)  # still in the objects
    with pytest.raises(SourceError, match=rf"commit '{side}' .*on no branch or tag.*not released"):
        m.resolve(side)
    with pytest.raises(SourceError, match="on no branch or tag"):
        m.commit_time(side[:12])


def test_on_branch_tells_commits_of_the_release_branch_from_others(
    own_upstream: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    bare, shas = own_upstream
    side = _side_branch(bare, tmp_path)
    m = GitMirror(f"file://{bare}", tmp_path / "cache")
    m.update()
    assert m.on_branch(shas["initial"], "main") and m.on_branch(shas["main"], "main")
    assert not m.on_branch(side, "main")
    assert m.on_branch(side, "feature") and m.on_branch(shas["main"], "feature")  # feature forks from main
    with pytest.raises(SourceError, match="unknown branch 'gone'"):
        m.on_branch(side, "gone")


def test_a_manual_promote_run_of_a_side_branch_commit_moves_no_alias(
    own_upstream: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #11 defect 4, through the promote_nightly step: a side-branch commit with promote=true.

    The registries and the store are closed ports / an empty folder: the step must decide from git
    alone and touch neither (on 07d6ad6 it read the public registry's alias and failed here)."""
    from rocm_release.adapters.steps import promote_variant
    from tests.unit.test_plan import _plan

    bare, _ = own_upstream
    side = _side_branch(bare, tmp_path)
    monkeypatch.setenv("ROCM_NIGHTLY_CACHE_DIR", str(tmp_path / "host-cache"))
    plan = _plan("demo")
    nowhere = {"host": "127.0.0.1:9", "scheme": "http", "kind": "oci"}
    config = plan.config.model_copy(update={
        "cache_registry": plan.config.cache_registry.model_copy(update=nowhere),
        "public_registry": plan.config.public_registry.model_copy(update=nowhere),
    })
    plan = plan.model_copy(update={"config": config, "git_url": f"file://{bare}", "commit": side,
                                   "run_kind": "manual", "promote": True})
    lines: list[str] = []
    result = promote_variant(plan, plan.variants[0], {}, lines.append)
    assert result == {"promoted": False, "why": f"{side[:12]} is not on the release branch 'main': "
                                                "published per commit, never promoted"}
    assert any("not on the release branch" in line for line in lines)


# --------------------------------------------------------------------------- issue #11: credentials from a connection

CANARY = "canary-7f3a9c1e-token"


def test_a_private_remote_is_fetched_with_credentials_that_stay_out_of_urls_config_and_errors(
    own_upstream: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """git over smart HTTP with Basic auth (git http-backend): the token reaches git through its
    environment only — not the URL, the mirror's config on disk, or any error."""
    from rocm_release.adapters.git import GitCredentials
    from tests.support.git_http import git_http_server

    bare, shas = own_upstream
    with git_http_server(bare.parent, "ci", CANARY) as server:
        url = server.url_of(bare.name)
        anonymous = GitMirror(url, tmp_path / "anonymous")
        with pytest.raises(SourceError, match="the remote wants credentials: name a connection in git_conn_id") \
                as refused:
            anonymous.update()
        assert type(refused.value).__name__ == "FatalSourceError"

        wrong = GitMirror(url, tmp_path / "wrong", credentials=GitCredentials("ci", "wrong-" + CANARY))
        with pytest.raises(SourceError) as denied:
            wrong.update()
        assert CANARY not in str(denied.value) and type(denied.value).__name__ == "FatalSourceError"
        assert "the remote refused the credentials of user 'ci'" in str(denied.value)

        credentials = GitCredentials("ci", CANARY)
        m = GitMirror(url, tmp_path / "cache", credentials=credentials)
        m.update()
        assert m.resolve("main") == shas["main"]
        assert any(authorized for _, _, authorized in server.requests)
    assert CANARY not in repr(credentials) and CANARY not in repr(m)
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file())
    encoded = base64.b64encode(f"ci:{CANARY}".encode())
    assert CANARY.encode() not in on_disk and encoded not in on_disk


def test_credentials_without_a_token_are_refused() -> None:
    from rocm_release.adapters.git import GitCredentials

    with pytest.raises(SourceError, match="without a token"):
        GitCredentials("ci", "")
