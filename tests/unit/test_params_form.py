"""The trigger form (``tasks.params``) as the Airflow 3.3 UI and API see it.

The UI picks a multi-select for an array Param only when its schema has a top-level ``examples`` or
``enum``; a Param that fails validation is refused by the API (POST dagRuns, 400) with jsonschema's
message, which the trigger dialog shows as it is. These tests validate through Airflow's own
server-side Params (``SerializedParamsDict``, what the API runs), not a copy of its rules.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from airflow.exceptions import ParamValidationError
from airflow.serialization.definitions.param import SerializedParam, SerializedParamsDict

from rocm_release.adapters.config_file import REPO_ROOT, load_config
from rocm_release.core.names import COMMITISH_RULE
from rocm_release.core.params import ParamsError, parse_params
from rocm_release.tasks.params import release_params

CONFIG = load_config(REPO_ROOT / "include" / "config" / "demo.yaml")
NAMES = [v.name for v in CONFIG.variants]


def api_validate(**values: Any) -> dict[str, Any]:
    """What the API does with a trigger's conf: each of the DAG's Params resolved through its schema."""
    params = SerializedParamsDict({
        name: SerializedParam(values.get(name, param.value), param.description, **param.schema)
        for name, param in release_params(CONFIG).items()
    })
    return params.validate()


def test_variants_is_a_multi_select_of_the_configured_names() -> None:
    schema = release_params(CONFIG)["variants"].schema
    # The UI's isFieldMultiSelect: type "array" and a top-level examples (or enum) array.
    assert schema["type"] == "array" and schema["examples"] == NAMES
    assert schema["items"]["enum"] == NAMES  # what validation allows: still only the configured names
    assert api_validate(variants=NAMES[:1])["variants"] == NAMES[:1]
    with pytest.raises(ParamValidationError, match="rocm999"):
        api_validate(variants=["rocm999"])


@pytest.mark.parametrize("commit", ["main", "release/7.1", "v1.2.3", "0123abc", "a" * 40])
def test_a_commit_the_form_accepts(commit: str) -> None:
    assert api_validate(commit=commit)["commit"] == commit
    assert parse_params({"commit": commit}, CONFIG).commit == commit


@pytest.mark.parametrize("commit", ["not a sha!", "-x", "a..b", "a//b", "main; touch /tmp/pwned", "x" * 201])
def test_a_malformed_commit_is_refused_in_words_not_only_the_pattern(commit: str) -> None:
    with pytest.raises(ParamValidationError) as refused:
        api_validate(commit=commit)
    shown = str(refused.value)  # the 400's detail: the trigger dialog shows exactly this
    assert shown.startswith("Invalid input for param commit:")
    # jsonschema pretty-prints the schema: a long string is wrapped into quoted pieces.
    assert f"must be {COMMITISH_RULE}" in re.sub(r"""['"]\n\s+['"]""", "", shown)
    # The schema jsonschema prints is the small rule, not the whole field (title, type, description).
    assert "'title'" not in shown
    with pytest.raises(ParamsError, match="param 'commit'") as worker:
        parse_params({"commit": commit}, CONFIG)
    assert COMMITISH_RULE in str(worker.value)  # the worker says the same words


def test_the_commit_field_says_what_is_allowed() -> None:
    param = release_params(CONFIG)["commit"]
    assert COMMITISH_RULE.lower() in (param.description or "").lower()
    assert api_validate(commit=None)["commit"] is None  # empty: the branch tip now
