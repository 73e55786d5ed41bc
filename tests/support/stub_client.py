"""A stand-in for CeleryClient in in-process tests of the HTTP contract: no broker, no Redis, no worker.

It keeps stored metas in a dict (as Redis would under `celery-task-meta-<id>`), answers `call` with
what the test queued, and raises what the test asks for, so each branch of the contract can be reached
in milliseconds. A test can hold the calls of a check type (`hold`) to keep requests in flight, for
coalescing and load shedding. The real client is tested end to end elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.aiocelery import BackendUnavailable, BrokerUnavailable, TaskResult
from gateway.aiocelery.results import pending_marker
from tasks.registry import REGISTRY, CheckType

Answer = Callable[[CheckType, dict[str, Any], float], "dict[str, Any] | BaseException | None"]


@dataclass(frozen=True)
class StubMessage:
    """What `build_message` was asked for: the task, its arguments, its deadline and fire mode."""

    task_id: str
    task_name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    timeout: float = 0.0
    ignore_result: bool = False


class StubResults:
    """The result side: a dict of stored metas, and an outage when `fail` is set."""

    def __init__(self) -> None:
        self.available = True
        self.pending = 0
        self.stored: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.fail: BaseException | None = None

    async def fetch(self, task_id: str) -> dict[str, Any] | None:
        if self.fail is not None:
            raise self.fail
        return self.stored.get(task_id)

    async def mark_pending(self, task_id: str, name: str, deadline: float) -> None:
        if self.fail is not None:
            raise self.fail
        self.stored.setdefault(task_id, pending_marker(task_id, name, deadline))

    async def latest_runs(self, pointer_prefix: str, limit: int = 1000) -> dict[str, dict[str, Any]]:
        if self.fail is not None:
            raise self.fail
        return dict(self.runs)

    async def ping(self) -> bool:
        return self.available


class StubBroker:
    """The broker side: up or down, queues with their depth and consumers (`stats_error` to fail)."""

    def __init__(self) -> None:
        self.available = True
        self.stats: dict[str, dict[str, int]] = {}
        self.stats_error: BaseException | None = None

    async def queue_stats(self) -> dict[str, dict[str, int]]:
        if self.stats_error is not None:
            raise self.stats_error
        if not self.available:
            raise BrokerUnavailable("stub broker down")
        return dict(self.stats)


class StubTask:
    """`AsyncTask`'s interface as Flower's task API uses it: an id, and `wait` answering what the test set."""

    def __init__(self, client: StubClient, task_id: str) -> None:
        self.id = task_id
        self._client = client

    async def wait(self, timeout: float | None = None) -> TaskResult:
        self._client.waited.append((self.id, timeout))
        outcome = self._client.task_outcome(self.id)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class StubClient:
    """CeleryClient's interface as the handlers use it.

    `answer(check, kwargs, timeout)` decides what a sync call returns (a meta, None for a deadline, or
    an exception to raise); `answer_at(check, kwargs, timeout, queue)`, when set, decides instead, knowing
    the queue the task was routed to (None: the type's own); `publish_error` is raised by every publish
    (all modes); `hold[name]`, an event, keeps the sync calls of check type `name` waiting until it is
    set. `published` lists every message published, `calls` every sync call (task name, kwargs, timeout,
    task id), `routed` maps every task id built or called to its queue. The library's calls (Flower's
    task API): `send_task` records what it was asked (`sent`) or raises `send_error`; a task's `wait`
    answers `task_outcome(id)` (a TaskResult or an exception to raise); `fetch` answers from `fetched`
    (PENDING otherwise).
    """

    def __init__(self) -> None:
        self.results = StubResults()
        self.broker = StubBroker()
        self.published: list[StubMessage] = []
        self.calls: list[tuple[str, dict[str, Any], float, str]] = []
        self.publish_error: BaseException | None = None
        self.answer: Answer = self._success
        self.answer_at: Callable[[CheckType, dict[str, Any], float, str | None], dict[str, Any] | None] | None = None
        self.hold: dict[str, asyncio.Event] = {}
        self.routed: dict[str, str | None] = {}
        self._ids = 0
        self.sent: list[tuple[str, list[Any], dict[str, Any], dict[str, Any]]] = []
        self.send_error: BaseException | None = None
        self.waited: list[tuple[str, float | None]] = []
        self.task_outcome: Callable[[str], TaskResult | BaseException] = lambda task_id: TaskResult(
            task_id, "SUCCESS", 3
        )
        self.fetched: dict[str, TaskResult] = {}

    @staticmethod
    def _success(check: CheckType, kwargs: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        return {"status": "SUCCESS", "result": {"ok": True}, "name": check.task_name}

    def new_id(self) -> str:
        self._ids += 1
        return f"stub-{self._ids}"

    def build_message(
        self,
        task_id: str,
        task_name: str,
        kwargs: dict[str, Any],
        *,
        timeout: float,
        ignore_result: bool = False,
        queue: str | None = None,
    ) -> StubMessage:
        self.routed[task_id] = queue
        return StubMessage(task_id, task_name, dict(kwargs), timeout, ignore_result)

    async def publish(self, message: StubMessage, *, may_republish: bool = False) -> None:
        if self.publish_error is not None:
            raise self.publish_error
        self.published.append(message)

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
        check = REGISTRY[task_name.removeprefix("checkgate.")]
        task_id = task_id or self.new_id()
        self.calls.append((task_name, dict(kwargs), timeout, task_id))
        if not self.results.available:
            raise BackendUnavailable("stub backend down")
        await self.publish(self.build_message(task_id, task_name, kwargs, timeout=timeout, queue=queue))
        if (held := self.hold.get(check.name)) is not None:
            await held.wait()
        if self.answer_at is not None:
            meta = self.answer_at(check, kwargs, timeout, queue)
        else:
            meta = self.answer(check, kwargs, timeout)
        if isinstance(meta, BaseException):
            raise meta
        if meta is not None:
            self.results.stored[task_id] = {**meta, "task_id": task_id}
        return task_id, meta, 0.0

    async def send_task(self, name: str, args: Any = (), kwargs: Any = None, **options: Any) -> StubTask:
        if self.send_error is not None:
            raise self.send_error
        self.sent.append((name, list(args), dict(kwargs or {}), options))
        return StubTask(self, self.new_id())

    def task(self, task_id: str, name: str | None = None) -> StubTask:
        return StubTask(self, task_id)

    async def fetch(self, task_id: str) -> TaskResult:
        if self.results.fail is not None:
            raise self.results.fail
        return self.fetched.get(task_id, TaskResult(task_id, "PENDING"))
