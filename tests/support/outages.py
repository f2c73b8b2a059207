"""Outages of a throwaway service, driven by what the code under test logs (no sleeps as synchronisation).

``Outage`` stops a service (a ``LocalRegistry``, or anything with ``start``/``stop``) either at once or
when a chosen log line appears (e.g. BuildKit's ``naming to …``: the image is built, the push is next;
or ``[DAG TEST] starting task_id=…`` in an ``airflow dags test`` run's output), and starts it again a
fixed number of seconds after the first failed attempt the retry policy logs (``core.retrying``:
``…: attempt 1 failed (…)``), or after the stop (``from_stop=True``: an outage of a fixed length).
Starting it again is the event the code under test waits for; the timer only decides when that event
happens. Never use it on the shared services.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

FIRST_FAILURE = ": attempt 1 failed ("


class Service(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Outage:
    """One outage of ``service``: down from ``stop_on`` (a log line containing it; None: from now), up
    again ``seconds`` after the first failed attempt. ``log`` is the code under test's log callback."""

    service: Service
    seconds: float
    stop_on: str | None = None
    from_stop: bool = False
    lines: list[str] = field(default_factory=list)
    stopped_at: float | None = None
    restarted_at: float | None = None
    errors: list[BaseException] = field(default_factory=list)
    _timer: threading.Timer | None = None

    def __post_init__(self) -> None:
        if self.stop_on is None:
            self._stop()

    def _stop(self) -> None:
        self.service.stop()
        self.stopped_at = time.monotonic()
        if self.from_stop:
            self._schedule_restart()

    def _schedule_restart(self) -> None:
        self._timer = threading.Timer(self.seconds, self._restart)
        self._timer.start()

    def _restart(self) -> None:
        try:
            self.service.start()
            self.restarted_at = time.monotonic()
        except BaseException as exc:  # noqa: BLE001 - reported by check(), not lost in the timer thread
            self.errors.append(exc)

    def log(self, line: str) -> None:
        self.lines.append(line)
        if self.stop_on is not None and self.stopped_at is None and self.stop_on in line:
            self._stop()
        if self._timer is None and self.stopped_at is not None and FIRST_FAILURE in line:
            self._schedule_restart()

    def finish(self) -> None:
        """Wait for the restart (if one was scheduled), start the service if it is still down, and
        re-raise what the restart met."""
        if self._timer is not None:
            self._timer.join()
        if self.stopped_at is not None and self.restarted_at is None:
            self._restart()
        if self.errors:
            raise self.errors[0]

    @property
    def down_seconds(self) -> float:
        """How long the service was down (until now if it is still down)."""
        assert self.stopped_at is not None, "the outage never started"
        return (self.restarted_at or time.monotonic()) - self.stopped_at

    def failed_attempts(self, what: str = "") -> list[str]:
        """The retry policy's lines about failed attempts (of operations whose name contains ``what``)."""
        return [line for line in self.lines if ": attempt " in line and " failed (" in line and what in line]
