"""Scheduled checks: a TOML file of checks that Celery beat runs every N seconds or on a cron rule.

```toml
[checks.homepage]
type = "http"                      # a registered check type
every = "30s"                      # or: cron = "*/5 * * * *"  (minute hour day-of-month month day-of-week, UTC)
timeout = 10                       # optional: seconds, default the type's default_timeout
params = { url = "https://example.org/", status_codes = "200-299" }
```

The file is `CHECKGATE_SCHEDULE`, else `schedule.toml` in the node's home (`CHECKGATE_HOME`; without it,
beside celeryconfig.py) when it exists. Every entry is validated against the check registry exactly as the
gateway validates a request, and a bad one stops beat at start with the entry's name (`python -m
tasks.schedule` checks a file without starting beat).

Only beat reads the file (`ScheduleFileScheduler.setup_schedule`), so a broken schedule stops beat and
not every worker and gateway that loads celeryconfig. The scheduler is RedBeat's: the schedule lives in
Redis and a Redis lock lets one beat per node run while only the holder fires.

Each run gets a fresh task id (Celery never overwrites a stored SUCCESS, so a fixed id per entry would
freeze its first result) and carries the entry's name in a `checkgate_schedule` header; when a worker
finishes it, `task_postrun` points `checkgate:schedule:<prefix><name>` at that id, so the latest result
of an entry is `GET checkgate:schedule:<prefix><name>` then the usual `celery-task-meta-<id>`. Only a run
whose task is the one beat declared for that entry (RedBeat's record of it) is recorded: the header is
only a claim.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery.schedules import crontab, schedule
from celery.signals import task_postrun
from redbeat import RedBeatScheduler
from redbeat.schedulers import get_redis

from tasks.registry import CheckType, ParamError, load_checks

logger = logging.getLogger(__name__)

SCHEDULE_ENV = "CHECKGATE_SCHEDULE"
HEADER = "checkgate_schedule"
LATEST_KEY_PREFIX = "checkgate:schedule:"
# Cron's finest step is a minute: two runs of a cron entry are never closer than this.
CRON_MIN_GAP = 60.0
MIN_INTERVAL = 1.0

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_DURATION_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_ENTRY_KEYS = {"type", "every", "cron", "timeout", "params"}


class ScheduleError(ValueError):
    """The schedule file or one of its entries is wrong; the message names the file and the entry."""


@dataclass(frozen=True)
class ScheduledCheck:
    """One validated entry: the check to run, its keyword arguments, when, and how long a run may wait."""

    name: str
    check: CheckType
    kwargs: dict[str, Any]
    run_every: schedule | crontab
    expires: float

    def beat_entry(self) -> dict[str, Any]:
        """The entry for Celery's `beat_schedule`."""
        return {
            "task": self.check.task_name,
            "schedule": self.run_every,
            "kwargs": self.kwargs,
            "options": {
                # A run not started by then is dropped (no pile-up behind a stalled queue); it is also
                # the deadline a check bounds its own I/O with, as for a gateway request.
                "expires": self.expires,
                "headers": {HEADER: self.name},
            },
        }


def parse_duration(value: Any) -> float:
    """Seconds from `30`, `1.5`, `"30s"`, `"500ms"`, `"5m"`, `"2h"`, `"1d"`; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION_RE.fullmatch(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 1h)")
    if not seconds > 0:
        raise ValueError(f"must be positive, got {value!r}")
    return seconds


def parse_cron(text: Any) -> crontab:
    """A five-field cron rule (minute hour day-of-month month day-of-week) as a Celery crontab."""
    fields = text.split() if isinstance(text, str) else []
    if len(fields) != 5:
        raise ValueError(f"cron needs 5 fields (minute hour day-of-month month day-of-week), got {text!r}")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    try:
        return crontab(
            minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year, day_of_week=day_of_week
        )
    except Exception as exc:  # crontab raises ValueError or its own ParseException
        raise ValueError(f"bad cron {text!r}: {exc}") from None


def _param_text(key: str, value: Any) -> str:
    """A TOML value as the raw string `CheckType.validate` parses (what a query string would carry)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError(f"params.{key}: must be a string, number or boolean, got {type(value).__name__}")


def parse_entry(name: str, raw: Any, checks: Mapping[str, CheckType]) -> ScheduledCheck:
    """Validate one `[checks.<name>]` table; raise ValueError (the caller adds file and name)."""
    if not _NAME_RE.fullmatch(name):
        raise ValueError("name must be 1-100 of A-Z a-z 0-9 _ . -")
    if not isinstance(raw, dict):
        raise ValueError("must be a table")
    unknown = set(raw) - _ENTRY_KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; allowed: {sorted(_ENTRY_KEYS)}")
    check = checks.get(raw.get("type"))  # type: ignore[arg-type]
    if check is None:
        raise ValueError(f"type {raw.get('type')!r} is not a check type; known: {', '.join(sorted(checks))}")
    if ("every" in raw) == ("cron" in raw):
        raise ValueError("needs exactly one of every or cron")
    if "every" in raw:
        interval = parse_duration(raw["every"])
        if interval < MIN_INTERVAL:
            raise ValueError(f"every must be at least {MIN_INTERVAL:g}s")
        run_every: schedule | crontab = schedule(timedelta(seconds=interval))
    else:
        interval, run_every = CRON_MIN_GAP, parse_cron(raw["cron"])
    timeout = parse_duration(raw["timeout"]) if "timeout" in raw else check.default_timeout
    if timeout > check.max_timeout:
        raise ValueError(f"timeout {timeout:g}s is above the max_timeout of {check.name} ({check.max_timeout:g}s)")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise ValueError("params must be a table")
    given = {key: _param_text(key, value) for key, value in params.items()}
    try:
        kwargs = check.validate(given)
    except ParamError as exc:
        raise ValueError(f"params.{exc.field}: {exc.message}") from None
    return ScheduledCheck(name, check, kwargs, run_every, expires=min(interval, timeout))


def load_schedule(path: Path, checks: Mapping[str, CheckType] | None = None) -> dict[str, ScheduledCheck]:
    """Every entry of the schedule file, validated; ScheduleError naming the file and the bad entry."""
    checks = load_checks() if checks is None else checks
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScheduleError(f"schedule {path}: {exc}") from None
    unknown = set(data) - {"checks"}
    if unknown:
        raise ScheduleError(f"schedule {path}: unknown top-level keys {sorted(unknown)}; entries go in [checks.<name>]")
    entries = data.get("checks", {})
    if not isinstance(entries, dict):
        raise ScheduleError(f"schedule {path}: checks must be tables, [checks.<name>]")
    out = {}
    for name, raw in entries.items():
        try:
            out[name] = parse_entry(name, raw, checks)
        except ValueError as exc:
            raise ScheduleError(f"schedule {path}: entry {name!r}: {exc}") from None
    return out


def schedule_path(environ: Mapping[str, str] = os.environ) -> Path | None:
    """`CHECKGATE_SCHEDULE` (which must exist), else schedule.toml in the node's home (`CHECKGATE_HOME`, which
    `checkgate run` sets) or, without one, beside celeryconfig.py (a checkout) — if present."""
    if environ.get(SCHEDULE_ENV):
        path = Path(environ[SCHEDULE_ENV])
        if not path.is_file():
            raise ScheduleError(f"{SCHEDULE_ENV}={path}: no such file")
        return path
    if environ.get("CHECKGATE_HOME"):
        path = Path(environ["CHECKGATE_HOME"]) / "schedule.toml"
    else:
        import celeryconfig  # imported here: celeryconfig itself may be importing this module

        path = Path(celeryconfig.__file__).resolve().with_name("schedule.toml")
    return path if path.is_file() else None


def beat_schedule(entries: Mapping[str, ScheduledCheck]) -> dict[str, dict[str, Any]]:
    """`beat_schedule` entries, keyed by the schedule's entry names."""
    return {name: entry.beat_entry() for name, entry in entries.items()}


def deployment_prefix() -> str:
    """The queue prefix (celeryconfig's CHECKGATE_QUEUE_PREFIX) that also isolates our Redis keys."""
    return os.environ.get("CHECKGATE_QUEUE_PREFIX", "")


def latest_key(name: str, prefix: str | None = None) -> str:
    """The Redis key holding the task id of the latest finished run of schedule entry `name`."""
    return f"{LATEST_KEY_PREFIX}{deployment_prefix() if prefix is None else prefix}{name}"


class ScheduleFileScheduler(RedBeatScheduler):
    """RedBeat, with its static entries read from the schedule file when beat starts.

    Entries removed from the file are removed from Redis too (RedBeat tracks its static entries).
    """

    def setup_schedule(self) -> None:
        try:
            path = schedule_path()
            entries = load_schedule(path) if path else {}
        except ScheduleError as exc:
            # One clear line and exit 1, rather than a traceback that beat's stderr logger shreds.
            logger.critical("beat: %s", exc)
            raise SystemExit(1) from None
        logger.info("beat: %d scheduled checks from %s", len(entries), path or "(no schedule file)")
        self.app.conf.beat_schedule = {**(self.app.conf.beat_schedule or {}), **beat_schedule(entries)}
        super().setup_schedule()


def declared_task(app: Any, name: str) -> str | None:
    """The task name beat declared for schedule entry `name` (RedBeat's `<redbeat_key_prefix><name>`
    hash, `definition` field, in beat's Redis), or None when beat declares no such entry.

    One HGET, made only for runs that carry the `checkgate_schedule` header. Raises what redis-py raises."""
    raw = get_redis(app).hget(app.conf.redbeat_key_prefix + name, "definition")
    if not raw:
        return None
    try:
        definition = json.loads(raw)
    except ValueError:
        return None
    task = definition.get("task") if isinstance(definition, dict) else None
    return task if isinstance(task, str) else None


@task_postrun.connect
def remember_latest_run(sender: Any = None, task_id: str | None = None, state: str | None = None, **_: Any) -> None:
    """Point `checkgate:schedule:<prefix><name>` at this run once it finished (any final state), when beat
    declared an entry `name` of this run's task.

    The header alone is not trusted: anyone who can publish a message can set it (the gateway's task API
    refuses it, gateway/flower_api.py, but the broker has other producers), so a run whose task is not
    the one the entry declares — or whose entry does not exist — is not recorded (a forged /schedule
    result and `checkgate_scheduled_check_success` otherwise)."""
    name = getattr(getattr(sender, "request", None), HEADER, None)
    if not name or not task_id:
        return
    client = getattr(sender.backend, "client", None)  # the Redis result backend's client, if that is it
    if client is None:
        return
    name = str(name)
    try:
        declared = declared_task(sender.app, name) if _NAME_RE.fullmatch(name) else None
    except Exception:
        logger.exception("could not read the schedule entry %r of task %s", name[:100], task_id)
        return
    if declared != sender.name:
        logger.warning(
            "run %s of %s names schedule entry %r, which beat declares for %s: not recorded",
            task_id,
            sender.name,
            name[:100],
            declared or "no task",
        )
        return
    try:
        # Lives as long as the result it points to.
        client.set(latest_key(name), task_id, ex=int(sender.app.conf.result_expires or 0) or None)
    except Exception:
        logger.exception("could not record the latest run of scheduled check %s (%s)", name, state)


def main(argv: list[str] | None = None) -> int:
    """`python -m tasks.schedule [FILE]`: validate a schedule file and list what beat would run."""
    args = sys.argv[1:] if argv is None else argv
    try:
        path = Path(args[0]) if args else schedule_path()
        if path is None:
            print("no schedule file (set CHECKGATE_SCHEDULE or add schedule.toml to the node's home, CHECKGATE_HOME)")
            return 0
        entries = load_schedule(path)
    except ScheduleError as exc:
        print(exc, file=sys.stderr)
        return 1
    for name, entry in entries.items():
        print(f"{name}: {entry.check.task_name} {entry.run_every!r} expires={entry.expires:g}s {entry.kwargs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
