"""A second, private Docker daemon: an empty build/pull host that nothing else on the machine uses.

The reference pipeline runs ``docker pull`` / ``docker tag`` / ``docker push`` on
a CI agent that does not have the image yet; the shared daemon of this machine
may well have it (other tests pull the same images). A daemon of our own, with
its own ``--data-root``, ``--exec-root``, socket and pid file under a short
temporary path, starts truly empty. Like the project's daemon it runs with
``--bridge=none --iptables=false --ip-masq=false``: no bridge, no NAT rules.

It is stopped by its pid (SIGTERM, then SIGKILL after a deadline), its leftover
mounts are unmounted, and its folder is removed.
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

DOCKERD = "/usr/sbin/dockerd"
START_DEADLINE = 60.0
STOP_DEADLINE = 30.0


class PrivateDockerd:
    """One private dockerd (and the containerd it supervises) under a fresh temporary folder."""

    def __init__(self, docker_cli: str) -> None:
        self.docker_cli = docker_cli
        # Unix socket paths are limited to 108 bytes, containerd's own sockets sit under the
        # exec root: keep the folder short.
        self.root = Path(tempfile.mkdtemp(prefix="rnb-", dir="/tmp"))
        self.socket = self.root / "d.sock"
        self.exec_root = self.root / "x"
        self.data_root = self.root / "data"
        self.pidfile = self.root / "d.pid"
        self.log_path = self.root / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """``unix://…`` for DOCKER_HOST."""
        return f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY")}
        env.update({"DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1"})
        return env

    def start(self) -> None:
        for folder in (self.exec_root, self.data_root):
            folder.mkdir(parents=True)
        argv = [DOCKERD, "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
                "--pidfile", str(self.pidfile), "-H", self.host,
                "--bridge=none", "--iptables=false", "--ip-masq=false"]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"private dockerd exited with {self.process.returncode}:\n{self.log_tail()}")
            probe = subprocess.run([self.docker_cli, "version", "--format", "{{.Server.Version}}"],
                                   env=self.env(), capture_output=True, text=True, check=False)
            if probe.returncode == 0 and probe.stdout.strip():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"private dockerd did not answer within {START_DEADLINE:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)  # polling a readiness condition with a deadline

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the daemon we started (by its pid), unmount what it left, remove its folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._unmount_leftovers()
        shutil.rmtree(self.root, ignore_errors=True)

    def _unmount_leftovers(self) -> None:
        """Overlay and shm mounts under our folder that the daemon did not unmount (deepest first)."""
        mounts = []
        with contextlib.suppress(OSError), open("/proc/self/mounts") as table:
            for line in table:
                fields = line.split()
                if len(fields) > 1 and fields[1].startswith(str(self.root) + "/"):
                    mounts.append(fields[1])
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


@contextlib.contextmanager
def private_dockerd(docker_cli: str) -> Iterator[PrivateDockerd]:
    """A started private daemon for the duration of the block; always stopped and removed after."""
    daemon = PrivateDockerd(docker_cli)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
