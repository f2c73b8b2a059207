"""A private ``dockerd``: an empty build/pull host that nothing else on the machine uses.

Its own data root, exec root (and the containerd it supervises), socket and pid file, so a "cold"
daemon is really empty and nothing built on it depends on, or disturbs, the shared daemon. Like the
project's daemon it runs with ``--bridge=none --iptables=false --ip-masq=false``: no bridge, no NAT.
The runtime files live under a short folder in /tmp: containerd's socket below the exec root must
stay under the 108-byte unix socket limit. ``stop`` ends the daemon by its pid (SIGTERM, then SIGKILL
after a deadline), then containerd processes of its exec root that outlived it, unmounts what it left
mounted, and removes its folders. Used by tests/integration/test_build.py and the benchmarks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

DOCKERD = "/usr/sbin/dockerd"
START_DEADLINE = 60.0
STOP_DEADLINE = 30.0


class PrivateDockerd:
    """One private dockerd; its data root and log in ``root`` (default: its own temporary folder)."""

    def __init__(self, root: Path | None = None, name: str = "private") -> None:
        self.name = name
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"rn-{name}-", dir="/tmp"))
        root = root if root is not None else self.run_dir
        self.data_root = root / f"{name}-data"
        self.log_path = root / f"{name}-dockerd.log"
        self.exec_root = self.run_dir / "exec"
        self.socket = self.run_dir / "docker.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """``unix://…`` for DOCKER_HOST."""
        return f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        """This environment, for a docker command against this daemon."""
        env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY")}
        env.update({"DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1"})
        return env

    def start(self) -> None:
        """Start it; return once it answers ``/_ping`` (fail after START_DEADLINE or when it exits)."""
        argv = [DOCKERD, "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
                "--pidfile", str(self.run_dir / "dockerd.pid"), "-H", self.host,
                "--bridge=none", "--iptables=false", "--ip-masq=false"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + START_DEADLINE
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://docker",
                          timeout=2.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"dockerd {self.name} exited with {self.process.returncode}:\n"
                                       f"{self.log_tail()}")
                try:
                    if self.socket.exists() and client.get("/_ping").text == "OK":
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dockerd {self.name} did not answer within {START_DEADLINE:.0f} s:\n"
                                       f"{self.log_tail()}")
                time.sleep(0.1)  # polling a socket for readiness, bounded by the deadline above

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the daemon (it stops its containerd), end what it left, unmount, remove its folders."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_DEADLINE)
        for pid in self._leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._unmount_leftovers()
        shutil.rmtree(self.data_root, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _leftovers(self) -> list[int]:
        """containerd and shims that this daemon's exec root started and that outlived it."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and b"containerd" in os.path.basename(cmdline[0]) and any(
                str(self.exec_root).encode() in arg for arg in cmdline
            ):
                found.append(int(entry.name))
        return found

    def _unmount_leftovers(self) -> None:
        """Overlay and shm mounts under our folders that the daemon did not unmount (deepest first)."""
        roots = tuple(f"{folder}/" for folder in (self.run_dir, self.data_root))
        mounts = []
        with contextlib.suppress(OSError), open("/proc/self/mounts") as table:
            for line in table:
                fields = line.split()
                if len(fields) > 1 and fields[1].startswith(roots):
                    mounts.append(fields[1])
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


@contextlib.contextmanager
def private_dockerd(root: Path | None = None, name: str = "private") -> Iterator[PrivateDockerd]:
    """A started private daemon for the duration of the block; always stopped and removed after."""
    daemon = PrivateDockerd(root, name)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
