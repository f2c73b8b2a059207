"""The retention DAG's Params: a manual run is a dry run unless it says otherwise; a scheduled run deletes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from rocm_release.adapters.config_file import load_config
from rocm_release.core.params import ParamsError
from rocm_release.tasks.params import retention_params
from rocm_release.tasks.retention import retention_settings

CONFIG = load_config()
DEFAULTS = {name: param.value for name, param in retention_params(CONFIG).items()}


def context(run_type: str, conf: dict[str, Any] | None = None) -> dict[str, Any]:
    """What retention_settings reads of a task context: the Params (form defaults + conf) and the run."""
    return {"params": {**DEFAULTS, **(conf or {})}, "dag_run": SimpleNamespace(run_type=run_type, conf=conf or {})}


def test_a_manual_run_is_a_dry_run_by_default() -> None:
    assert retention_settings(context("manual"), CONFIG) == (True, CONFIG.retention.keep_commits)


def test_a_manual_run_deletes_only_when_asked() -> None:
    assert retention_settings(context("manual", {"dry_run": False}), CONFIG)[0] is False


def test_a_scheduled_run_deletes() -> None:
    assert retention_settings(context("scheduled"), CONFIG) == (False, CONFIG.retention.keep_commits)


def test_keep_commits_overrides_the_config_for_one_run() -> None:
    assert retention_settings(context("manual", {"keep_commits": 3}), CONFIG) == (True, 3)


@pytest.mark.parametrize("conf, named", [({"keep_commits": 0}, "keep_commits"),
                                         ({"keep_commits": "many"}, "keep_commits"),
                                         ({"dry_run": "maybe"}, "dry_run"),
                                         ({"keep": 3}, "unknown param")])
def test_bad_params_fail_naming_the_param(conf: dict[str, Any], named: str) -> None:
    with pytest.raises(ParamsError, match=named):
        retention_settings(context("manual", conf), CONFIG)
