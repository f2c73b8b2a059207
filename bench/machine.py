"""The machine the figures come from, and the other work that ran on it meanwhile.

The machine is shared: ``OtherWork`` samples the load average and the
processes that are not ours (not descendants of the benchmark run) every few
seconds, so that RESULTS.md can say what else competed for the cores.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from local_services import REPO, Services

# Processes worth naming when they run beside the benchmarks (CPU, disk or registry heavy).
NOTABLE = re.compile(r"pytest|airflow (dags test|scheduler|dag-processor|standalone|tasks)|docker (build|push|pull)"
                     r"|buildkit|make (test|demo|bench)|demo\.py|mypy|ruff|debootstrap|pip install")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def describe(services: Services) -> dict[str, str]:
    """Cores, memory, CPU model, kernel, docker, Python, Airflow, the repo's commit, the date."""
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kib = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                    if line.startswith("MemTotal:")), 0)
    docker = subprocess.run([services.docker_cli, "version", "--format", "{{.Server.Version}} (client "
                             "{{.Client.Version}})"], env=services.docker_env(), capture_output=True, text=True,
                            check=False).stdout.strip() or "unknown"
    try:
        airflow = metadata.version("apache-airflow")
    except metadata.PackageNotFoundError:
        airflow = "not installed"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "docker": docker,
        "python": platform.python_version(),
        "airflow": airflow,
        "commit": code_version(),
    }


def code_version() -> str:
    """HEAD's short hash, and whether the code the benchmarks run (plugins/, dags/, include/) has uncommitted
    changes (other engineers work in the same checkout)."""
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "plugins", "dags", "include"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return head + (" + uncommitted changes in " + ", ".join(sorted({line[3:].split("/")[0] for line in
                                                                   dirty.splitlines()})) if dirty else "")


def _process_table() -> tuple[dict[int, int], dict[int, str]]:
    parents, commands = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _read(f"/proc/{pid}/stat")
        if not stat:
            continue
        # pid (comm) state ppid …: comm may contain spaces and parentheses
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        commands[pid] = _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()
    return parents, commands


@dataclass
class OtherWork:
    """Samples, every ``interval`` seconds, the 1-minute load and the notable processes not started by us."""

    interval: float = 5.0
    loads: list[float] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)
    samples: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._root = os.getpid()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        self.loads.append(os.getloadavg()[0])
        parents, commands = _process_table()
        ours = {self._root}
        ancestor = parents.get(self._root)
        while ancestor and ancestor > 1:  # `make bench` and whatever started it are ours too
            ours.add(ancestor)
            ancestor = parents.get(ancestor)
        changed = True
        while changed:
            changed = False
            for pid, ppid in parents.items():
                if ppid in ours and pid not in ours:
                    ours.add(pid)
                    changed = True
        names = set()
        for pid, command in commands.items():
            if pid in ours or not command or not NOTABLE.search(command):
                continue
            names.add(re.sub(r"\s+", " ", command.replace(str(REPO) + "/", ""))[:90])
        self.seen.update(names)
        self.samples += 1

    def summary(self, cores: int) -> tuple[bool, str]:
        """(was other work running?, a sentence for RESULTS.md)."""
        if not self.loads:
            return False, "no samples"
        mean, peak = sum(self.loads) / len(self.loads), max(self.loads)
        busy = [f"`{name}` ({count} of {self.samples} samples)" for name, count in self.seen.most_common(8)]
        other = bool(busy) or mean > cores
        text = (f"1-minute load average during the run: mean {mean:.1f}, peak {peak:.1f} on {cores} cores "
                f"({self.samples} samples, every {self.interval:.0f} s).")
        if busy:
            text += " Other work seen running on the machine (not started by the benchmarks): " + "; ".join(busy) + "."
        return other, text
