"""The project's source at a commit, on the build host: a per-host git mirror cache.

Every build task gets its own source (DESIGN.md: tasks on different hosts
share nothing but registries, object stores and XCom). A ``GitMirror`` keeps
one bare mirror per repository URL under a cache directory and answers the
questions a release asks of git — which commit a ref names, which commit was
the branch tip at a time, the bytes of a file at a commit — and exports the
tree at a commit as a fresh build context.

Only ``git`` itself runs, always with an argument list (never a shell
string). Every ref, branch and path is validated before it reaches git and is
placed after ``--end-of-options``, so a value such as ``--upload-pack=evil``
can never be read as an option.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from rocm_release.core.errors import FatalError, TransientError
from rocm_release.core.names import COMMITISH_RE, SHA_RE, redact

# Branches and tags only: a hosted repository's other refs (GitHub's refs/pull/*,
# tens of thousands for vLLM) would multiply the mirror's size for nothing a
# release builds. A commit reachable from no branch or tag is therefore unknown.
DEFAULT_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
# URL forms git may fetch from; anything else (ext::, fd::, a bare word) is refused.
URL_RE = re.compile(r"^(?:(?:https?|ssh|git|file)://[^\s]+|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+)$")
DEFAULT_TIMEOUT = 30 * 60.0
ABBREVIATED_SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")


class GitCredentials:
    """A user and token for an http(s) remote, from an Airflow connection; never in a URL or argument.

    git receives them as an ``Authorization: Basic`` header through ``GIT_CONFIG_*`` environment
    variables of the git process only (not its command line, not the mirror's config on disk), the
    way ``actions/checkout`` hands a token to git. ``repr`` shows the user, never the token.
    """

    def __init__(self, username: str, token: str) -> None:
        if not token:
            raise FatalSourceError("git credentials without a token (the connection's password is empty)")
        self.username = username or "x-access-token"
        self._token = token

    def __repr__(self) -> str:
        return f"GitCredentials(username={self.username!r}, token=***)"

    def environment(self) -> dict[str, str]:
        """The variables that give git the header for every http(s) request of one process."""
        basic = base64.b64encode(f"{self.username}:{self._token}".encode()).decode()
        return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"}


class SourceError(RuntimeError):
    """A ref, commit or file cannot be found or git failed; the message names the ref and repository."""


class FatalSourceError(SourceError, FatalError):
    """Asking again will not help: an unknown commit, ref, branch or file, a refused credential, bad input."""


class TransientSourceError(SourceError, TransientError):
    """The remote did not answer (unreachable, timed out, 5xx): fetching again later may work."""


# git's words for a remote that refused us (as opposed to one that did not answer).
_ACCESS_DENIED = re.compile(
    r"Authentication failed|could not read Username|Permission denied|returned error: 40[13]|"
    r"repository .* not found|does not appear to be a git repository|Repository not found",
    re.IGNORECASE,
)


def mirror_dir_name(url: str) -> str:
    """The cache directory name of a URL: a readable stem plus 16 hex of sha256(url)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git"))[:40]
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return f"{stem.strip('.-') or 'repo'}-{digest}.git"


class GitMirror:
    """A bare mirror of one repository (branches and tags) in a per-host cache directory.

    Reads never touch the network: call ``update()`` to clone (first time) or
    fetch (``--prune``, so deleted branches and tags disappear), or
    ``ensure_commit()`` to fetch only when a commit is not there yet. Updates
    of one mirror are serialised with a file lock, so several tasks on one
    host can share the cache.
    """

    def __init__(
        self,
        url: str,
        cache_dir: Path,
        *,
        git: str = "git",
        refspecs: Sequence[str] = DEFAULT_REFSPECS,
        timeout: float = DEFAULT_TIMEOUT,
        credentials: GitCredentials | None = None,
    ) -> None:
        url = url.strip()
        if not URL_RE.match(url):
            raise FatalSourceError(
                f"repository URL {redact(url)!r} is not one git may fetch here "
                "(https://, http://, ssh://, git://, file:// or user@host:path)"
            )
        self.url = url
        self.path = Path(cache_dir) / mirror_dir_name(url)
        self.git = git
        self.refspecs = tuple(refspecs)
        self.timeout = timeout
        self._credentials = credentials
        self._reachable: set[str] = set()

    def _env(self) -> dict[str, str]:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        if self._credentials is not None:
            env.update(self._credentials.environment())
        return env

    def __repr__(self) -> str:
        return f"GitMirror({redact(self.url)!r}, path={str(self.path)!r})"

    # ------------------------------------------------------------------ running git

    def _run(
        self,
        args: Sequence[str],
        *,
        git_dir: Path | None = None,
        check: bool = True,
        what: str,
        stdout: int | None = subprocess.PIPE,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``git --git-dir=<mirror> <args>``; SourceError naming ``what`` and the URL on failure."""
        cmd = [self.git, "-c", "protocol.ext.allow=never", f"--git-dir={git_dir or self.path}", *args]
        try:
            proc = subprocess.run(
                cmd, stdout=stdout, stderr=subprocess.PIPE, env=self._env(), timeout=self.timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise TransientSourceError(
                f"{what} in {redact(self.url)}: git timed out after {self.timeout:.0f}s") from exc
        except OSError as exc:
            raise FatalSourceError(f"{what} in {redact(self.url)}: cannot run {self.git!r}: {exc.strerror}") from exc
        if check and proc.returncode != 0:
            raise SourceError(f"{what} in {redact(self.url)}: {_stderr(proc)}")
        return proc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold this mirror's update lock (an flock on ``<mirror>.lock``)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _exists(self) -> bool:
        return (self.path / "HEAD").is_file()

    def _require(self) -> None:
        if not self._exists():
            raise SourceError(f"no mirror of {redact(self.url)} at {self.path}; call update() first")

    # ------------------------------------------------------------------ updating

    def update(self) -> None:
        """Clone the mirror (first time, into a temp dir renamed into place) or fetch with ``--prune``."""
        self._reachable.clear()  # a fetch may prune the branch that made a commit reachable
        with self._locked():
            if self._exists():
                self._fetch(self.path)
                return
            fresh = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.new-", dir=self.path.parent))
            try:
                self._run(["init", "--quiet", "--bare"], git_dir=fresh, what="creating the mirror")
                self._run(["config", "remote.origin.url", self.url], git_dir=fresh, what="configuring the mirror")
                for i, spec in enumerate(self.refspecs):
                    self._run(
                        ["config", "--add" if i else "--replace-all", "remote.origin.fetch", spec],
                        git_dir=fresh,
                        what="configuring the mirror",
                    )
                self._run(["config", "remote.origin.mirror", "true"], git_dir=fresh, what="configuring the mirror")
                self._fetch(fresh)
                fresh.rename(self.path)
            finally:
                shutil.rmtree(fresh, ignore_errors=True)

    def _fetch(self, git_dir: Path) -> None:
        """Fetch from the remote: a refusal is fatal, no answer (unreachable, timeout, 5xx) transient."""
        proc = self._run(
            ["fetch", "--quiet", "--prune", "--no-write-fetch-head", "origin"],
            git_dir=git_dir,
            check=False,
            what="fetching",
        )
        if proc.returncode != 0:
            detail = _stderr(proc)
            if not _ACCESS_DENIED.search(detail):
                raise TransientSourceError(f"fetching in {redact(self.url)}: {detail}")
            who = (f"the remote refused the credentials of user {self._credentials.username!r} (git_conn_id)"
                   if self._credentials else "the remote wants credentials: name a connection in git_conn_id")
            raise FatalSourceError(f"fetching in {redact(self.url)}: {who}; git said: {detail}")

    def has_commit(self, sha: str) -> bool:
        """Whether the mirror holds commit ``sha`` (a full 40-hex SHA); no network."""
        _check_sha(sha)
        if not self._exists():
            return False
        proc = self._run(
            ["cat-file", "-e", "--end-of-options", f"{sha}^{{commit}}"], check=False, what=f"looking up {sha}"
        )
        return proc.returncode == 0

    def ensure_commit(self, sha: str) -> None:
        """Fetch if commit ``sha`` is not in the mirror yet; SourceError if it is not there after that."""
        if self.has_commit(sha):
            return
        self.update()
        if not self.has_commit(sha):
            raise FatalSourceError(f"commit {sha} is not on any branch or tag of {redact(self.url)}")

    # ------------------------------------------------------------------ questions

    def resolve(self, ref_or_sha: str) -> str:
        """The full 40-hex SHA of a branch, tag (annotated ones peeled), or full or abbreviated SHA.

        A SHA must be reachable from a branch or tag the remote has *now*: a commit whose branch
        was deleted stays in the mirror's objects, but it is not released (FatalSourceError).
        """
        _check_ref(ref_or_sha, self.url)
        self._require()
        proc = self._run(
            ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref_or_sha}^{{commit}}"],
            check=False,
            what=f"resolving {ref_or_sha!r}",
        )
        sha = proc.stdout.decode().strip()
        if proc.returncode != 0 or not SHA_RE.match(sha):
            raise FatalSourceError(
                f"unknown commit or ref {ref_or_sha!r} in {redact(self.url)} "
                "(not a branch, a tag, or an unambiguous SHA of a commit on a branch or tag)"
            )
        if ABBREVIATED_SHA_RE.match(ref_or_sha):
            self._require_reachable(sha, ref_or_sha)
        return sha

    def _require_reachable(self, sha: str, asked: str) -> None:
        """FatalSourceError unless a current branch or tag contains ``sha`` (remembered per mirror)."""
        if sha in self._reachable:
            return
        proc = self._run(
            ["for-each-ref", "--count=1", "--format=%(refname)", f"--contains={sha}", "refs/heads", "refs/tags"],
            what=f"finding a branch or tag with {sha}",
        )
        if not proc.stdout.strip():
            raise FatalSourceError(
                f"commit {asked!r} ({sha}) is on no branch or tag of {redact(self.url)} now "
                "(its branch was deleted or rewritten?): it is not released"
            )
        self._reachable.add(sha)

    def on_branch(self, sha: str, branch: str) -> bool:
        """Whether commit ``sha`` (full SHA) is reachable from the current tip of ``branch``."""
        _check_ref(branch, self.url, what="branch")
        self._require()
        self._verify_ref(f"refs/heads/{branch}", branch)
        if not self.has_commit(sha):
            return False
        full = sha
        proc = self._run(["merge-base", "--is-ancestor", full, f"refs/heads/{branch}"], check=False,
                         what=f"looking for {full} on {branch!r}")
        if proc.returncode not in (0, 1):
            raise SourceError(f"looking for {full} on {branch!r} in {redact(self.url)}: {_stderr(proc)}")
        return proc.returncode == 0

    def tip_as_of(self, branch: str, when: datetime) -> str:
        """The commit that was the tip of ``branch`` at ``when`` (timezone-aware).

        Walks the branch's first-parent history (the commits that were its tip,
        one after another, for a branch that only moves forwards) and returns
        the newest one whose *committer* time is at or before ``when``. Git
        records no push times, so this is the committer time: on a branch that
        lands changes by merge, squash or rebase (as vLLM's main does), that is
        when the change landed. A commit pushed later than it was committed
        counts from its commit time.
        """
        _check_ref(branch, self.url, what="branch")
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError(f"tip_as_of needs a timezone-aware datetime, got {when!r}")
        self._require()
        ref = f"refs/heads/{branch}"
        self._verify_ref(ref, branch)
        # Whole seconds, rounded down: commit times are whole seconds, so "at or before" stays exact.
        stamp = datetime.fromtimestamp(int(when.timestamp()), UTC).strftime("%Y-%m-%d %H:%M:%S +0000")
        proc = self._run(
            ["rev-list", "-1", "--first-parent", f"--before={stamp}", "--end-of-options", ref],
            what=f"finding the tip of {branch!r} as of {when.isoformat()}",
        )
        sha = proc.stdout.decode().strip()
        if not SHA_RE.match(sha):
            raise FatalSourceError(
                f"branch {branch!r} of {redact(self.url)} has no commit at or before {when.isoformat()} "
                "(committer time)"
            )
        return sha

    def commit_time(self, sha: str) -> datetime:
        """The committer time of a commit (UTC), the time ``tip_as_of`` compares."""
        full = self.resolve(sha)
        proc = self._run(["show", "--no-patch", "--format=%ct", full], what=f"reading the time of {full}")
        return datetime.fromtimestamp(int(proc.stdout.decode().strip()), UTC)

    def read_file(self, sha: str, path: str) -> bytes:
        """The bytes of ``path`` (relative to the tree's root) at a commit."""
        full = self.resolve(sha)
        clean = _check_path(path, self.url)
        proc = self._run(
            ["cat-file", "blob", "--end-of-options", f"{full}:{clean}"], check=False, what=f"reading {clean}"
        )
        if proc.returncode != 0:
            raise FatalSourceError(f"no file {clean!r} at commit {full} of {redact(self.url)}")
        return proc.stdout

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether ``ancestor`` is reachable from ``descendant`` (a commit is its own ancestor)."""
        a, b = self.resolve(ancestor), self.resolve(descendant)
        proc = self._run(["merge-base", "--is-ancestor", a, b], check=False, what=f"comparing {a} and {b}")
        if proc.returncode not in (0, 1):
            raise SourceError(f"comparing {a} and {b} in {redact(self.url)}: {_stderr(proc)}")
        return proc.returncode == 0

    def export(self, sha: str, dest_dir: Path) -> Path:
        """Write the tree at a commit into ``dest_dir``, a new (or empty) build context directory.

        ``git archive`` streamed into Python's tarfile, extracted with the
        ``data`` filter (no absolute paths, no links out of the tree). As with
        a release tarball, ``export-ignore``/``export-subst`` attributes apply.
        File times are the commit time. Extraction goes to a temporary sibling
        that is renamed into place, so ``dest_dir`` is either complete or absent.
        """
        if not hasattr(tarfile, "data_filter"):  # added in Python 3.11.4 (and security releases before it)
            raise SourceError("export needs Python >= 3.11.4 for tarfile's 'data' extraction filter")
        full = self.resolve(sha)
        dest = Path(dest_dir)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise SourceError(f"export of {full}: {dest} exists and is not an empty directory")
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.export-", dir=dest.parent))
        cmd = [self.git, "-c", "protocol.ext.allow=never", f"--git-dir={self.path}", "archive", "--format=tar", full]
        env = self._env()
        try:
            with tempfile.TemporaryFile() as errors:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, env=env)
                assert proc.stdout is not None
                try:
                    with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
                        archive.extractall(staging, filter="data")
                except (tarfile.TarError, OSError) as exc:
                    proc.kill()
                    raise SourceError(f"export of {full} from {redact(self.url)}: {exc}") from exc
                finally:
                    proc.stdout.close()
                    returncode = proc.wait(timeout=self.timeout)
                if returncode != 0:
                    errors.seek(0)
                    message = errors.read().decode(errors="replace").strip()
                    raise SourceError(f"export of {full} from {redact(self.url)}: {message}")
            if dest.exists():
                dest.rmdir()
            staging.rename(dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return dest

    def _verify_ref(self, ref: str, name: str) -> None:
        proc = self._run(
            ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
            check=False,
            what=f"looking up {ref}",
        )
        if proc.returncode != 0:
            raise FatalSourceError(f"unknown branch {name!r} in {redact(self.url)}")


# ---------------------------------------------------------------------- validation


def _check_ref(ref: str, url: str, *, what: str = "commit or ref") -> None:
    """Refuse anything but a plain SHA or ref name: no options, no revision syntax (``~``, ``^``, ``..``)."""
    if not isinstance(ref, str) or not COMMITISH_RE.match(ref):
        raise FatalSourceError(
            f"{what} {ref!r} for {redact(url)} is not a commit SHA or a branch/tag name "
            "(letters, digits, '.', '_', '/', '-'; no leading '-', no '..')"
        )


def _check_sha(sha: str) -> None:
    if not SHA_RE.match(sha):
        raise FatalSourceError(f"{sha!r} is not a full 40-hex commit SHA")


def _check_path(path: str, url: str) -> str:
    """A relative POSIX path inside the tree, normalised; SourceError otherwise."""
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or ".." in parts or any(c in path for c in "\0\n\r"):
        raise FatalSourceError(f"path {path!r} for {redact(url)} must be relative to the tree root, without '..'")
    return str(PurePosixPath(*parts))


def _stderr(proc: subprocess.CompletedProcess[bytes]) -> str:
    text = proc.stderr.decode(errors="replace").strip() if proc.stderr else ""
    return redact(text) or f"git exited with {proc.returncode}"
