"""Results, awaited without blocking: one Redis PSUBSCRIBE for every task id this process issues.

Celery's Redis backend stores a task's outcome with SETEX `celery-task-meta-<id>` and PUBLISHes it on a
channel of the same name (one MULTI). Every id this process issues carries its prefix, so ONE
`PSUBSCRIBE celery-task-meta-<prefix>*` (glob characters escaped; `resp.PatternSubscription` speaks it)
sees all of them: no SUBSCRIBE round trip per request. A waiter is resolved only on a ready state
(SUCCESS, FAILURE, REVOKED: PENDING is never stored by Celery). The subscription is confirmed before
`available` turns true, and after every reconnect the ids still waited for are fetched with MGET,
because pub/sub is at-most-once. Everything else (GET, SET, MGET, PING, SCAN) goes through redis-py.
Behind Sentinel (`backend.BackendRedis`) the subscription is made at the master the sentinels name, and
made again at the new one (with the same MGET) as soon as they name another.

Ids this process hands out before any result exists (an async request, a 504) get a PENDING marker
carrying their deadline (`pending_marker`), so that a reader can tell "still running" from "never
ran": `settled` turns a marker whose deadline is long past into the final `EXPIRED`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Celery, states
from redis.exceptions import RedisError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_never, wait_exponential_jitter

from gateway.aiocelery.backend import BackendRedis
from gateway.aiocelery.errors import backend_error
from gateway.aiocelery.resp import PatternSubscription, RedisAddress, SubscriptionError
from gateway.ratelog import RateLimitedLog

log = logging.getLogger("checkgate.gateway")
ratelog = RateLimitedLog(log)

KEY_PREFIX = "celery-task-meta-"
READY_STATES = frozenset(states.READY_STATES)
_GLOB_SPECIAL = frozenset("*?[]\\")
# The final state `/result` reports for a task whose deadline (plus EXPIRY_GRACE_S) passed without a
# result: it expired in the queue (the broker drops it unrun, storing nothing), or a worker got it
# after its deadline (Celery stores REVOKED "expired"), or it ran out of its time without a word.
EXPIRED = "EXPIRED"
# Seconds after a task's deadline before its PENDING marker reads EXPIRED. A task that started before
# its deadline stops at it (every check bounds its own I/O by the deadline) and then needs only to
# store its result; this covers that last step, a worker's clock running a little behind the
# gateway's, and a Redis write retried once. A real result stored later still replaces the marker.
EXPIRY_GRACE_S = 5.0


def undecodable_meta(task_id: str) -> dict[str, Any]:
    """What stands for a stored result this gateway cannot decode (the workers' result_serializer or
    the accepted content differs from the gateway's, or something else wrote the key): a FAILURE that
    says so — a 502, rather than a 500 on /result or a false 504 for a result that did arrive."""
    message = "the task's stored result cannot be decoded by the gateway (result_serializer or accept_content differ?)"
    return {
        "status": states.FAILURE,
        "result": {"exc_type": "UndecodableResult", "exc_message": [message], "exc_module": "gateway"},
        "traceback": None,
        "task_id": task_id,
    }


def pending_marker(task_id: str, name: str, deadline: float) -> dict[str, Any]:
    """The meta the gateway stores for an id it handed out before any result: PENDING, with the task's
    deadline (epoch seconds) so that `settled` can tell when waiting is over."""
    return {
        "status": states.PENDING,
        "result": None,
        "traceback": None,
        "task_id": task_id,
        "name": name,
        "deadline": deadline,
    }


def settled(meta: dict[str, Any], now: float) -> dict[str, Any]:
    """The meta as `/result` reports it: a PENDING marker whose deadline passed more than EXPIRY_GRACE_S
    ago, and Celery's REVOKED "expired" (a worker got the task after its deadline), read EXPIRED."""
    status = meta.get("status")
    if status == states.PENDING:
        deadline = meta.get("deadline")
        if isinstance(deadline, int | float) and now > deadline + EXPIRY_GRACE_S:
            return {**meta, "status": EXPIRED}
    elif status == states.REVOKED:
        exc = meta.get("result")
        if (
            isinstance(exc, dict)
            and exc.get("exc_type") == "TaskRevokedError"
            and exc.get("exc_message")
            in (
                ["expired"],
                ("expired",),
                "expired",
            )
        ):
            return {**meta, "status": EXPIRED}
    return meta


def glob_escape(text: str) -> str:
    """Escape Redis glob characters so `text` matches only itself in a PSUBSCRIBE pattern."""
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in text)


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


class ResultListener:
    """One PSUBSCRIBE for all of this process's task ids; resolves waiters on ready states.

    `backend`: the Redis to read (`BackendRedis`); `id_prefix`: the prefix of every id this process
    issues; `decode`/`encode`: the app backend's (results as Celery stores them); `result_expires`:
    seconds a result is kept (PENDING markers are kept as long past their deadline).
    """

    def __init__(
        self,
        backend: BackendRedis,
        id_prefix: str,
        decode: Callable[[bytes], dict[str, Any]],
        encode: Callable[[dict[str, Any]], bytes],
        result_expires: float = 3600.0,
    ) -> None:
        self._result_expires = result_expires
        self._backend = backend
        self._redis = backend.client
        self._pattern = KEY_PREFIX + glob_escape(id_prefix) + "*"
        self._decode = decode
        self._encode = encode
        self._waiters: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        # Loop time each waited-for result arrived: the end of the time a task is out of our hands.
        self._arrived: dict[str, float] = {}
        self._subscribed = asyncio.Event()
        # Where the subscription is (or was last): the server, or the master Sentinel named.
        self.address: RedisAddress | None = None
        self._runner: asyncio.Task[None] | None = None

    @classmethod
    def for_app(cls, app: Celery, id_prefix: str) -> ResultListener:
        """The listener for `app`'s result backend (`BackendRedis.for_app`: a server or Sentinel), its
        serializer and `result_expires`. Raises `ValueError` for a backend the gateway cannot read."""
        backend = app.backend
        expires = float(backend.expires or 86400)  # Celery's reading of result_expires (a timedelta or s)
        return cls(BackendRedis.for_app(app), id_prefix, backend.decode, backend.encode, result_expires=expires)

    @property
    def available(self) -> bool:
        """True while the subscription is confirmed, so no result can slip by unseen."""
        return self._subscribed.is_set()

    @property
    def pending(self) -> int:
        """Requests waiting for a result."""
        return len(self._waiters)

    def start(self) -> None:
        """Subscribe in the background, resubscribing after every disconnect."""
        self._runner = asyncio.create_task(self._listen_forever(), name="checkgate-result-listener")

    async def wait_available(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the subscription to be confirmed."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout)
        return self.available

    def expect(self, task_id: str, deadline: float) -> asyncio.Future[dict[str, Any] | None]:
        """Register interest in `task_id` (before publishing it): the future gets its ready meta, or None
        at `deadline` (loop time)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        self._waiters[task_id] = future
        # A timer rather than asyncio.wait_for: the latter costs an extra future and an extra trip
        # through a busy event loop for every answer.
        self._deadlines[task_id] = loop.call_at(deadline, _settle, future, None)
        return future

    def forget(self, task_id: str) -> float | None:
        """Drop the waiter for `task_id` (answered, timed out or abandoned); return when (loop time) its
        result arrived, or None."""
        self._waiters.pop(task_id, None)
        if (timer := self._deadlines.pop(task_id, None)) is not None:
            timer.cancel()
        return self._arrived.pop(task_id, None)

    async def _listen_forever(self) -> None:
        retrying = AsyncRetrying(
            stop=stop_never,
            wait=wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.1),
            retry=retry_if_exception_type((TimeoutError, SubscriptionError, RedisError, OSError)),
            before_sleep=lambda state: log.warning(
                "result subscription lost (%s); resubscribing in %.1fs",
                state.outcome.exception() if state.outcome else None,
                state.upcoming_sleep,
            ),
        )
        while True:
            # Returns when the master moved (the old one may still answer): subscribe at once at the new.
            await retrying(self._listen_once)

    async def _listen_once(self) -> None:
        """Subscribe at the master, catch up, and stay until the connection ends (raises) or the
        master moves (returns)."""
        subscription = None
        watcher = None
        try:
            address = await self._backend.master()
            subscription = await PatternSubscription.open(address, self._pattern, self._deliver)
            self.address = address
            self._subscribed.set()
            log.info("subscribed to results on %s at %s:%s", self._pattern, address.host, address.port)
            await self._catch_up()
            watcher = asyncio.ensure_future(self._backend.watch(address))
            await asyncio.wait((subscription.closed, watcher), return_when=asyncio.FIRST_COMPLETED)
            if watcher.done():
                moved = watcher.result()
                log.warning("the Redis master moved to %s:%s; subscribing there", moved.host, moved.port)
                return
            # Lost after it was made: resubscribe at once (tenacity backs off only if that fails).
            log.warning("result subscription lost (%s); resubscribing", subscription.closed.exception())
        finally:
            self._subscribed.clear()
            if watcher is not None and not watcher.done():
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            if subscription is not None:
                subscription.close()

    async def _catch_up(self) -> None:
        """Fetch results stored while we were not subscribed (pub/sub is at-most-once)."""
        ids = list(self._waiters)
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            values = await self._redis.mget([KEY_PREFIX + task_id for task_id in chunk])
            for task_id, value in zip(chunk, values, strict=True):
                if value is not None:
                    self._resolve(task_id, value)

    def _deliver(self, channel: bytes, data: bytes) -> None:
        self._resolve(channel[len(KEY_PREFIX) :].decode(), data)

    def _resolve(self, task_id: str, payload: bytes) -> None:
        future = self._waiters.get(task_id)
        if future is None or future.done():
            return
        meta = self._decode_or_failure(task_id, payload)
        if meta.get("status") in READY_STATES:
            self._arrived[task_id] = future.get_loop().time()
            future.set_result(meta)

    def _decode_or_failure(self, task_id: str, payload: bytes) -> dict[str, Any]:
        try:
            return self._decode(payload)
        except Exception:
            ratelog.log(logging.ERROR, "undecodable", "undecodable result for %s", task_id, exc_info=True)
            return undecodable_meta(task_id)

    async def fetch(self, task_id: str) -> dict[str, Any] | None:
        """The stored meta of `task_id` (`undecodable_meta` if it cannot be decoded), or None when Redis
        has no such key."""
        try:
            value = await self._redis.get(KEY_PREFIX + task_id)
        except (RedisError, OSError) as exc:
            raise backend_error(exc) from exc
        return None if value is None else self._decode_or_failure(task_id, value)

    async def read_hash(self, key: str) -> dict[bytes, bytes]:
        """Every field of the Redis hash `key` in the result backend (empty when there is none); raises
        `BackendUnavailable` when Redis cannot be asked."""
        try:
            return await self._redis.hgetall(key)
        except (RedisError, OSError) as exc:
            raise backend_error(exc) from exc

    async def latest_runs(self, pointer_prefix: str, limit: int = 1000) -> dict[str, dict[str, Any]]:
        """Name → stored meta of the latest finished run of each scheduled check (see tasks/schedule.py:
        the worker keeps `<pointer_prefix><name>` → task id)."""
        try:
            pointers = []
            async for key in self._redis.scan_iter(match=glob_escape(pointer_prefix) + "*", count=500):
                pointers.append(key)
                if len(pointers) >= limit:
                    break
            if not pointers:
                return {}
            ids = await self._redis.mget(pointers)
            found = [(k.decode()[len(pointer_prefix) :], i.decode()) for k, i in zip(pointers, ids, strict=True) if i]
            metas = await self._redis.mget([KEY_PREFIX + task_id for _, task_id in found]) if found else []
        except (RedisError, OSError) as exc:
            raise backend_error(exc) from exc
        runs = {}
        for (name, task_id), meta in zip(found, metas, strict=True):
            if meta is not None:
                runs[name] = {**self._decode_or_failure(task_id, meta), "task_id": task_id}
        return runs

    async def mark_pending(self, task_id: str, name: str, deadline: float) -> None:
        """Store a PENDING marker (see `pending_marker`) unless a result is there, so `/result/<id>` knows
        the id meanwhile and reads EXPIRED once `deadline` (epoch seconds) is long past.

        Workers overwrite it with the real result (a stored PENDING never blocks a write). It is kept
        as long as a result would be (`result_expires`) after the deadline.
        """
        meta = pending_marker(task_id, name, deadline)
        ttl = deadline - time.time() + EXPIRY_GRACE_S + self._result_expires
        try:
            await self._redis.set(KEY_PREFIX + task_id, self._encode(meta), ex=max(1, int(ttl)), nx=True)
        except (RedisError, OSError) as exc:
            raise backend_error(exc) from exc

    async def ping(self) -> bool:
        """Whether Redis answers a PING."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        """Stop listening, fail nobody (waiters time out on their own deadline), close the pool."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        await self._backend.aclose()
