"""The Celery app of the workers: `celery -A tasks worker -Q <queue>` runs every declared check.

Celery's `-A tasks` finds the app here (a package's `celery` module, Celery's documented layout), so
importing `tasks` itself stays free of side effects. One task per check type: its name is the check's
`task_name`, its acknowledgement follows `idempotent`, and it runs under its request's deadline.
"""

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import celeryd_after_setup, worker_ready

import tasks.schedule  # noqa: F401  (its task_postrun handler records the latest run of each scheduled check)
from tasks.checks._guard import PolicyConfigError, celery_urls, check_environment
from tasks.checks._trust import CA_DIRS_ENV, check_ca_dirs
from tasks.deadline import DeadlineExceeded, task_body
from tasks.locations import EX_CONFIG, consume_location_queues
from tasks.presence import start_announcing
from tasks.registry import load_checks
from tasks.run_once import ClaimUnavailable

log = logging.getLogger(__name__)


def check_settings(**_: Any) -> None:
    """Celery's `celeryd_after_setup` handler: the settings the checks read at each run (the target
    policy's, ``CHECKGATE_CA_DIRS``) read once before the worker consumes anything, so that a value they
    cannot use stops the worker with one line naming it (SystemExit, EX_CONFIG) instead of failing every
    check it would run."""
    try:
        check_environment(celery_urls())
        check_ca_dirs(os.environ.get(CA_DIRS_ENV, ""))
    except PolicyConfigError as exc:
        log.critical("a setting cannot be used: %s", exc)
        raise SystemExit(EX_CONFIG) from None
    except ValueError as exc:
        log.critical("a setting cannot be used: %s: %s", CA_DIRS_ENV, exc)
        raise SystemExit(EX_CONFIG) from None


app = Celery("checkgate")
app.config_from_object("celeryconfig")
celeryd_after_setup.connect(check_settings, weak=False)
# After -Q is applied: the worker's location queues (CHECKGATE_LOCATION), never another location's.
celeryd_after_setup.connect(consume_location_queues, weak=False)
# Which AMQP client this worker consumes with, for /health (read there without Celery's blocking broadcast).
worker_ready.connect(start_announcing, weak=False)

for _check in load_checks().values():
    # At-least-once (ack after running) only where a second run is harmless; otherwise at-most-once.
    _late = _check.idempotent
    app.task(
        task_body(_check),
        name=_check.task_name,
        bind=True,
        acks_late=_late,
        reject_on_worker_lost=_late,
        # Every check runs under its request's deadline (tasks/deadline.py): one that outlives it ends
        # with DeadlineExceeded, an expected outcome (logged without traceback); prefork's hard limit too.
        throws=(DeadlineExceeded, ClaimUnavailable),
        Request="tasks.deadline:DeadlineRequest",
        check_max_timeout=_check.max_timeout,
    )

__all__ = ["app"]
