"""Identical requests share a task or a recent result only with the same timeout (gateway/sharing.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack

from gateway.sharing import MAX_KEPT_BYTES, SharedResults, cache_key

KEY = cache_key("tls", {"host": "slow.example", "port": 443})


def _runner(outcomes: dict[float, dict[str, Any]], runs: list[float]) -> Any:
    def run_for(timeout: float) -> Any:
        async def run(task_id: str) -> tuple[str, dict[str, Any], float]:
            runs.append(timeout)
            await asyncio.sleep(0.01)
            return task_id, outcomes[timeout], 0.01

        return run

    return run_for


def test_a_short_timeout_never_answers_a_longer_one_from_the_cache() -> None:
    """The hostile-caller attack: `tls?…&timeout=0.12` against a target 150 ms away cached `timeout` for 30 s,
    and every caller with the default 30 s timeout got that false alarm (`shared: true`)."""
    timed_out = {"status": "SUCCESS", "result": {"ok": False, "reason": "timeout"}}
    fine = {"status": "SUCCESS", "result": {"ok": True}}
    runs: list[float] = []
    run_for = _runner({0.12: timed_out, 30.0: fine}, runs)
    shared = SharedResults()
    ids = iter(f"id-{n}" for n in range(10))

    async def scenario() -> list[Any]:
        first = await shared.call(KEY, 0.12, 30.0, lambda: next(ids), run_for(0.12))
        second = await shared.call(KEY, 30.0, 30.0, lambda: next(ids), run_for(30.0))
        third = await shared.call(KEY, 30.0, 30.0, lambda: next(ids), run_for(30.0))
        return [first, second, third]

    first, second, third = asyncio.run(scenario())
    assert (first.meta, first.shared) == (timed_out, False)
    assert (second.meta, second.shared) == (fine, False)  # ran again: another timeout is another question
    assert (third.meta, third.shared, third.task_id) == (fine, True, second.task_id)  # the cache, same timeout
    assert runs == [0.12, 30.0]


def test_identical_requests_in_flight_share_only_with_the_same_timeout() -> None:
    outcome = {"status": "SUCCESS", "result": 3}
    runs: list[float] = []
    run_for = _runner({1.0: outcome, 2.0: outcome}, runs)
    shared = SharedResults()
    ids = iter(f"id-{n}" for n in range(10))

    async def scenario() -> list[Any]:
        calls = [shared.call(KEY, t, 0.0, lambda: next(ids), run_for(t)) for t in (1.0, 1.0, 2.0)]
        return list(await asyncio.gather(*calls))

    a, b, c = asyncio.run(scenario())
    assert (a.shared, b.shared, b.task_id) == (False, True, a.task_id)
    assert (c.shared, c.task_id != a.task_id) == (False, True)
    assert sorted(runs) == [1.0, 2.0]


def _encoded_size_of_kept(shared: SharedResults) -> int:
    identities = [cache_key("bulky", {"n": n}) for n in range(200)]
    kept = [shared.recent((identity, 10.0)) for identity in identities]
    return sum(len(msgpack.packb(hit[1])) for hit in kept if hit is not None)


def test_many_large_results_do_not_grow_the_cache_past_its_bytes() -> None:
    """Issue #11: 200 cached results of 1 MiB each (a plugin's, at the workers' result bound) were all kept,
    200 MiB in one gateway process; the cache is bounded in bytes (msgpack-encoded) now, newest kept."""
    shared = SharedResults()
    for n in range(200):
        meta = {"status": "SUCCESS", "result": {"ok": True, "blob": "x" * (1024 * 1024 - 100)}, "n": n}
        shared.keep((cache_key("bulky", {"n": n}), 10.0), f"id-{n}", meta, ttl=60.0)
        assert shared.kept_bytes <= MAX_KEPT_BYTES
    assert 0.9 * MAX_KEPT_BYTES < _encoded_size_of_kept(shared) <= MAX_KEPT_BYTES
    assert shared.recent((cache_key("bulky", {"n": 199}), 10.0)) is not None
    assert shared.recent((cache_key("bulky", {"n": 0}), 10.0)) is None


def test_a_result_heavier_than_the_whole_bound_is_not_kept() -> None:
    shared = SharedResults(max_entries=10, max_bytes=4096)
    identity = (KEY, 5.0)
    shared.keep(identity, "id-small", {"status": "SUCCESS", "result": {"ok": True}}, ttl=60.0)
    shared.keep(identity, "id-big", {"status": "SUCCESS", "result": {"ok": True, "blob": "x" * 5000}}, ttl=60.0)
    assert shared.recent(identity) is None  # neither the big one nor the older answer it replaced
    assert shared.kept_bytes == 0


def test_small_results_are_still_bounded_in_number() -> None:
    shared = SharedResults(max_entries=50, max_bytes=1024 * 1024)
    for n in range(500):
        shared.keep((cache_key("tls", {"n": n}), 5.0), f"id-{n}", {"status": "SUCCESS", "result": n}, ttl=60.0)
    assert sum(shared.recent((cache_key("tls", {"n": n}), 5.0)) is not None for n in range(500)) == 50
