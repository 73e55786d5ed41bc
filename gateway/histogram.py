"""A Prometheus histogram small enough for the request path: fixed buckets, one bisect per sample.

The gateway keeps one per check type of its own time per answered check (see `CheckHandler`), so an
operator can read what the HTTP hop adds without a load test: `checkgate_gateway_overhead_seconds`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

# Seconds: the gateway's own share is sub-millisecond when idle and grows with queueing; fine steps
# around the design's 5 ms target.
OVERHEAD_BUCKETS = (
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class Histogram:
    """Counts per bucket (not cumulative until rendered), their sum and count."""

    def __init__(self, buckets: Sequence[float] = OVERHEAD_BUCKETS) -> None:
        self.buckets = tuple(sorted(buckets))
        self._counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one sample (negative values, from clock steps, count as 0)."""
        value = max(0.0, value)
        self._counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(le, samples <= le) per bucket, ending with (inf, count), as Prometheus wants them."""
        out, running = [], 0
        for bound, n in zip((*self.buckets, math.inf), self._counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (None when empty or beyond the last bound)."""
        return bucket_quantile(self.cumulative(), q)

    def render(self, name: str, labels: str) -> list[str]:
        """Sample lines of this histogram; `labels` is `key="value",…` (may be empty)."""
        sep = "," if labels else ""
        lines = [f'{name}_bucket{{{labels}{sep}le="{_le(le)}"}} {n}' for le, n in self.cumulative()]
        lines.append(f"{name}_sum{{{labels}}} {self.sum:.6f}")
        lines.append(f"{name}_count{{{labels}}} {self.count}")
        return lines


def bucket_quantile(cumulative: Sequence[tuple[float, int]], q: float) -> float | None:
    """Upper bound of the bucket holding the q-quantile of cumulative (le, count) pairs ending with
    (inf, total) — a histogram's, or the difference of two readings of one; None when empty or beyond
    the last finite bound."""
    total = cumulative[-1][1] if cumulative else 0
    if total <= 0:
        return None
    le = next(le for le, n in cumulative if n >= q * total)
    return None if math.isinf(le) else le


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)
