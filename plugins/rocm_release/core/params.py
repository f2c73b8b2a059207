"""Params of a run, validated: what a manual trigger (or a backfill's conf) may ask for.

The trigger form (``tasks.params``) shows the same rules as a JSON schema; these models check them
again in the worker, before any side effect, and name each bad param and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import Field, ValidationError, field_validator

from rocm_release.core.config import ReleaseConfig
from rocm_release.core.errors import FatalError, shown
from rocm_release.core.frozen import Frozen
from rocm_release.core.names import COMMITISH_RE, COMMITISH_RULE


class ReleaseParams(Frozen):
    """A run's Params, validated: what a manual trigger (or a backfill's conf) may ask for."""

    commit: str | None = None
    variants: tuple[str, ...] | None = None
    force_rebuild: bool = False
    promote: bool = False
    dry_run: bool = False
    skip_tests: bool = False

    @field_validator("commit", mode="before")
    @classmethod
    def _commitish(cls, value: object) -> object:
        if value in (None, ""):
            return None
        if not isinstance(value, str) or not COMMITISH_RE.match(value):
            raise ValueError(f"must be {COMMITISH_RULE}")
        return value


class ParamsError(ValueError, FatalError):
    """Bad Params: the message names each bad param and what is allowed."""


def describe_param_errors(exc: ValidationError, allowed: list[str]) -> str:
    """One message naming each bad param, its value and what is allowed."""
    problems = []
    for e in exc.errors():
        name = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            problems.append(f"param {name!r}: unknown param; allowed params: {allowed}")
        else:
            problems.append(f"param {name!r}: {e['msg']} (got {shown(e.get('input'))})")
    return "; ".join(problems)


def parse_params(raw: Mapping[str, object], config: ReleaseConfig) -> ReleaseParams:
    """Validate raw Params against the model and the configured variants."""
    try:
        params = ReleaseParams.model_validate(dict(raw))
    except ValidationError as exc:
        raise ParamsError(describe_param_errors(exc, sorted(ReleaseParams.model_fields))) from exc
    if params.variants is not None:
        known = [v.name for v in config.variants]
        unknown = [v for v in params.variants if v not in known]
        if unknown or not params.variants:
            raise ParamsError(f"param 'variants': unknown {unknown or '(empty list)'}; allowed: {known}")
    return params


class RetentionParams(Frozen):
    """A retention run's Params. ``keep_commits`` None: the config's ``retention.keep_commits``."""

    dry_run: bool = True
    keep_commits: Annotated[int, Field(ge=1, le=10_000)] | None = None


def parse_retention_params(raw: Mapping[str, object]) -> RetentionParams:
    """Validate a retention run's Params; ParamsError names each bad one."""
    try:
        return RetentionParams.model_validate(dict(raw))
    except ValidationError as exc:
        raise ParamsError(describe_param_errors(exc, sorted(RetentionParams.model_fields))) from exc
