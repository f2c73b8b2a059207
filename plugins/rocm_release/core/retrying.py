"""Retrying one idempotent operation through transient errors, with backoff, until a deadline.

A registry or store blip must not fail the night: with vLLM a failed build task throws away hours of
build. So every push, copy and upload is retried *inside* its task, one idempotent operation at a
time (one ``docker push`` of an image already built, one image copy or tag, one wheel upload and its
read-back, one index page), never the whole task and never the build itself.

Only a :class:`~rocm_release.core.errors.TransientError` is retried (outage, timeout, 429, 5xx).
A :class:`~rocm_release.core.errors.FatalError` (401/403, a digest mismatch, bad input) and every
other exception go up at once: asking again will not help, or we do not know that it will.

The wait doubles from ``first_delay`` up to ``max_delay`` and never runs past the window: the last
attempt starts at the deadline at the latest. When the window is over, :class:`RetriesExhausted`
(itself transient, so the task's own Airflow retries still apply) names the operation, the number
of attempts and the last error. The clock and the sleep are injectable: the policy's tests need no
real waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from rocm_release.core.errors import TransientError

T = TypeVar("T")
Log = Callable[[str], None]

DEFAULT_WINDOW_SECONDS = 600
DEFAULT_FIRST_DELAY_SECONDS = 2
DEFAULT_MAX_DELAY_SECONDS = 60


class RetriesExhausted(TransientError):
    """An operation still failed transiently when its retry window ended; the message says what,
    how many attempts over how long, and the last error (the ``__cause__``)."""

    def __init__(self, what: str, attempts: int, seconds: float, last: TransientError) -> None:
        self.what = what
        self.attempts = attempts
        self.last = last
        super().__init__(f"{what}: still failing after {attempts} attempt{'s' if attempts != 1 else ''} "
                         f"over {seconds:.0f} s (retry window): {last}")


def _ignore(_: str) -> None:
    """A log that drops its lines."""


def one_line(error: BaseException) -> str:
    """An error on one log line: a multi-line message (``docker push``'s output tail) as its first and last line."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if len(lines) < 2 else f"{lines[0]} … {lines[-1]}"


@dataclass(frozen=True)
class Retrying:
    """Call an operation until it succeeds, fails fatally, or the window (seconds) is over.

    ``Retrying(window_seconds=0)`` tries once (transient errors then go up unchanged).
    """

    window_seconds: float = DEFAULT_WINDOW_SECONDS
    first_delay_seconds: float = DEFAULT_FIRST_DELAY_SECONDS
    max_delay_seconds: float = DEFAULT_MAX_DELAY_SECONDS
    log: Log = field(default=_ignore, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def __post_init__(self) -> None:
        first, cap = self.first_delay_seconds, self.max_delay_seconds
        if self.window_seconds < 0 or first <= 0 or cap < first:
            raise ValueError(f"retry: need window >= 0 and 0 < first delay <= max delay, got {self.window_seconds}, "
                             f"{self.first_delay_seconds}, {self.max_delay_seconds}")

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1, 2, …), before the window is applied."""
        return float(min(self.max_delay_seconds, self.first_delay_seconds * 2 ** min(attempt - 1, 62)))

    def __call__(self, what: str, operation: Callable[[], T]) -> T:
        """``operation()``, retried through TransientError until the window ends; ``what`` names it in logs."""
        started = self.clock()
        deadline = started + self.window_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                return operation()
            except TransientError as exc:
                left = deadline - self.clock()
                if self.window_seconds == 0:
                    raise
                if left <= 0:
                    self.log(f"{what}: attempt {attempt} failed ({one_line(exc)}); the retry window of "
                             f"{self.window_seconds:.0f} s is over, giving up")
                    raise RetriesExhausted(what, attempt, self.clock() - started, exc) from exc
                wait = min(self.delay(attempt), left)
                self.log(f"{what}: attempt {attempt} failed ({one_line(exc)}); retrying in {wait:.1f} s "
                         f"({left:.0f} s of the retry window left)")
                self.sleep(wait)

    def logging_to(self, log: Log) -> Retrying:
        """The same policy, logging each failed attempt to ``log``."""
        return replace(self, log=log)


ONCE = Retrying(window_seconds=0)
"""No retry: one attempt (the default of adapters called without a policy)."""
