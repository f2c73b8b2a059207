"""The one error policy, as two kinds of exception every module raises through.

* :class:`FatalError` — asking again will not help: bad input (config, Params), credentials
  refused (401/403), an unknown commit or ref, a digest or checksum mismatch, an answer we cannot
  read. The Airflow layer fails the task at once, without retry, with a message naming what and where.
* :class:`TransientError` — an outage, a timeout, throttling (429), a 5xx: the same question may
  get an answer later. Sensors poke again; other tasks fail the try and Airflow retries them as
  configured.

An error is never "absent": only a definitive answer (404 and the like) is. Exceptions of neither
kind (a bug) follow the task's retries, like a transient one.
"""

from __future__ import annotations


class FatalError(Exception):
    """Retrying will not help; a person must act. The message names what and where."""


class TransientError(Exception):
    """The service did not answer definitively; asking again later may succeed."""


class HandOffError(FatalError):
    """An upstream task left no (or an unusable) XCom: the run's own data is inconsistent."""


MAX_SHOWN = 80


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters: a hostile 1 MB input is never echoed whole."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
