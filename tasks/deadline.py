"""Every check stops at its request's deadline: where the deadline comes from, how a check reads it, and
how the worker ends a check that does not stop by itself.

**The deadline.** A task's deadline is its Celery ``expires`` (the gateway publishes every task with
``expires`` = the caller's deadline; beat with its entry's expiry); a task without one gets its type's
``max_timeout``, counted from when it starts. `task_body` wraps every registered check, built-in or
plugin, so that it runs under that deadline (`call_within`): a function that declares a ``deadline``
parameter receives it (epoch seconds), and any code of the check may ask `remaining()`. Built-in checks
read it through ``_common.Probe``.

**Stopping by itself** (cooperative). Built-in checks bound each blocking call by the time left (socket
timeouts, a c-ares lookup) and answer ``ok: false, reason: timeout`` a little *before* the deadline, so
the caller gets that answer rather than a 504. `sleep` (here, used by the ``sleep`` check) waits at most
until the deadline and then raises `DeadlineExceeded`.

**Being ended** (enforced). A check still running `GRACE` seconds after its deadline is interrupted: an
exception (`_Interrupt`, a ``BaseException`` so that a plugin's ``except Exception`` does not swallow it)
is raised once in the thread that runs it, and `call_within` turns it into `DeadlineExceeded`. How it is
raised depends on where the task runs:

- a pool thread (``-P threads``): one watchdog thread per process (started by the first task, parked when
  no task ran for `LINGER` s) looks at the running tasks every `TICK` s and raises the exception in a
  late one's thread with ``PyThreadState_SetAsyncExc``, under the lock that ends a run, so it never lands
  in Celery's own code after the check returned;
- a process's main thread (prefork children, ``-P solo``, direct calls): a one-shot ``ITIMER_REAL`` timer
  whose SIGALRM handler raises it. A signal also breaks a blocking system call (``time.sleep``, ``recv``:
  PEP 475 runs the handler, whose exception propagates), which an asynchronous exception cannot;
- prefork also gets a hard limit, Celery's own (`DeadlineRequest`: the deadline + `GRACE` +
  `HARD_GRACE`): the pool kills the child and stores ``TimeLimitExceeded``. It is the backstop for C code
  that never returns to the interpreter. gevent/eventlet pools enforce that hard limit (with
  ``gevent.Timeout``) and nothing else: neither mechanism above is safe with greenlets, so both stand down.

Why not Celery's time limits alone: only prefork (and, hard only, gevent/eventlet) enforces them, the
threads pool ignores them (notes/celery-internals.md §4); they are set per task type or per message (the
``timelimit`` header, which beat does not send) rather than from ``expires``; they count from when a child
accepted the job, not from the deadline; and the soft one raises ``SoftTimeLimitExceeded``, an
``Exception`` any ``except Exception`` swallows. So the soft end is ours and the hard one Celery's.

**The outcome** of a check that did not finish by its deadline is ``DeadlineExceeded``: a FAILURE
(listed in the tasks' ``throws``: the worker logs it at INFO, without a traceback) that the gateway answers
504 like its own deadline, ``TimeLimitExceeded`` and an expired task (``gateway.http_api.task_answer``).
By then the caller already had the gateway's 504 with the id; ``/result/<id>`` then says what happened.
Non-idempotent checks stay at most once: they are acknowledged before they run, a copy the broker
delivers again (an ack lost with its host) is not run (`tasks.run_once`), and an ended task is a
FAILURE, which Celery acknowledges (``task_acks_on_failure_or_timeout``) rather than redelivers.

**Limits.** An asynchronous exception is raised between bytecodes: a pool thread inside one blocking C
call (``time.sleep(60)``, a ``recv`` without timeout) sees it only when the call returns, and a check that
catches ``BaseException`` can swallow it (it is raised once). So built-in checks bound their own blocking
calls, and plugins should use `sleep`/`remaining` or short timeouts. A long C computation that holds the
GIL (``sum(range(10**11))``) stalls every thread of its process, and nothing ends it there; on prefork the
hard limit does. An interrupt lands wherever the check's Python code is, like KeyboardInterrupt: ``with``
and ``finally`` clean up, a library caught between two statements of its own bookkeeping may not. Plugins
must not use SIGALRM themselves.

**Cost** (2-core dev VM shared with other jobs, Python 3.11; ``python -m bench.deadline_cost micro``):
`call_within` adds 1.3-1.9 µs per task in a pool thread (a dict write, one lock) and 2.4-3.6 µs in a
main thread (two ``setitimer`` calls); `DeadlineRequest.time_limits` adds 2 µs per task in the consumer,
and on prefork the hard limit's timer (kombu ``call_later`` + cancel) about 4 µs in the parent. A worker
spends 1,500-2,300 µs of CPU per no-op task. ``python -m bench.deadline_cost drain`` of this checkout and
of the one before, alternately in one run, 5 rounds of 3,000 ``add`` tasks on prefork -c 2: median 373
vs 363 tasks/s and 2,117 vs 1,953 µs of worker CPU per task, inside the ±25 % spread between rounds on
this machine; 3 rounds of 5,000 ``sleep ms=0`` on threads -c 100 likewise (CPU ratio 0.81-1.10).
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celery.worker.request import Request

from tasks.results import DEFAULT_MAX_RESULT_BYTES, bounded_result
from tasks.run_once import claim_or_ignore

if TYPE_CHECKING:
    from tasks.registry import CheckType

# A check still running this long after its deadline is interrupted: time for a cooperative check (which
# stops at the deadline) to store its own answer first.
GRACE = 0.5
# On prefork, the child is killed this long after the interrupt (Celery's hard time limit).
HARD_GRACE = 2.0
# How often the watchdog looks at the running tasks, and how long it keeps looking once none runs.
TICK = 0.1
LINGER = 5.0


class DeadlineExceeded(Exception):
    """The check did not finish by its request's deadline (the task's FAILURE; the gateway answers 504)."""


class _Interrupt(BaseException):
    """Raised in a check's thread at its deadline + GRACE; `call_within` turns it into DeadlineExceeded."""


def deadline_of(expires: str | datetime | None) -> float | None:
    """A task's ``expires`` header as epoch seconds (naive values are UTC, as Celery reads them)."""
    if expires is None:
        return None
    when = expires if isinstance(expires, datetime) else datetime.fromisoformat(expires)
    if when.tzinfo is None:
        return (when - datetime(1970, 1, 1)).total_seconds()
    return when.timestamp()


class _Run:
    """One check running under its deadline, in one thread."""

    __slots__ = ("deadline", "done", "fired", "kill_at", "thread")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline  # epoch seconds
        self.kill_at = time.monotonic() + (deadline - time.time()) + GRACE
        self.thread = threading.get_ident()
        self.fired = False  # the interrupt was raised, or is pending, in `thread`
        self.done = False


_local = threading.local()


def current() -> float | None:
    """The deadline (epoch seconds) of the check running in this thread, or None outside one."""
    run: _Run | None = getattr(_local, "run", None)
    return None if run is None else run.deadline


def remaining() -> float | None:
    """Seconds left until this thread's check deadline (negative once passed), or None outside a check."""
    deadline = current()
    return None if deadline is None else deadline - time.time()


def sleep(seconds: float) -> None:
    """Sleep `seconds`, or until the running check's deadline when that comes first: then raise
    `DeadlineExceeded` (the work asked for was not done in time)."""
    left = remaining()
    if left is not None and left < seconds:
        time.sleep(max(left, 0.0))
        raise DeadlineExceeded("stopped at its deadline")
    time.sleep(seconds)


# --- ending a check that does not stop ------------------------------------------------------------

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc


def _raise_in(thread: int, exc: type[BaseException] | None) -> None:
    """Raise `exc` in `thread` at its next bytecode boundary; None clears one not raised yet."""
    # No argtypes: None then goes to C as NULL (clear), not as Py_None.
    _set_async_exc(ctypes.c_ulong(thread), None if exc is None else ctypes.py_object(exc))


class _Watchdog:
    """Interrupts pool threads whose check is past its deadline + GRACE (one per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Thread id -> its run. Each thread writes only its own key; the watchdog reads a snapshot.
        self._runs: dict[int, _Run] = {}
        self._wake = threading.Event()
        self._parked = False
        self._wake.set()
        threading.Thread(target=self._watch, name="checkgate-deadline", daemon=True).start()

    def arm(self, run: _Run) -> None:
        self._runs[run.thread] = run
        if self._parked:  # read after the write above, as _watch re-reads _runs after parking
            self._unpark()

    def disarm(self, run: _Run) -> None:
        # Under the lock: once `done` is set no interrupt can be sent, and one sent but not yet raised
        # is withdrawn, so none outlives the run.
        with self._lock:
            run.done = True
            if self._runs.get(run.thread) is run:
                del self._runs[run.thread]
            if run.fired:
                _raise_in(run.thread, None)

    def _unpark(self) -> None:
        with self._lock:
            self._parked = False
            self._wake.set()

    def _watch(self) -> None:
        idle = 0.0
        while True:
            self._wake.wait()
            time.sleep(TICK)
            with self._lock:
                now = time.monotonic()
                runs = tuple(self._runs.values())
                for run in runs:
                    if not run.fired and not run.done and run.kill_at <= now:
                        run.fired = True
                        _raise_in(run.thread, _Interrupt)
            idle = 0.0 if runs else idle + TICK
            if idle >= LINGER:  # nothing ran for a while: wait for the next run instead of ticking
                idle = 0.0
                with self._lock:
                    self._parked = True
                    self._wake.clear()
                if self._runs:
                    self._unpark()


class _Alarm:
    """Interrupts the main thread with a one-shot SIGALRM timer (prefork children, solo, direct calls)."""

    def __init__(self) -> None:
        signal.signal(signal.SIGALRM, self._fire)

    def arm(self, run: _Run) -> None:
        signal.setitimer(signal.ITIMER_REAL, max(run.kill_at - time.monotonic(), 0.001))

    def disarm(self, run: _Run) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        run.done = True

    @staticmethod
    def _fire(signum: int, frame: Any) -> None:
        run: _Run | None = getattr(_local, "run", None)
        # Only our own timer's signal, once, and only while the check runs.
        if run is not None and not run.done and not run.fired and time.monotonic() >= run.kill_at - 0.01:
            run.fired = True
            raise _Interrupt


_watchdog: _Watchdog | None = None
_watchdog_lock = threading.Lock()


def _forget_watchdog() -> None:
    global _watchdog
    _watchdog = None  # its thread did not survive the fork


os.register_at_fork(after_in_child=_forget_watchdog)


def _greenlets() -> bool:
    """Whether threads are gevent/eventlet greenlets here (then the pool's hard limit is all there is)."""
    gevent = sys.modules.get("gevent.monkey")
    if gevent is not None and gevent.is_module_patched("threading"):
        return True
    eventlet = sys.modules.get("eventlet.patcher")
    return eventlet is not None and bool(eventlet.is_monkey_patched("thread"))


def _enforcer() -> _Watchdog | _Alarm | None:
    """How this thread's checks are ended, decided once per thread."""
    global _watchdog
    if _greenlets():
        return None
    if threading.current_thread() is threading.main_thread():
        return _Alarm()  # a signal timer survives a fork (the timer itself is per process and not armed)
    with _watchdog_lock:
        if _watchdog is None:
            _watchdog = _Watchdog()
        return _watchdog


_NOT_SET = object()


def call_within(deadline: float, fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
    """Run ``fn(**kwargs)`` as a check whose deadline is `deadline` (epoch seconds).

    Returns what `fn` returns; raises what it raises, but `DeadlineExceeded` when it was still running at
    the deadline + `GRACE` and was ended then (whatever it raised on the way out is the cause).
    """
    if getattr(_local, "run", None) is not None:
        return fn(**kwargs)  # a check calling another check's task in-line: the outer run bounds both
    run = _Run(deadline)
    enforcer = getattr(_local, "enforcer", _NOT_SET)
    if enforcer is _NOT_SET:
        enforcer = _local.enforcer = _enforcer()
    _local.run = run
    try:
        try:
            if enforcer is not None:
                enforcer.arm(run)
            return fn(**kwargs)
        finally:
            if enforcer is not None:
                enforcer.disarm(run)
    except BaseException as exc:
        # The interrupt is raised at most once; by now it was raised (and maybe cut the disarm above
        # short) or withdrawn, so this handler cannot be interrupted.
        if not run.fired:
            raise
        if enforcer is not None:
            enforcer.disarm(run)
        late = f"ended by the worker {GRACE:g}s after its deadline: the check did not stop by itself"
        raise DeadlineExceeded(late) from (None if isinstance(exc, _Interrupt) else exc)
    finally:
        _local.run = None


def task_deadline(expires: str | datetime | None, max_timeout: float) -> float:
    """The deadline (epoch seconds) of a task with this ``expires``: it, or `max_timeout` from now."""
    deadline = deadline_of(expires)
    return time.time() + max_timeout if deadline is None else deadline


def task_body(check: CheckType) -> Callable[..., Any]:
    """The function Celery runs for `check` (a bound task): the check under its request's deadline; for a
    check declared not idempotent, only if its task id was never claimed (`tasks.run_once`); its result
    held to what can be stored (`tasks.results.bounded_result`: encodable by the app's
    ``result_serializer``, at most ``checkgate_max_result_bytes`` encoded)."""
    fn, max_timeout, wants_deadline = check.fn, check.max_timeout, check.wants_deadline
    once = not check.idempotent

    @functools.wraps(fn)
    def run(self: Any, **kwargs: Any) -> Any:
        deadline = task_deadline(self.request.expires, max_timeout)
        if once:
            claim_or_ignore(self, deadline)  # a redelivered copy of a run-once check is not run again
        if wants_deadline:
            kwargs["deadline"] = deadline
        result = call_within(deadline, fn, kwargs)
        conf = self.app.conf
        return bounded_result(
            result, conf.result_serializer, conf.get("checkgate_max_result_bytes", DEFAULT_MAX_RESULT_BYTES)
        )

    return run


class DeadlineRequest(Request):
    """Celery's request whose hard time limit follows the deadline (enforced by prefork, gevent, eventlet;
    ignored by the threads pool). A ``timelimit`` the sender set still applies when it is shorter."""

    @property
    def time_limits(self) -> tuple[float | None, float | None]:
        hard, soft = self.__dict__.get("_sent_time_limits") or (None, None)
        if self.expires is not None:
            left = (self.expires - datetime.now(UTC)).total_seconds()
        else:
            left = getattr(self._task, "check_max_timeout", None)
        if left is not None:
            ours = max(left, 0.0) + GRACE + HARD_GRACE
            hard = ours if hard is None else min(hard, ours)
        return hard, soft

    @time_limits.setter
    def time_limits(self, value: tuple[float | None, float | None]) -> None:
        self.__dict__["_sent_time_limits"] = value
