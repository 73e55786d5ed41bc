"""Answers shared between identical requests of a check type that declares `coalesce` or `cache_ttl`.

Identical requests in flight at the same time share one task ("single flight"), and for `cache_ttl`
seconds after it ended a new identical request gets the same result without publishing anything.
Only idempotent checks may share; only SUCCESS results are kept. Bounded in entries.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

Key = tuple[str, tuple[tuple[str, Any], ...]]


def cache_key(check_name: str, kwargs: dict[str, Any]) -> Key:
    """Identity of a request: the check type and its validated arguments."""
    return check_name, tuple(sorted(kwargs.items()))


class SharedResults:
    """Recent SUCCESS metas by request identity, plus the futures of identical requests in flight."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._max_entries = max_entries
        self._recent: OrderedDict[Key, tuple[float, str, dict[str, Any]]] = OrderedDict()
        # (identity, timeout) → (task id, future of its meta) of the request whose task the others share.
        self.inflight: dict[tuple[Key, float], tuple[str, asyncio.Future[dict[str, Any] | None]]] = {}

    def recent(self, key: Key) -> tuple[str, dict[str, Any]] | None:
        """(task id, meta) of a result younger than its TTL, or None."""
        entry = self._recent.get(key)
        if entry is None:
            return None
        expires, task_id, meta = entry
        if expires < time.monotonic():
            del self._recent[key]
            return None
        return task_id, meta

    def keep(self, key: Key, task_id: str, meta: dict[str, Any], ttl: float) -> None:
        """Remember a SUCCESS result for `ttl` seconds, dropping the oldest beyond the bound."""
        if meta.get("status") != "SUCCESS" or ttl <= 0:
            return
        self._recent[key] = (time.monotonic() + ttl, task_id, meta)
        self._recent.move_to_end(key)
        while len(self._recent) > self._max_entries:
            self._recent.popitem(last=False)
