"""Schemathesis hooks (loaded through SCHEMATHESIS_HOOKS) that keep a fuzzing run short and on the box.

Generated values stay within the schema; only the ones that would make a run slow are narrowed.
"""

from typing import Any

import schemathesis


@schemathesis.hook
def map_query(ctx: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    if not query:
        return query
    if isinstance(query.get("ms"), int) and query["ms"] > 50:
        query["ms"] %= 51  # sleeps of at most 50 ms
    timeout = query.get("timeout")
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0:
        query["timeout"] = min(max(timeout, 2), 5)  # long enough for a 50 ms task, short for a run
    if query.get("format") == "prometheus" and "mode" in query:
        query["mode"] = "sync"  # prometheus text exists for sync answers only (the 400 says so)
    return query
