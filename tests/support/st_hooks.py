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


@schemathesis.hook
def map_case(ctx: Any, case: Any) -> Any:
    """A `require` goes with a fan-out in sync mode, asking at most as many locations as named (the 400s
    say so); applied in every phase, the coverage phase's one-parameter-at-a-time cases included."""
    query = case.query
    if not query or "require" not in query:
        return case
    location = query.get("location")
    if not isinstance(location, str) or (location != "all" and "," not in location):
        del query["require"]
        return case
    if "mode" in query:
        query["mode"] = "sync"
    if location != "all" and str(query["require"]).isdigit() and int(query["require"]) > len(location.split(",")):
        query["require"] = "any"
    return case
