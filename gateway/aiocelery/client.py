"""`CeleryClient`: publish Celery tasks and await their results on an asyncio loop, never blocking it.

The role tornado-celery played for Celery 3 and Tornado 4, for Celery 5 on asyncio, for any Celery app
and any task. It ties together the parts of this package: `MessageFactory` (messages by the app's own
code), `BrokerPublisher` (RabbitMQ with confirms) and `ResultListener` (one Redis PSUBSCRIBE for all of
this process's ids). No `send_task`, `AsyncResult.get()`, blocking Redis call or thread pool runs on the
loop.

    async with CeleryClient(app) as client:          # or client = CeleryClient(app) at import time
        task = await client.send_task("proj.add", (2, 3), countdown=1)   # published and confirmed
        print(task.id, await task.get(timeout=10))    # 5
        print(await client.apply("proj.add", (2, 3), timeout=10))        # send_task + get
        meta = await client.fetch(task.id)            # state and value now, without waiting

Results are awaited the way Celery's Redis backend publishes them: ids this client makes carry its
prefix and arrive on its one subscription; a task id chosen by the caller (or made by another process)
is read with GET, polled from 50 ms up to every second. The gateway's own hot path (`call`,
`build_message`, `publish`) is the same machinery with a per-type message template.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from celery import Celery, states
from kombu import Queue

from gateway.aiocelery.errors import ClientClosed, DeadlinePassed, PublishUnconfirmed, ResultTimeout, UnsupportedBackend
from gateway.aiocelery.messages import Expiry, MessageFactory, OutgoingMessage
from gateway.aiocelery.publisher import BrokerPublisher
from gateway.aiocelery.results import READY_STATES, ResultListener

# Result backends whose every stored result is also PUBLISHed, so a waiter needs no polling and no thread.
AWAITABLE_BACKENDS = ("redis", "rediss", "sentinel")
# Seconds between GETs for an id outside this client's prefix: from the first to the last.
POLL_FIRST_S = 0.05
POLL_MAX_S = 1.0
# "No deadline" for a listener waiter: each awaiter keeps its own timeout.
_FOREVER_S = 10.0**9


def check_backend(app: Celery) -> None:
    """Raise `UnsupportedBackend` unless `app`'s result backend can be awaited without blocking."""
    url = app.conf.result_backend
    scheme = str(url).partition("://")[0].lower() if url else ""
    if scheme in AWAITABLE_BACKENDS:
        return
    shown = f"{scheme}://" if scheme else repr(url)
    raise UnsupportedBackend(
        f"result backend {shown} cannot be awaited without blocking: CeleryClient needs Redis "
        "(result_backend = 'redis://…', 'rediss://…' or 'sentinel://…'), whose results are published "
        "as they are stored; rpc://, databases and the rest are read by blocking or polling clients only"
    )


@dataclass(frozen=True)
class TaskResult:
    """A task's state as the result backend holds it now, decoded as Celery's `AsyncResult` would.

    `result`: the return value (SUCCESS), the exception instance (FAILURE, REVOKED, RETRY: rebuilt by
    the app's `backend.exception_to_python`, so its type and message are the task's), or None.
    `traceback`: the worker's formatted traceback (FAILURE, RETRY) or None. `date_done`: when it became
    ready (aware datetime) or None. `name`, `args`, `kwargs`, `worker`, `retries`, `queue`: stored only
    with the workers' `result_extended` (else None). `meta`: the stored mapping itself.
    """

    task_id: str
    state: str
    result: Any = None
    traceback: str | None = None
    date_done: datetime | None = None
    name: str | None = None
    args: Any = None
    kwargs: Any = None
    worker: str | None = None
    retries: int | None = None
    queue: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ready(self) -> bool:
        """SUCCESS, FAILURE or REVOKED: nothing more will change."""
        return self.state in states.READY_STATES

    @property
    def successful(self) -> bool:
        """The task returned (SUCCESS)."""
        return self.state == states.SUCCESS

    @property
    def failed(self) -> bool:
        """The task raised (FAILURE)."""
        return self.state == states.FAILURE

    def value(self, propagate: bool = True) -> Any:
        """The return value; for FAILURE and REVOKED raise the task's exception (or, with `propagate`
        false, return it), as `AsyncResult.get` does."""
        if propagate and self.state in states.PROPAGATE_STATES and isinstance(self.result, BaseException):
            raise self.result
        return self.result


class AsyncTask:
    """A published task (or any task id): await its result without blocking. Like Celery's `AsyncResult`,
    but every call that touches Redis is a coroutine.

    Made by `CeleryClient.send_task` (which starts watching for the result before it publishes, so
    nothing is missed) or `CeleryClient.task(id)`. `id`: the task id; `name`: the task name when known;
    `ignored`: sent with `ignore_result` (no result will be stored).
    """

    __slots__ = ("__weakref__", "_client", "_finalizer", "_future", "_result", "id", "ignored", "name")

    def __init__(
        self,
        client: CeleryClient,
        task_id: str,
        name: str | None = None,
        *,
        ignored: bool = False,
        watch: _Watch | None = None,
    ) -> None:
        self.id = task_id
        self.name = name
        self.ignored = ignored
        self._client = client
        self._result: TaskResult | None = None
        self._future = None if watch is None else watch.future
        # A handle holding a watch (send_task's) keeps the client's waiter for its id; dropping it ends it.
        self._finalizer = None if watch is None else weakref.finalize(self, client._release, task_id, watch)
        if self._finalizer is not None:
            self._finalizer.atexit = False  # at exit the loop is gone: nothing left to release

    def __repr__(self) -> str:
        return f"<AsyncTask {self.name or '?'} {self.id}>"

    def ready(self) -> bool:
        """Whether the result already arrived here (no I/O; `fetch` asks Redis)."""
        return self._result is not None or (self._future is not None and self._future.done())

    async def get(self, timeout: float | None = None, *, propagate: bool = True) -> Any:
        """Wait up to `timeout` seconds (None: as long as it takes) for the result; return the task's
        value, or raise its exception (FAILURE: the task's own type and message; REVOKED:
        `celery.exceptions.TaskRevokedError`) unless `propagate` is false (then return it).

        Raises `ResultTimeout` past `timeout` (the task may still finish: ask again), `ClientClosed` if
        the client closes meanwhile. A task sent with `ignore_result` returns None at once, as Celery does.
        """
        if self.ignored:
            return None
        return (await self.wait(timeout)).value(propagate)

    async def wait(self, timeout: float | None = None) -> TaskResult:
        """Wait up to `timeout` seconds for the task to be ready; return its `TaskResult` (never raises the
        task's exception). Raises `ResultTimeout`, `ClientClosed`."""
        if self._result is None:
            meta = await self._client._wait_meta(self.id, timeout, self._future)
            self._result = self._client._task_result(self.id, meta)
            if self._finalizer is not None:
                self._future = None
                self._finalizer()
        return self._result

    async def fetch(self) -> TaskResult:
        """The task's state and value now, without waiting (PENDING when nothing is stored: Celery
        cannot tell unknown, pending and expired ids apart). Raises `BackendUnavailable`."""
        if self._result is not None:
            return self._result
        return await self._client.fetch(self.id)


@dataclass
class _Watch:
    """One id waited for: the future its result resolves, how many hold it, whether the result listener
    resolves it (else `poller` does), and the poller reading it by GET, if any."""

    future: asyncio.Future[dict[str, Any] | None]
    subscribed: bool
    holders: int = 1
    poller: asyncio.Task[None] | None = None


class CeleryClient:
    """Publish tasks of a Celery `app` and await their results, all on the event loop; one per process and
    loop, shared by every coroutine.

    `app`: any Celery app whose broker is RabbitMQ (amqp://, pyamqp://, amqps://) and whose result
    backend is Redis (else `UnsupportedBackend` here). Its routing (`task_routes`, `task_queues`, the
    default queue), serializers (`task_serializer`; results by its `backend`), compression and time zone
    apply. `publish_timeout`: seconds a publish may wait for the broker's confirm (at most the task's
    own expiry). `connect_timeout`: seconds the first call waits for the broker connection when the
    client was not started with a wait. `id_prefix`: the prefix of every task id this client issues
    (random when None; it must differ between processes, since results are matched to waiters by it).

    Safe to create before the loop runs; it connects on `start()` or on its first call, reconnects by
    itself, and is bound to the loop it started on. `close()` (or `async with`) ends both connections.
    Messages are persistent and published with publisher confirms and `mandatory` routing.
    """

    def __init__(
        self,
        app: Celery,
        *,
        publish_timeout: float = 5.0,
        connect_timeout: float = 10.0,
        id_prefix: str | None = None,
    ) -> None:
        check_backend(app)
        self.app = app
        self.connect_timeout = connect_timeout
        self.id_prefix = id_prefix or f"gw{secrets.token_hex(5)}-"
        self.messages = MessageFactory(app, origin=f"checkgate-gateway@{socket.gethostname()}/{os.getpid()}")
        # Both read the app's configuration as the workers do (failover list, TLS, Sentinel) and raise
        # ValueError at once for what they cannot honour; TLS files are read here, not on the loop.
        self.broker = BrokerPublisher.for_app(app, publish_timeout)
        self.results = ResultListener.for_app(app, self.id_prefix)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._first_wait: asyncio.Task[None] | None = None
        self._watches: dict[str, _Watch] = {}
        # Ids `call` waits for right now (the listener keeps one waiter per id: another watch of such an
        # id reads it by GET instead).
        self._calls: set[str] = set()

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self, wait: float = 0.0) -> None:
        """Start connecting to broker and backend (idempotent); wait up to `wait` seconds for both.
        Raises `ClientClosed` after `close()`, RuntimeError on another loop than the first call's."""
        self._bind()
        if wait:
            await asyncio.gather(self.broker.wait_available(wait), self.results.wait_available(wait))

    def _bind(self) -> None:
        if self._closed:
            raise ClientClosed("this CeleryClient is closed")
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None:
            raise RuntimeError("this CeleryClient runs on another event loop: make one per loop")
        self._loop = loop
        self.broker.start()
        self.results.start()
        self._first_wait = loop.create_task(self._wait_first(), name="aiocelery-first-connect")

    async def _wait_first(self) -> None:
        await asyncio.gather(
            self.broker.wait_available(self.connect_timeout), self.results.wait_available(self.connect_timeout)
        )

    async def _ready(self) -> None:
        """Started, and past the first connection attempt (at most `connect_timeout` once)."""
        self._bind()
        first = self._first_wait
        if first is not None and not first.done():
            await asyncio.shield(first)

    async def close(self) -> None:
        """Close both connections; waits still open end with `ClientClosed`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        watches, self._watches = self._watches, {}
        for task_id, watch in watches.items():
            if not watch.future.done():
                watch.future.set_exception(ClientClosed("the CeleryClient was closed"))
                watch.future.exception()  # retrieved: nobody may be awaiting it
            self._unwatch(task_id, watch)
        if self._first_wait is not None:
            self._first_wait.cancel()
        if self._loop is not None:
            await asyncio.gather(self.broker.close(), self.results.close())

    async def __aenter__(self) -> CeleryClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def new_id(self) -> str:
        """A fresh task id carrying this process's prefix (so our PSUBSCRIBE sees its result)."""
        return self.id_prefix + secrets.token_hex(10)

    # --- the library's calls ---------------------------------------------------------------------

    async def send_task(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | Queue | None = None,
        expires: Expiry | None = None,
        countdown: float | None = None,
        eta: datetime | str | None = None,
        priority: int | None = None,
        headers: Mapping[str, Any] | None = None,
        ignore_result: bool = False,
        task_id: str | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        shadow: str | None = None,
    ) -> AsyncTask:
        """Publish task `name(*args, **kwargs)` and return once the broker confirmed it.

        Options as `Celery.send_task`: `queue` (a name or kombu Queue; default: the app's routes),
        `expires` (seconds from now, a datetime — naive is UTC — or ISO 8601: later it is dropped, by the
        broker unconsumed or REVOKED by the worker), `countdown` (seconds) or `eta` (datetime or ISO 8601:
        run no earlier), `priority` (0-255; the queue's x-max-priority caps it), `headers` (extra message
        headers, not the protocol's own), `ignore_result` (fire and forget: the worker stores nothing),
        `task_id` (default: a fresh id with this client's prefix; another id is awaited by polling),
        `time_limit`/`soft_time_limit` (seconds), `shadow` (another name for logs). The task need not be
        registered in `app`.

        Returns an `AsyncTask` (`await task.get(timeout)`). Raises TypeError/ValueError for bad
        arguments or options (nothing published), kombu's EncodeError for arguments the serializer cannot
        encode, `BrokerUnavailable` (down or reconnecting: raised at once, no hidden retry),
        `BrokerRefused` (nack), `Unroutable` (no queue bound for the route), `DeadlinePassed` (the task's
        expiry passed before the confirm), `ClientClosed`.
        """
        message = self.messages.build_task(
            task_id or self.new_id(),
            name,
            args,
            kwargs,
            expires=expires,
            countdown=countdown,
            eta=eta,
            queue=queue,
            priority=priority,
            headers=headers,
            ignore_result=ignore_result,
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
            shadow=shadow,
        )
        await self._ready()
        task_id = message.task_id
        # Watched before it is published (as Celery subscribes first): its result cannot slip by.
        watch = None if ignore_result else self._watch(task_id, check_stored=False)
        try:
            await self.broker.publish(message)
        except BaseException:
            if watch is not None:
                self._release(task_id, watch)
            raise
        return AsyncTask(self, task_id, name, ignored=ignore_result, watch=watch)

    async def apply(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        propagate: bool = True,
        **options: Any,
    ) -> Any:
        """`send_task(name, args, kwargs, **options)`, then `get(timeout, propagate=propagate)`: the task's
        value. `timeout` (seconds, None: no limit) counts from the call, publish included. Raises what
        both raise: `ResultTimeout` carries the `task_id` to read later."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        task = await self.send_task(name, args, kwargs, **options)
        left = None if timeout is None else max(0.0, timeout - (loop.time() - began))
        return await task.get(left, propagate=propagate)

    def task(self, task_id: str, name: str | None = None) -> AsyncTask:
        """A handle on any task id (one of this client's, another process's): `await .get(timeout)`,
        `await .fetch()`. No I/O here."""
        return AsyncTask(self, task_id, name)

    async def result(self, task_id: str, timeout: float | None = None, *, propagate: bool = True) -> Any:
        """Wait up to `timeout` seconds for the result of `task_id` (published by anyone, earlier or
        now) and return its value; as `AsyncTask.get` (raises the task's exception, `ResultTimeout`)."""
        return await self.task(task_id).get(timeout, propagate=propagate)

    async def fetch(self, task_id: str) -> TaskResult:
        """State and value of `task_id` as stored now, without waiting (one Redis GET): PENDING when
        nothing is stored. Raises `BackendUnavailable`."""
        self._bind()
        meta = await self.results.fetch(task_id)
        return self._task_result(task_id, meta)

    # --- waiting ---------------------------------------------------------------------------------

    def _watch(self, task_id: str, *, check_stored: bool) -> _Watch:
        """The watch of `task_id`'s ready meta (its shared future), with one more holder. Ids with this
        client's prefix wait on the subscription (`check_stored`: and GET once, for a result stored
        before); others, and ids `call` waits for, are polled."""
        watch = self._watches.get(task_id)
        if watch is not None:
            watch.holders += 1
            return watch
        loop = asyncio.get_running_loop()
        if task_id.startswith(self.id_prefix) and task_id not in self._calls:
            watch = _Watch(self.results.expect(task_id, loop.time() + _FOREVER_S), subscribed=True)
            if check_stored:
                watch.poller = loop.create_task(self._poll(task_id, watch.future, once=True))
        else:
            watch = _Watch(loop.create_future(), subscribed=False)
            watch.poller = loop.create_task(self._poll(task_id, watch.future))
        self._watches[task_id] = watch
        watch.future.add_done_callback(lambda _: self._unwatch(task_id, watch))
        return watch

    def _unwatch(self, task_id: str, watch: _Watch) -> None:
        """`watch` ends (its result came, its last holder left, or the client closed)."""
        if self._watches.get(task_id) is watch:
            del self._watches[task_id]
        if watch.poller is not None:
            with contextlib.suppress(RuntimeError):  # its loop closed already
                watch.poller.cancel()
        if watch.subscribed:
            watch.subscribed = False
            self.results.forget(task_id)

    def _release(self, task_id: str, watch: _Watch) -> None:
        """One holder of `watch` is gone (a handle collected: this may run from the garbage collector,
        even after the loop closed); the last one ends it."""
        watch.holders -= 1
        if watch.holders <= 0:
            if not watch.future.done():
                with contextlib.suppress(RuntimeError):
                    watch.future.cancel()
            self._unwatch(task_id, watch)

    async def _poll(self, task_id: str, future: asyncio.Future[dict[str, Any] | None], once: bool = False) -> None:
        """GET `task_id`'s stored meta until it is ready (or once), resolving `future` with it."""
        delay = POLL_FIRST_S
        while not future.done():
            with contextlib.suppress(ConnectionError):  # BackendUnavailable: the next round may do
                meta = await self.results.fetch(task_id)
                if meta is not None and meta.get("status") in READY_STATES and not future.done():
                    future.set_result(meta)
                    return
            if once:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_MAX_S)

    async def _wait_meta(
        self, task_id: str, timeout: float | None, future: asyncio.Future[dict[str, Any] | None] | None
    ) -> dict[str, Any]:
        """The ready meta of `task_id` within `timeout` s, on `future` (a watch already held) or a new one."""
        await self._ready()
        watch = None
        if future is None:
            watch = self._watch(task_id, check_stored=True)
            future = watch.future
        try:
            # shield: one awaiter's timeout or cancellation must not end the others' wait.
            meta = await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise ResultTimeout(task_id, timeout or 0.0) from None
        except asyncio.CancelledError:
            if future.cancelled() and not self._closed:
                raise ClientClosed("the wait was ended: its task handle was released") from None
            raise
        finally:
            if watch is not None:
                self._release(task_id, watch)
        assert meta is not None
        return meta

    def _task_result(self, task_id: str, meta: Mapping[str, Any] | None) -> TaskResult:
        """A stored meta as `TaskResult`, exceptions rebuilt as Celery's AsyncResult does."""
        if meta is None:
            return TaskResult(task_id, states.PENDING)
        state = str(meta.get("status") or states.PENDING)
        result = meta.get("result")
        if state in states.EXCEPTION_STATES:
            try:
                result = self.app.backend.exception_to_python(result)
            except Exception as refused:  # not an exception class (SecurityError), or no type: Celery raises it
                result = refused
        done = meta.get("date_done")
        if isinstance(done, str):
            try:
                done = datetime.fromisoformat(done)
            except ValueError:
                done = None
        return TaskResult(
            task_id=task_id,
            state=state,
            result=result,
            traceback=meta.get("traceback"),
            date_done=done if isinstance(done, datetime) else None,
            name=meta.get("name"),
            args=meta.get("args"),
            kwargs=meta.get("kwargs"),
            worker=meta.get("worker"),
            retries=meta.get("retries"),
            queue=meta.get("queue"),
            meta=meta,
        )

    # --- the gateway's hot path ------------------------------------------------------------------

    def build_message(
        self,
        task_id: str,
        task_name: str,
        kwargs: dict[str, Any],
        *,
        timeout: float,
        ignore_result: bool = False,
        queue: str | None = None,
    ) -> OutgoingMessage:
        """A protocol-2 message for `task_name(**kwargs)` expiring `timeout` s from now, routed to `queue`
        when given (`MessageFactory.build`)."""
        return self.messages.build(
            task_id, task_name, kwargs, timeout=timeout, ignore_result=ignore_result, queue=queue
        )

    async def publish(self, message: OutgoingMessage, *, may_republish: bool = False) -> None:
        """Publish a built message; `may_republish`: the task may run twice, so a message whose broker
        node died before confirming it is sent again on the next (see `BrokerPublisher.publish`)."""
        await self.broker.publish(message, may_republish=may_republish)

    async def call(
        self,
        task_name: str,
        kwargs: dict[str, Any],
        *,
        timeout: float,
        task_id: str | None = None,
        queue: str | None = None,
        may_republish: bool = False,
    ) -> tuple[str, dict | None, float]:
        """Run `task_name(**kwargs)` (on `queue` when given) and wait up to `timeout` s: (task id, ready
        meta or None past the deadline, seconds from the publish to the result's arrival — the time the
        task was out of this process's hands). The gateway's path: the message is made from the type's
        template, published with `expires` = the deadline, and the meta is returned as stored (exceptions
        not rebuilt).
        `task_id` must be fresh (`new_id`). Needs `start()` first.

        A deadline that passes while the broker has not yet confirmed the publish is a deadline like any
        other (None), not a broker fault. `may_republish` as for `publish`; without it, a message whose
        node died after it was sent may still run, so its result is awaited to the deadline all the same."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        task_id = task_id or self.new_id()
        message = self.build_message(task_id, task_name, kwargs, timeout=timeout, queue=queue)
        future = self.results.expect(task_id, deadline)
        self._calls.add(task_id)
        meta = None
        publishing = loop.time()
        try:
            with contextlib.suppress(PublishUnconfirmed):  # it may be queued: its result is as welcome
                await self.publish(message, may_republish=may_republish)
            meta = await future
        except DeadlinePassed:
            meta = future.result() if future.done() else None
        finally:
            self._calls.discard(task_id)
            arrived = self.results.forget(task_id)
        away = arrived - publishing if meta is not None and arrived is not None else 0.0
        return task_id, meta, away
