"""The retry policy of every push, copy and upload (core.retrying), on a fake clock: no real waiting."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rocm_release.core.config import ConfigError, parse_config
from rocm_release.core.errors import FatalError, TransientError
from rocm_release.core.retrying import ONCE, RetriesExhausted, Retrying
from tests.support.demo import DEMO_CONFIG


class FakeTime:
    """A clock that only moves when slept on (or when an operation says it took time)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Outage(TransientError):
    pass


class Refused(FatalError):
    pass


def failing(times: int, error: Exception, result: str = "done") -> tuple[Callable[[], str], list[int]]:
    """An operation that raises ``error`` on its first ``times`` calls, then returns ``result``."""
    calls: list[int] = []

    def operation() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return result

    return operation, calls


def policy(fake: FakeTime, window: float = 300, first: float = 2, cap: float = 30,
           lines: list[str] | None = None) -> Retrying:
    return Retrying(window_seconds=window, first_delay_seconds=first, max_delay_seconds=cap,
                    log=(lines.append if lines is not None else print), clock=fake.clock, sleep=fake.sleep)


def test_a_transient_error_is_retried_until_the_operation_succeeds() -> None:
    fake, lines = FakeTime(), []
    operation, calls = failing(4, Outage("127.0.0.1:5101: connection refused"))
    assert policy(fake, lines=lines)("push of x:1", operation) == "done"
    assert len(calls) == 5
    assert fake.sleeps == [2, 4, 8, 16]  # doubling from the first delay
    assert len(lines) == 4
    assert lines[0].startswith("push of x:1: attempt 1 failed (127.0.0.1:5101: connection refused); retrying in 2.0 s")


def test_the_wait_is_capped() -> None:
    fake = FakeTime()
    operation, _ = failing(7, Outage("503"))
    policy(fake, window=10_000, first=2, cap=30)("copy", operation)
    assert fake.sleeps == [2, 4, 8, 16, 30, 30, 30]


def test_retrying_stops_when_the_window_is_over_naming_what_and_how_many_attempts() -> None:
    fake, lines = FakeTime(), []
    last = Outage("127.0.0.1:5101: connection refused")
    operation, calls = failing(10_000, last)
    with pytest.raises(RetriesExhausted) as caught:
        policy(fake, window=60, first=2, cap=30, lines=lines)("docker push of cache/x:tag", operation)
    # 2 + 4 + 8 + 16 = 30 s, then 30 s more reaches the deadline exactly: a last attempt at the deadline.
    assert fake.sleeps == [2, 4, 8, 16, 30]
    assert len(calls) == 6
    error = caught.value
    assert isinstance(error, TransientError), "still transient: the task's own Airflow retries apply"
    assert error.attempts == 6 and error.__cause__ is last
    assert str(error) == ("docker push of cache/x:tag: still failing after 6 attempts over 60 s (retry window): "
                          "127.0.0.1:5101: connection refused")
    assert "giving up" in lines[-1]


def test_no_wait_runs_past_the_deadline() -> None:
    fake = FakeTime()
    operation, _ = failing(10_000, Outage("timeout"))
    with pytest.raises(RetriesExhausted):
        policy(fake, window=7, first=5, cap=5)("upload", operation)
    assert fake.sleeps == [5, 2]
    assert fake.now == 1007


def test_an_operation_slower_than_the_window_is_tried_once_more_only_if_time_is_left() -> None:
    fake = FakeTime()
    calls: list[int] = []

    def slow() -> str:
        calls.append(1)
        fake.now += 400  # the attempt itself outlasts the window
        raise Outage("read timeout")

    with pytest.raises(RetriesExhausted) as caught:
        policy(fake, window=300)("upload", slow)
    assert len(calls) == 1 and fake.sleeps == [] and caught.value.attempts == 1


def test_a_fatal_error_is_not_retried() -> None:
    fake = FakeTime()
    operation, calls = failing(1, Refused("127.0.0.1:5101/x: 401 unauthorized"))
    with pytest.raises(Refused):
        policy(fake)("push", operation)
    assert len(calls) == 1 and fake.sleeps == []


def test_an_error_of_neither_kind_is_not_retried() -> None:
    fake = FakeTime()
    operation, calls = failing(1, ValueError("bad input"))
    with pytest.raises(ValueError):
        policy(fake)("push", operation)
    assert len(calls) == 1 and fake.sleeps == []


def test_a_window_of_zero_tries_once_and_raises_the_error_itself() -> None:
    outage = Outage("503")
    operation, calls = failing(1, outage)
    with pytest.raises(Outage) as caught:
        ONCE("push", operation)
    assert caught.value is outage and len(calls) == 1


def test_the_config_has_a_window_of_at_least_five_minutes_by_default() -> None:
    config = parse_config(DEMO_CONFIG.read_text(), str(DEMO_CONFIG), repo_root="/repo")
    assert config.retry.window_seconds >= 300
    retrying = config.retry.retrying(print)
    assert (retrying.window_seconds, retrying.first_delay_seconds, retrying.max_delay_seconds) == (
        config.retry.window_seconds, config.retry.first_delay_seconds, config.retry.max_delay_seconds)


@pytest.mark.parametrize(("retry", "message"), [
    ({"window_seconds": -1}, "retry.window_seconds: Input should be greater than or equal to 0"),
    ({"window_seconds": 100_000}, "retry.window_seconds: Input should be less than or equal to 21600"),
    ({"first_delay_seconds": 0}, "retry.first_delay_seconds: Input should be greater than or equal to 1"),
    ({"first_delay_seconds": 20, "max_delay_seconds": 10}, "first_delay_seconds (20) must not exceed"),
    ({"window": 60}, "retry.window: unknown key"),
])
def test_bad_retry_settings_fail_when_the_config_is_read(retry: dict[str, int], message: str) -> None:
    text = DEMO_CONFIG.read_text() + f"retry: {retry}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "demo.yaml", repo_root="/repo")
    assert message in str(caught.value)


def test_a_multi_line_error_is_logged_on_one_line() -> None:
    fake, lines = FakeTime(), []
    error = Outage("docker push of r/x:t failed with exit code 1:\nThe push refers to repository [r/x]\n"
                   'Get "http://r/v2/": dial tcp r: connect: connection refused\n')
    operation, _ = failing(1, error)
    policy(fake, lines=lines)("docker push of r/x:t", operation)
    assert lines == ['docker push of r/x:t: attempt 1 failed (docker push of r/x:t failed with exit code 1: … '
                     'Get "http://r/v2/": dial tcp r: connect: connection refused); retrying in 2.0 s '
                     '(300 s of the retry window left)']
