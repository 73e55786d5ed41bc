"""A stand-in for CeleryClient in in-process tests of the HTTP contract: no broker, no Redis, no worker.

It keeps stored metas in a dict (as Redis would under `celery-task-meta-<id>`), answers `call` with
what the test queued, and raises what the test asks for, so each branch of the contract can be reached
in milliseconds. The real client is tested end to end elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.aiocelery import BackendUnavailable
from gateway.aiocelery.results import pending_marker
from tasks.registry import REGISTRY, CheckType


class StubResults:
    """The result side: a dict of stored metas."""

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
    """The broker side: up or down, queues with their depth and consumers."""

    def __init__(self) -> None:
        self.available = True
        self.stats: dict[str, dict[str, int]] = {}

    async def queue_stats(self) -> dict[str, dict[str, int]]:
        return dict(self.stats)


class StubClient:
    """CeleryClient's interface as the handlers use it.

    `answer(check, kwargs, timeout)` decides what a sync call returns (a meta, None for a deadline, or
    an exception to raise); `publish_error` is raised by every publish (async and fire modes).
    """

    def __init__(self) -> None:
        self.results = StubResults()
        self.broker = StubBroker()
        self.published: list[tuple[str, str]] = []
        self.publish_error: BaseException | None = None
        self.answer: Callable[[CheckType, dict[str, Any], float], dict[str, Any] | None] = self._success
        self._ids = 0

    @staticmethod
    def _success(check: CheckType, kwargs: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        return {"status": "SUCCESS", "result": {"ok": True}, "name": check.task_name}

    def new_id(self) -> str:
        self._ids += 1
        return f"stub-{self._ids}"

    def build_message(
        self, task_id: str, task_name: str, kwargs: dict[str, Any], *, timeout: float, ignore_result: bool = False
    ) -> tuple[str, str]:
        return task_id, task_name

    async def publish(self, message: tuple[str, str], *, may_republish: bool = False) -> None:
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
        may_republish: bool = False,
    ) -> tuple[str, dict | None, float]:
        check = REGISTRY[task_name.removeprefix("checkgate.")]
        task_id = task_id or self.new_id()
        if not self.results.available:
            raise BackendUnavailable("stub backend down")
        await self.publish((task_id, check.task_name))
        meta = self.answer(check, kwargs, timeout)
        if isinstance(meta, BaseException):
            raise meta
        if meta is not None:
            self.results.stored[task_id] = {**meta, "task_id": task_id}
        return task_id, meta, 0.0
