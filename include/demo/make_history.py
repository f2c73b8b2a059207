#!/usr/bin/env python3
"""Create (or re-create) the demo project's git repository: a fixed, reproducible history.

The sample project in ``include/demo/tinyllm/`` (a stand-in for vLLM) is
committed four times on branch ``main`` of a local bare repository, with fixed
identities and dates, so every run yields the same SHAs:

1. ``initial``        2026-11-01 12:00 UTC  the whole tree as it is in include/demo/tinyllm/ (tag v0.1.0)
2. ``source_change``  2026-11-02 12:00 UTC  tinyllm's package source only (0.1.1; tag v0.1.1)
3. ``base_change``    2026-11-03 12:00 UTC  docker/Dockerfile.rocm_base only (a label): the base key changes
4. ``source_change_2`` 2026-11-04 12:00 UTC tinyllm's package source only (0.1.2)

Usage: ``python include/demo/make_history.py [BARE_REPO]`` (default
``.state/demo/tinyllm.git`` under the repository root). Prints a JSON map of
label -> SHA (plus ``main``) on one line and writes it to ``<BARE_REPO>.commits.json``.
A repository that already holds exactly this history is left alone;
anything else at that path is replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TREE = HERE / "tinyllm"
REPO_ROOT = HERE.parents[1]
DEFAULT_BARE = REPO_ROOT / ".state" / "demo" / "tinyllm.git"
BRANCH = "main"
IDENTITY = {
    "GIT_AUTHOR_NAME": "tinyllm demo",
    "GIT_AUTHOR_EMAIL": "demo@tinyllm.invalid",
    "GIT_COMMITTER_NAME": "tinyllm demo",
    "GIT_COMMITTER_EMAIL": "demo@tinyllm.invalid",
}
# Build leftovers that must never enter the history (their presence would change the SHAs).
IGNORED = ("__pycache__", "*.pyc", "*.so", "*.egg-info", "build", "dist")


@dataclass(frozen=True)
class Edit:
    """Replace ``old`` by ``new`` in one file; ``old`` must occur exactly once."""

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Commit:
    """One commit of the history: a label, a date, a message and the edits it makes."""

    label: str
    date: str
    message: str
    edits: tuple[Edit, ...] = ()
    tag: str | None = None


HISTORY = (
    Commit("initial", "2026-11-01T12:00:00+00:00", "tinyllm 0.1.0: initial import", tag="v0.1.0"),
    Commit(
        "source_change",
        "2026-11-02T12:00:00+00:00",
        "tinyllm 0.1.1: score() clamps to [-n, n]",
        (
            Edit("src/tinyllm/_version.py", '"0.1.0"', '"0.1.1"'),
            Edit(
                "src/tinyllm/__init__.py",
                "    return tinytorch.dot(rms_norm(a), rms_norm(b))\n",
                "    n = float(len(a))\n    return max(-n, min(n, tinytorch.dot(rms_norm(a), rms_norm(b))))\n",
            ),
        ),
        tag="v0.1.1",
    ),
    Commit(
        "base_change",
        "2026-11-03T12:00:00+00:00",
        "docker: label the ROCm base image with its vendor",
        (
            Edit(
                "docker/Dockerfile.rocm_base",
                'LABEL org.opencontainers.image.title="tinyllm ROCm base"\n',
                'LABEL org.opencontainers.image.title="tinyllm ROCm base" \\\n'
                '      org.opencontainers.image.vendor="tinyllm demo"\n',
            ),
        ),
    ),
    Commit(
        "source_change_2",
        "2026-11-04T12:00:00+00:00",
        "tinyllm 0.1.2: info() names the Python it runs on",
        (
            Edit("src/tinyllm/_version.py", '"0.1.1"', '"0.1.2"'),
            Edit("src/tinyllm/__init__.py", "from pathlib import Path\n", "import sys\nfrom pathlib import Path\n"),
            Edit(
                "src/tinyllm/__init__.py",
                '        f"score check',
                '        f"Python {sys.version_info[0]}.{sys.version_info[1]}; score check',
            ),
        ),
    ),
)


def _git_env(date: str | None = None) -> dict[str, str]:
    """The environment of every git call: no user or system config, fixed identity and dates."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in ("GIT_SSH", "GIT_SSH_COMMAND")
    }
    env.update(IDENTITY)
    env.update({"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"})
    if date is not None:
        env["GIT_AUTHOR_DATE"] = date
        env["GIT_COMMITTER_DATE"] = date
    return env


def git(args: Sequence[str], cwd: Path, date: str | None = None) -> str:
    """Run git with an argument list; return its stdout (stripped); raise with stderr on failure."""
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=_git_env(date), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed in {cwd}:\n{proc.stderr.strip()}")
    return proc.stdout.strip()


def _copy_tree(dest: Path) -> None:
    """Copy the sample tree with normalised modes (0644 files, 0755 dirs): modes are part of the SHAs."""
    shutil.copytree(TREE, dest, ignore=shutil.ignore_patterns(*IGNORED), dirs_exist_ok=True)
    for path in sorted(dest.rglob("*")):
        if ".git" in path.relative_to(dest).parts:
            continue
        path.chmod(0o755 if path.is_dir() else 0o644)


def _apply(work: Path, edit: Edit) -> None:
    target = work / edit.path
    text = target.read_text()
    if text.count(edit.old) != 1:
        raise SystemExit(
            f"{edit.path}: expected exactly one {edit.old!r} to replace, found {text.count(edit.old)}; "
            "update HISTORY in make_history.py to match include/demo/tinyllm/"
        )
    target.write_text(text.replace(edit.old, edit.new))


def build_history(work: Path) -> dict[str, str]:
    """Commit HISTORY in a fresh work tree at ``work``; return label -> SHA."""
    git(["init", "--quiet", f"--initial-branch={BRANCH}", "."], work)
    git(["config", "core.autocrlf", "false"], work)
    git(["config", "core.fileMode", "true"], work)
    shas: dict[str, str] = {}
    for commit in HISTORY:
        if commit.label == "initial":
            _copy_tree(work)
        for edit in commit.edits:
            _apply(work, edit)
        git(["add", "--all", "."], work)
        git(["commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", commit.message], work, commit.date)
        shas[commit.label] = git(["rev-parse", "--verify", "HEAD^{commit}"], work)
        if commit.tag:
            git(["tag", "--annotate", "--no-sign", "-m", commit.tag, commit.tag, "HEAD"], work, commit.date)
    shas[BRANCH] = shas[HISTORY[-1].label]
    return shas


def _refs(repo: Path) -> dict[str, str]:
    out = git(["for-each-ref", "--format=%(refname) %(objectname)"], repo)
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def publish(work: Path, bare: Path) -> bool:
    """Make ``bare`` hold exactly the refs of ``work``; False if it already did (nothing written)."""
    wanted = _refs(work)
    if bare.exists():
        if not ((bare / "HEAD").is_file() and (bare / "objects").is_dir()):
            raise SystemExit(f"{bare} exists and is not a bare git repository: refusing to replace it")
        try:
            if _refs(bare) == wanted:
                return False
        except SystemExit:
            pass  # a broken repository: replace it
    bare.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{bare.name}.new-", dir=bare.parent))
    try:
        git(["init", "--quiet", "--bare", f"--initial-branch={BRANCH}", "."], fresh)
        git(["push", "--quiet", "--mirror", "--", str(fresh)], work)
        # Replace the old repository in two renames, so readers never see a half-written one.
        old = bare.with_name(f".{bare.name}.old-{os.getpid()}")
        if bare.exists():
            bare.rename(old)
        fresh.rename(bare)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return True


def make_history(bare: Path) -> dict[str, str]:
    """Create or re-create ``bare`` with the demo history; write ``<bare>.commits.json``; return it."""
    bare = bare.resolve()
    with tempfile.TemporaryDirectory(prefix="tinyllm-history-") as tmp:
        work = Path(tmp) / "tinyllm"
        work.mkdir()
        shas = build_history(work)
        changed = publish(work, bare)
    Path(f"{bare}.commits.json").write_text(json.dumps(shas, indent=2) + "\n")
    print(f"{'created' if changed else 'unchanged'}: {bare}", file=sys.stderr)
    return shas


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bare", nargs="?", type=Path, default=DEFAULT_BARE, help="the bare repository to (re)create")
    args = parser.parse_args(argv)
    # One line, so a caller can read the last line of stdout as JSON.
    print(json.dumps(make_history(args.bare)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
