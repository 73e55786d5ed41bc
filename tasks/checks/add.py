"""`add`: the tornado-celery example task, kept as the no-op benchmark check."""

from tasks.registry import Param, check

# Integers JSON consumers can represent exactly (JavaScript's Number.MAX_SAFE_INTEGER).
SAFE_INT = 2**53 - 1


@check(
    params=(
        Param("x", int, required=True, min=-SAFE_INT, max=SAFE_INT, doc="first addend"),
        Param("y", int, required=True, min=-SAFE_INT, max=SAFE_INT, doc="second addend"),
    ),
    pool="cpu",
    # The sum depends on x and y only: identical requests in flight share one task.
    coalesce=True,
    # Twice the dead-host detection bound (15 s, celeryconfig.broker_heartbeat): a task held by a worker
    # host that vanished is redelivered to a live one before the caller's default deadline.
    default_timeout=30.0,
    max_timeout=60.0,
)
def add(x: int, y: int) -> int:
    """Return x + y."""
    return x + y
