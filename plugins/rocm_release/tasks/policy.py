"""The error policy in Airflow terms: a fatal error fails the task at once; the rest follows retries.

Every ``execute``/``poke``/``choose_branch`` of the package is wrapped by :func:`fail_fast`
(a test walks the operator classes to check it). A :class:`~rocm_release.core.errors.FatalError`
— bad config or Params, 401/403, an unknown commit, a digest mismatch, an inconsistent hand-off —
becomes ``AirflowFailException`` (no retry), its message prefixed with the task id. Anything else,
a :class:`~rocm_release.core.errors.TransientError` included, propagates unchanged, so Airflow
retries the task as its ``retries`` say (sensors catch transient errors themselves and poke again).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from airflow.sdk.exceptions import AirflowFailException

from rocm_release.core.errors import FatalError

F = TypeVar("F", bound=Callable[..., Any])
MARK = "__rocm_release_fail_fast__"


def fail_fast(method: F) -> F:
    """Wrap an operator method so that a FatalError fails the task without retry."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except FatalError as exc:
            raise AirflowFailException(f"{self.task_id}: {exc}") from exc

    setattr(wrapper, MARK, True)
    return wrapper  # type: ignore[return-value]


def is_fail_fast(method: object) -> bool:
    """True when ``method`` went through :func:`fail_fast` (for the policy test)."""
    return bool(getattr(method, MARK, False))
