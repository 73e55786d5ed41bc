"""`sleep`: simulated work of a given duration, as in the original 200–400 ms benchmark."""

from tasks import deadline
from tasks.registry import Param, check


@check(
    params=(Param("ms", int, required=True, min=0, max=60_000, doc="how long the task sleeps, in ms"),),
    default_timeout=90.0,
    max_timeout=300.0,
)
def sleep(ms: int) -> dict:
    """Sleep `ms` milliseconds on a worker, then report it; at the request's deadline, if that comes
    first, stop and end with DeadlineExceeded (the gateway answers 504): the work was not done."""
    deadline.sleep(ms / 1000)
    return {"ok": True, "slept_ms": ms}
