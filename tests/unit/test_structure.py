"""The structure the README and ARCHITECTURE.md describe, checked: sizes, the error policy's reach,
and the config read once. (The import arrows are import-linter's job: ``make lint``.)"""

from __future__ import annotations

import inspect
import pkgutil
from importlib import import_module
from pathlib import Path

import pytest
from airflow.sdk import BaseOperator

import rocm_release
from rocm_release.tasks.policy import is_fail_fast

PACKAGE = Path(rocm_release.__file__).parent
MAX_MODULE_LINES = 500
ENTRY_POINTS = ("execute", "poke", "choose_branch")


def _modules(prefix: str) -> list[str]:
    return [m.name for m in pkgutil.walk_packages([str(PACKAGE)], "rocm_release.") if m.name.startswith(prefix)]


def test_every_layer_is_a_folder() -> None:
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "core", "adapters", "tasks"}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_500_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines; split it by job"


def _operator_classes() -> list[type]:
    found = []
    for name in _modules("rocm_release.tasks."):
        module = import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == name and issubclass(cls, BaseOperator):
                found.append(cls)
    return found


def test_every_operator_entry_point_goes_through_the_error_policy() -> None:
    classes = _operator_classes()
    assert len(classes) >= 11, [c.__name__ for c in classes]
    unwrapped = [f"{cls.__name__}.{method}" for cls in classes for method in ENTRY_POINTS
                 if method in vars(cls) and not is_fail_fast(vars(cls)[method])]
    assert unwrapped == [], "wrap these with tasks.policy.fail_fast"


def test_no_task_reads_the_config_file() -> None:
    """Only the DAG files read it (at parse time); tasks use the config frozen into the plan."""
    readers = [name for name in _modules("rocm_release.tasks") + _modules("rocm_release.adapters.steps")
               + _modules("rocm_release.adapters.retention_steps")
               if "load_config" in Path(import_module(name).__file__ or "").read_text()]
    assert readers == []
