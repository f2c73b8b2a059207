"""The smoke-test gate, pure: the commands its containers run and what a failure hands on.

``test_release_image`` runs the config's ``smoke_test.command`` in the release image (by digest);
``test_wheels`` runs ``wheels_test_command`` in a clean container of the parent image with the
variant's wheels mounted read-only at ``WHEELS_MOUNT`` (``project/`` and ``base/``). The command is
an argument list whose script is a constant: the module names reach it as arguments, never spliced
into code or a shell line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

WHEELS_MOUNT = "/wheels"
TAIL_LINES = 20

# Runs inside the container with the parent image's python3: a new, empty venv (nothing of the image's site
# packages), the project's wheels installed with pip from the two folders only (--no-index), then each
# module imported. argv: the mount, then the modules.
_WHEELS_TEST = r"""
import glob, os, subprocess, sys, tempfile, venv
mount, modules = sys.argv[1], sys.argv[2:]
project = sorted(glob.glob(os.path.join(mount, "project", "*.whl")))
if not project:
    sys.exit(f"no project wheel under {mount}/project")
home = tempfile.mkdtemp(prefix="smoke-venv-")
venv.create(home, with_pip=True)
py = os.path.join(home, "bin", "python")
pip = [py, "-m", "pip", "install", "--no-index", "--no-cache-dir", "--disable-pip-version-check",
       "--find-links", os.path.join(mount, "base"), "--find-links", os.path.join(mount, "project"), *project]
print("+", " ".join(pip), flush=True)
subprocess.run(pip, check=True)
subprocess.run([py, "-m", "pip", "list", "--disable-pip-version-check"], check=True)
for name in modules:
    code = "import importlib, sys; m = importlib.import_module(sys.argv[1]); print(sys.argv[1], 'from', m.__file__)"
    subprocess.run([py, "-c", code, name], check=True)
print("wheels test passed:", len(project), "project wheel(s) installed,", len(modules), "module(s) imported")
"""


def wheels_test_command(imports: Iterable[str]) -> list[str]:
    """The ``test_wheels`` container's command: install the mounted wheels in a fresh venv, import ``imports``."""
    return ["python3", "-c", _WHEELS_TEST, WHEELS_MOUNT, *imports]


def tail(lines: Sequence[str], count: int = TAIL_LINES) -> list[str]:
    """The last ``count`` lines of a container's output (what a failure report quotes)."""
    return [str(line).rstrip("\n") for line in lines[-count:]]


def gate_result(task: str, *, passed: bool, output: Sequence[str] = (), why: str = "",
                ran: bool = True) -> dict[str, Any]:
    """What a gate task hands the release summary (XCom ``gate``): whether it ran, passed, why, its output's tail."""
    return {"task": task, "ran": ran, "passed": passed, "why": why, "tail": tail(output) if not passed else []}
