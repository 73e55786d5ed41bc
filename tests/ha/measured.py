"""The figures the HA tests measure (detection bound, recovery times): printed at the end of the session
and written to var/ha/measured.json, so a run of `make faults` documents them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MEASUREMENTS: list[dict[str, Any]] = []


def record(what: str, **figures: Any) -> None:
    """Keep one measurement: a name and its figures (seconds unless the key says otherwise)."""
    MEASUREMENTS.append({"what": what, **figures})


def write(path: Path) -> list[str]:
    """Write every measurement as JSON to `path`; return them as lines for the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(MEASUREMENTS, indent=2))
    return [
        m["what"]
        + ": "
        + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items() if k != "what")
        for m in MEASUREMENTS
    ]
