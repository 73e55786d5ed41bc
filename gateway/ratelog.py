"""Log lines for errors that repeat, at a bounded rate: one line per kind per interval, with a count.

A flood of the same fault (accept failing at EMFILE, thousands of malformed requests, every publish
failing while the broker is away) must not turn into a flood of log lines: at EMFILE the gateway once
logged ~11,500 tracebacks a second. `RateLimitedLog` writes the first occurrence of a kind at once, then
at most one line per `interval` seconds for that kind, and that line says how many were left out since
the previous one. Kinds are a small fixed set named by the caller (never built from request data), so
its table stays small. No library does this for the standard `logging` module (a filter would have to
count per message template; this counts per fault kind, which is what an operator reads).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """At most one line per kind per `interval` seconds on `logger`; the next one counts the left-out."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval = interval
        self._clock = clock
        # kind -> [time of its last line, occurrences left out since]
        self._kinds: dict[str, list[float]] = {}

    def log(self, level: int, kind: str, message: str, *args: object, exc_info: bool = False) -> bool:
        """Log `message % args` unless a line of `kind` was written less than `interval` s ago.

        Returns whether a line was written.
        """
        now = self._clock()
        state = self._kinds.get(kind)
        if state is not None and now - state[0] < self.interval:
            state[1] += 1
            return False
        if state is not None and state[1]:
            message += " (%d more like it in the last %.0f s)"
            args = (*args, int(state[1]), now - state[0])
        self._kinds[kind] = [now, 0]
        self.logger.log(level, message, *args, exc_info=exc_info)
        return True

    def suppressed(self, kind: str) -> int:
        """Occurrences of `kind` left out since its last line."""
        state = self._kinds.get(kind)
        return int(state[1]) if state else 0
