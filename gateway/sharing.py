"""Answers shared between identical requests of a check type that declares `coalesce` or `cache_ttl`.

Identical sync requests in flight at the same time share one task ("single flight"), and for `cache_ttl`
seconds after it ended a new identical request gets the same result without publishing anything. Only
idempotent checks may share (the registry refuses the others); only SUCCESS results are kept. Requests
are identical only with the same timeout, in flight and in the cache alike: a check's verdict depends on
its deadline (a target 150 ms away is `ok: false, reason: timeout` for a 0.12 s check and fine for a
30 s one), so a caller's short timeout must never answer another caller's longer one — the hostile-
caller attack kept a false alarm up by asking every 30 s with `timeout=0.12` — and a follower that may
wait longer than its leader never gets the leader's 504. The recent results are a
`cachetools.TLRUCache` (per-entry time to live), bounded in bytes as well as in entries (issue #11): a
check type with a `cache_ttl` whose results are large (a plugin's, up to the workers' 1 MiB result bound,
or more from workers configured otherwise) must not grow the gateway by 10,000 of them. Each entry weighs
its meta's msgpack encoding, and at least ``max_bytes / max_entries``, so both bounds hold with one
cachetools weight; the least recently used go first. A meta heavier than the whole bound is not kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import cachetools
import msgpack

Key = tuple[str, str, tuple[tuple[str, Any], ...]]
# A request's identity for sharing: its key and its timeout (seconds).
Identity = tuple[Key, float]
Meta = dict[str, Any]

# The recent results' bounds (per gateway process): their encoded bytes in all, and their number.
MAX_KEPT_BYTES = 32 * 1024 * 1024
MAX_KEPT_ENTRIES = 10_000


def cache_key(check_name: str, kwargs: dict[str, Any], location: str = "") -> Key:
    """Identity of a request: the check type, where it runs (a location, or "" for anywhere: the same
    check from another place may well answer otherwise) and its validated arguments."""
    return check_name, location, tuple(sorted(kwargs.items()))


class Shared(NamedTuple):
    """What a shared call answers: the task id, its ready meta (None past the deadline), whether another
    request's task answered it, and the seconds its own task was out of the gateway's hands (None when
    it had no task of its own)."""

    task_id: str
    meta: Meta | None
    shared: bool
    away: float | None


class _Kept(NamedTuple):
    task_id: str
    meta: Meta
    ttl: float
    size: int  # bytes of the meta, msgpack-encoded


class SharedResults:
    """Recent SUCCESS metas by request identity, plus the futures of identical requests in flight."""

    def __init__(self, max_entries: int = MAX_KEPT_ENTRIES, max_bytes: int = MAX_KEPT_BYTES) -> None:
        least = max(1, max_bytes // max_entries)
        self._recent: cachetools.TLRUCache[Identity, _Kept] = cachetools.TLRUCache(
            maxsize=max_bytes,
            ttu=lambda _key, kept, now: now + kept.ttl,
            timer=time.monotonic,
            getsizeof=lambda kept: max(kept.size, least),
        )
        # (identity, timeout) → (task id, future of its meta) of the request whose task the others share.
        self.inflight: dict[Identity, tuple[str, asyncio.Future[Meta | None]]] = {}

    def recent(self, identity: Identity) -> tuple[str, Meta] | None:
        """(task id, meta) of a result younger than its TTL, or None."""
        kept = self._recent.get(identity)
        return None if kept is None else (kept.task_id, kept.meta)

    @property
    def kept_bytes(self) -> int:
        """What the recent results weigh now (bytes: their encoded size, at least ``max_bytes / max_entries``)."""
        return int(self._recent.currsize)

    def keep(self, identity: Identity, task_id: str, meta: Meta, ttl: float) -> None:
        """Remember a SUCCESS result for `ttl` seconds (the least recently used go beyond the bounds; a meta
        heavier than all of them, or one msgpack cannot encode, is not kept)."""
        if meta.get("status") != "SUCCESS" or ttl <= 0:
            return
        try:
            size = len(msgpack.packb(meta))
        except (TypeError, ValueError, OverflowError):
            return
        if size > self._recent.maxsize:
            self._recent.pop(identity, None)  # an older result of the same request must not outlive this one
            return
        self._recent[identity] = _Kept(task_id, meta, ttl, size)

    async def call(
        self,
        key: Key,
        timeout: float,
        ttl: float,
        new_id: Callable[[], str],
        run: Callable[[str], Awaitable[tuple[str, Meta | None, float]]],
    ) -> Shared:
        """Answer a sync request of `key` and `timeout` (seconds): from a recent result of the same key and
        timeout (when `ttl` > 0), from the task of such a request in flight, or by `run(new_id())` — a new
        task that identical requests arriving meanwhile share. Exceptions of `run` reach every sharer."""
        flight = (key, timeout)
        if (hit := self.recent(flight)) is not None:
            return Shared(hit[0], hit[1], True, None)
        if (leader := self.inflight.get(flight)) is not None:
            task_id, future = leader
            try:
                return Shared(task_id, await asyncio.wait_for(asyncio.shield(future), timeout), True, None)
            except TimeoutError:
                return Shared(task_id, None, True, None)
        task_id = new_id()
        future: asyncio.Future[Meta | None] = asyncio.get_running_loop().create_future()
        self.inflight[flight] = (task_id, future)
        try:
            _, meta, away = await run(task_id)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # followers re-raise it; without any, it must not be reported as lost
            raise
        finally:
            self.inflight.pop(flight, None)
        future.set_result(meta)
        if meta is not None:
            self.keep(flight, task_id, meta, ttl)
        return Shared(task_id, meta, False, away)
