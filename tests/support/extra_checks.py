"""Check types only the tests load (through CHECKGATE_CHECK_MODULES), to exercise failure paths."""

from tasks.registry import Param, check


@check(params=(Param("code", int, default=42, min=0, max=1000),), queue="boom", default_timeout=10.0, max_timeout=30.0)
def boom(code: int) -> None:
    """Always raise, so the gateway's 502 path can be seen."""
    raise ValueError(f"boom {code}")
