"""The worker side of checkgate.

- `tasks.celery`: the Celery app the workers run (`celery -A tasks worker` finds it there, as Celery's
  own project layout does), with one task per declared check;
- `tasks.registry`: the check declarations (`check`, `Param`, `CheckType`, `load_checks`), which the
  gateway reads to validate requests without building the worker's app;
- `tasks.checks`: the built-in check types, one module each, and the helpers plugins use;
- `tasks.deadline`: every check runs under its request's deadline;
- `tasks.schedule`: scheduled checks (beat).

Importing this package imports nothing else: the gateway, celeryconfig and plugins can read the
declarations without the worker's app, RedBeat or the checks' dependencies being loaded as a side effect.
"""
