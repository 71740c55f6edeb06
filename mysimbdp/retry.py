"""The one retry helper: try, and on an error that means "not now", wait a growing delay and try again.

    session = retry(lambda: db.connect(cfg), on=(CassandraUnavailable,), stop=self.stop)

The delay starts at ``initial`` and doubles up to ``maximum``. The loop ends with the result, or by
raising the last error when ``deadline`` (seconds from now) passes, or with :class:`Stopped` when ``stop``
is set (an Event, or a callable returning true). Anything not in ``on`` is raised at once: a bug is not
retried. :func:`backoff` is the same schedule for work that is put back rather than waited for.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class Stopped(Exception):
    """The caller asked the retries to stop (a daemon is shutting down)."""


def backoff(attempt: int, initial: float = 1.0, maximum: float = 15.0) -> float:
    """The wait before retry number ``attempt + 1`` (``attempt`` from 0): ``initial`` doubled each time."""
    return min(initial * 2 ** max(attempt, 0), maximum)


def retry(
    attempt: Callable[[], T],
    *,
    on: tuple[type[BaseException], ...],
    initial: float = 1.0,
    maximum: float = 15.0,
    deadline: float | None = None,
    stop: threading.Event | Callable[[], bool] | None = None,
    what: str = "",
    between: Callable[[], None] | None = None,
) -> T:
    """``attempt()`` until it returns (see the module's docstring). ``what`` names it in the log;
    ``between`` runs before each new try (e.g. to nudge a service)."""
    until = None if deadline is None else time.monotonic() + deadline
    is_stopped = stop.is_set if isinstance(stop, threading.Event) else (stop or (lambda: False))
    tries = 0
    while True:
        if is_stopped():
            raise Stopped(what)
        try:
            return attempt()
        except on as exc:
            delay = backoff(tries, initial, maximum)
            if until is not None and time.monotonic() + delay > until:
                raise
            if what:
                log.warning("%s: %s; trying again in %.1fs", what, _describe(exc), delay)
            if isinstance(stop, threading.Event):
                stop.wait(delay)
            else:
                time.sleep(delay)
            tries += 1
            if between is not None:
                between()


def _describe(exc: BaseException) -> str:
    one_line = getattr(exc, "one_line", None)
    return one_line() if callable(one_line) else f"{type(exc).__name__}: {exc}"
