"""The bytes the checks of one worker process may hold at once for what targets send (issue #11, F10).

A caller sets how much of a response body the http check reads (``max_body_bytes``, up to 10 MiB, plus
the text it is decoded into for ``body_match``: up to 8 times the body more), and a worker runs up to
its concurrency of checks at once (100 threads for http). Measured (2-core dev VM; tests/checks/
test_budget.py's `run_many`: checks at once in one fresh process, each a 4 MiB windows-1252 body matched
by ``body_match``, peak RSS as VmHWM): 12 checks grew the process by 135 MiB on the code before the
budget and by 173 MiB with no budget (``CHECKGATE_BODY_BUDGET_BYTES=100 GB``), by 27 MiB with 64 MiB;
24 checks by 127 MiB unbounded, 32 MiB with 64 MiB, 60 MiB with 128 MiB, every check answered within
0.6 s. Each check reserves what it may hold from one budget per process before it
connects, and gives back what its body turns out not to need once read.

- **The budget**: ``CHECKGATE_BODY_BUDGET_BYTES`` (default `DEFAULT_BUDGET`, 128 MiB), per worker process.
  The default is what the largest check the http schema allows may need, so no valid request is refused
  outright: a 10 MiB body that is not UTF-8, decoded for ``body_match``, reserves 92 MiB (`http`'s
  `read_reservation` and `TEXT_BYTES_PER_BODY_BYTE`, measured with tracemalloc). Most bodies need far
  less: one that is ASCII or valid UTF-8 is searched as it is, ~1.1x its size.
- **Free below a floor**: the first `FLOOR` bytes (512 KiB) of every reservation are not counted: what a
  check of default sizes holds (64 KiB of body and its text) stays bounded by the worker's concurrency
  as before, and a caller who holds the budget with slow large-body checks cannot make ordinary checks
  wait. Only what a caller asks beyond the defaults is drawn from the budget.
- **Waiting, bounded by the deadline**: a check whose reservation does not fit waits for other checks
  to give theirs back, at most until its own deadline; then it answers ``ok: false``, ``reason:
  body_budget`` (nothing was sent to the target). A reservation larger than the whole budget answers
  that at once. We wait rather than read a smaller part of the body, which would turn a body assertion
  into a false failure (or a false success for ``body_not_match``) without the caller knowing.
- Other checks buffer fixed, small amounts and take no reservation: tcp's reply is at most 64 KiB, a dns
  answer 64 KiB, a TLS peer's certificates ~100 KiB (OpenSSL's bound).

Own code (a condition variable around a counter): no library offers a byte-weighted semaphore with a
timeout; threading.Semaphore counts one unit per acquire.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tasks.checks._common import Deadline, ProbeFailure

BUDGET_ENV = "CHECKGATE_BODY_BUDGET_BYTES"
DEFAULT_BUDGET = 128 * 1024 * 1024
FLOOR = 512 * 1024
REASON = "body_budget"


class Reservation:
    """Bytes held from a `ByteBudget` (beyond its floor) until the `ByteBudget.reserve` block ends."""

    def __init__(self, budget: ByteBudget, counted: int) -> None:
        self._budget = budget
        self.counted = counted

    def shrink(self, nbytes: int) -> None:
        """Hold only `nbytes` (less the floor) from now on, when that is less: give the rest back at once.
        Never waits: a check reserves its worst case first and gives back what it turned out not to need,
        so no check ever waits for more while holding some (two that did could wait for each other)."""
        counted = max(0, nbytes - self._budget.floor)
        if counted < self.counted:
            self._budget._give_back(self.counted - counted)
            self.counted = counted


class ByteBudget:
    """`total` bytes that reservations (`reserve`) share, each free up to `floor` bytes."""

    def __init__(self, total: int, floor: int = FLOOR) -> None:
        self.total = total
        self.floor = floor
        self.held = 0  # bytes reserved now, beyond the floors
        self._changed = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int, deadline: Deadline, what: str) -> Iterator[Reservation]:
        """Hold `nbytes` (less the floor) of the budget for the block's duration; yields the `Reservation`.

        Waits for them until `deadline` at most; raises `ProbeFailure` (``body_budget``) then, or at once
        when they exceed the whole budget. `what` names the request in the detail (``max_body_bytes=…``).
        Reserve once per check, the most it may hold, then `Reservation.shrink`.
        """
        counted = max(0, nbytes - self.floor)
        if counted > self.total:
            raise ProbeFailure(
                REASON, f"{what} needs {nbytes} bytes, more than this worker's body budget ({self.total} bytes)"
            )
        if counted:
            began = time.monotonic()
            with self._changed:
                fits = self._changed.wait_for(
                    lambda: self.held + counted <= self.total, timeout=max(deadline.at - time.monotonic(), 0.0)
                )
                if not fits:
                    raise ProbeFailure(
                        REASON,
                        f"{what} needs {nbytes} bytes; waited {time.monotonic() - began:.1f}s for them, this "
                        f"worker's body budget ({self.total} bytes) being held by other checks",
                    )
                self.held += counted
        reservation = Reservation(self, counted)
        try:
            yield reservation
        finally:
            if reservation.counted:
                self._give_back(reservation.counted)

    def _give_back(self, counted: int) -> None:
        with self._changed:
            self.held -= counted
            self._changed.notify_all()


_process_budget: tuple[int, ByteBudget] | None = None
_lock = threading.Lock()


def process_budget() -> ByteBudget:
    """This process's budget: ``CHECKGATE_BODY_BUDGET_BYTES`` (default 128 MiB, at least 1 MiB), made at
    first use, again when the variable changes. Raises `gateway.config.ConfigError` for a malformed value."""
    global _process_budget
    from gateway.config import env_number  # the workers' settings use the gateway's parsing (celeryconfig too)

    total = env_number(BUDGET_ENV, DEFAULT_BUDGET, minimum=1024 * 1024)
    with _lock:
        if _process_budget is None or _process_budget[0] != total:
            _process_budget = total, ByteBudget(total)
        return _process_budget[1]
