"""Check types only the tests load (through CHECKGATE_CHECK_MODULES), to exercise failure paths."""

import os
import time

import redis

from tasks.checks import NETWORK_ERRORS, Probe, classify, connect, host_param, port_param
from tasks.registry import Param, check


@check(params=(Param("code", int, default=42, min=0, max=1000),), queue="boom", default_timeout=10.0, max_timeout=30.0)
def boom(code: int) -> None:
    """Always raise, so the gateway's 502 path can be seen."""
    raise ValueError(f"boom {code}")


_redis: redis.Redis | None = None
RUNS_KEY = "checkgate-test-runs:"


def record_run(tag: str) -> int:
    """Count one execution of `tag` in Redis (the fault tests look for lost and duplicated runs)."""
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["CHECKGATE_RESULT_BACKEND"])
    runs = _redis.incr(RUNS_KEY + tag)
    _redis.expire(RUNS_KEY + tag, 900)
    return int(runs)


TAG = Param("tag", str, required=True, max_length=100, doc="unique per request: the key its runs are counted under")
MS = Param("ms", int, default=0, min=0, max=10_000, doc="how long the run takes")


@check(params=(TAG, MS), queue="count", default_timeout=30.0, max_timeout=120.0)
def count(tag: str, ms: int) -> dict:
    """Count the run, then sleep: a redelivered task may run twice (idempotent)."""
    time.sleep(ms / 1000)
    return {"ok": True, "runs": record_run(tag)}


@check(params=(TAG, MS), queue="count_once", default_timeout=30.0, max_timeout=120.0, idempotent=False)
def count_once(tag: str, ms: int) -> dict:
    """Count the run, then sleep: declared not idempotent, so it must never run twice."""
    runs = record_run(tag)
    time.sleep(ms / 1000)
    return {"ok": True, "runs": runs}


@check(params=(TAG, MS), queue="count", default_timeout=30.0, max_timeout=120.0, cache_ttl=2.0)
def cached_count(tag: str, ms: int) -> dict:
    """Like `count`, but its results may be shared for 2 s (a declared cache)."""
    time.sleep(ms / 1000)
    return {"ok": True, "runs": record_run(tag)}


@check(params=(TAG, MS), queue="count", default_timeout=30.0, max_timeout=120.0, coalesce=True)
def coalesced_count(tag: str, ms: int) -> dict:
    """Like `count`, but identical requests in flight share one run (declared coalescing, no cache)."""
    time.sleep(ms / 1000)
    return {"ok": True, "runs": record_run(tag)}


@check(params=(host_param(), port_param()), queue="tcp", default_timeout=10.0, max_timeout=30.0)
def banner(host: str, port: int, deadline: float | None = None) -> dict:
    """A plugin's check written the documented way: `tasks.checks.connect`, so the target policy judges it."""
    probe = Probe(deadline)
    try:
        sock, endpoint = connect(host, port, probe)
        with sock:
            sock.settimeout(min(probe.deadline.remaining(), 0.5))
            try:
                first = sock.recv(256)
            except TimeoutError:
                first = b""  # a silent service: connected is all this check says
    except NETWORK_ERRORS as exc:
        return probe.result(*classify(exc))
    return probe.result(ip=endpoint.ip, banner=first.decode("utf-8", "replace"))


# Checks that ignore their deadline, as a careless plugin would: the worker must end them there anyway
# (tasks/deadline.py). Each counts its runs, so a test can see it ran once and was not redelivered.
LONG_MS = Param("ms", int, default=0, min=0, max=600_000, doc="how long the run takes")


def _spin_for(ms: int) -> None:
    end = time.monotonic() + ms / 1000
    while True:
        try:
            if time.monotonic() >= end:
                break
        except Exception:  # a plugin that swallows every error must not swallow its end
            continue


@check(params=(TAG, LONG_MS), queue="stubborn", default_timeout=30.0, max_timeout=120.0)
def spin(tag: str, ms: int) -> dict:
    """Busy-loop in Python for `ms`, deadline or not."""
    runs = record_run(tag)
    _spin_for(ms)
    return {"ok": True, "runs": runs}


@check(params=(TAG, LONG_MS), queue="stubborn", default_timeout=30.0, max_timeout=120.0, idempotent=False)
def spin_once(tag: str, ms: int) -> dict:
    """Like `spin`, but declared not idempotent: ended or not, it must run at most once."""
    runs = record_run(tag)
    _spin_for(ms)
    return {"ok": True, "runs": runs}


@check(params=(TAG, LONG_MS), queue="stubborn", default_timeout=30.0, max_timeout=120.0)
def nap(tag: str, ms: int) -> dict:
    """Sleep for `ms` in 100 ms naps (time.sleep, not the deadline-aware sleep), deadline or not."""
    runs = record_run(tag)
    for _ in range(ms // 100):
        time.sleep(0.1)
    return {"ok": True, "runs": runs}


@check(params=(TAG,), queue="stubborn", pool="cpu", default_timeout=30.0, max_timeout=120.0)
def hog(tag: str) -> dict:
    """One C call that never returns to the interpreter for about an hour (no signal handler runs in it):
    only killing the process ends it (prefork's hard time limit)."""
    runs = record_run(tag)
    return {"ok": True, "runs": runs, "sum": sum(range(10**11))}


# Every way a plugin's result can trip the Prometheus rendering (gateway/prometheus.py): field names whose
# derived metric names collide with checkgate's fixed series or with each other, names and label values
# that need escaping, two phases that map to one blackbox phase.
COLLIDING_FIELDS = {
    "success": 7,  # checkgate_check_success is the fixed series
    "ran": 3,  # checkgate_check_ran
    "duration_seconds": 99.5,  # checkgate_check_duration_seconds
    "a-b": 1,  # checkgate_check_a_b: the first of the two in sorted order keeps it
    "a.b": 2,  # checkgate_check_a_b as well: left out
    "multi\nline \\ name": 4,  # checkgate_check_multi_line___name, its HELP has a newline and a backslash
    "status_code": 204,  # blackbox's probe_http_status_code, and checkgate_check_status_code
    "text": "not a number",
}
COLLIDING_PHASES = {"dns": 1.5, "resolve": 2.5, 'odd "phase" \\ \n name': 3.5, "total": 9.0}


@check(
    params=(Param("subject", str, default='CN=a "quoted" \\ name\nline two', doc="the leaf's subject to report"),),
    queue="count",
    default_timeout=10.0,
    max_timeout=30.0,
)
def colliding(subject: str) -> dict:
    """A plugin whose result field names collide in format=prometheus and whose labels need escaping."""
    return {
        "ok": True,
        "duration_ms": 2.5,
        **COLLIDING_FIELDS,
        "phases_ms": COLLIDING_PHASES,
        "fingerprint_sha256": "ab" * 32,
        "subject": subject,
        "issuer": 'CN=issuer "x"',
        "sans": ['DNS:we"ird\\.example', "IP:127.0.0.1"],
        "serial": "00c0ffee",
        "tls_version": "TLSv1.3",
    }


@check(
    params=(
        Param("kib", int, default=0, min=0, max=8192, doc="KiB of text in the result's `blob` field"),
        Param("unencodable", bool, default=False, doc="also put a set (msgpack refuses it) in the result"),
    ),
    queue="count",
    default_timeout=10.0,
    max_timeout=30.0,
)
def bulky(kib: int, unencodable: bool) -> dict:
    """A plugin whose result is as large as asked, or one the result serializer refuses (issue #11, F5)."""
    result: dict = {"ok": True, "duration_ms": 1.25, "status_code": 200, "blob": "x" * (kib * 1024)}
    if unencodable:
        result["tags"] = {"a", "b"}
    return result
