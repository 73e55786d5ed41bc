"""The check registry: what each check type is called, where it runs and what it accepts.

Workers read it to register Celery tasks and to declare one queue per type; the gateway reads the very
same declarations to validate a request before anything is published. A check is a plain function plus
a `CheckType` declaration, registered with the `check` decorator.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Parameters the gateway itself consumes; a check may not declare them (`location` and `require`: where
# it runs, gateway/locations.py).
RESERVED_PARAMS = frozenset({"mode", "timeout", "format", "location", "require"})
# The shortest `timeout` a check accepts unless it declares its own: one trip through the broker, a
# worker and Redis takes milliseconds on an idle machine and tens of them under load, so a deadline
# below this could only ever expire (the task dropped unrun), which a 400 says more plainly.
DEFAULT_MIN_TIMEOUT = 0.1

_INT_RE = re.compile(r"[+-]?[0-9]{1,19}")
_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


class ParamError(ValueError):
    """A request parameter is missing, unknown or out of bounds; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Param:
    """One query parameter of a check type: its name, its type and the values it allows.

    The gateway converts the raw query-string text with `parse` before anything is published, and the
    worker's function receives the converted value as the keyword argument `name`. `/checks` and
    `/openapi.json` describe it from these fields.

    Parameters:
      name(str): the query parameter and keyword argument name; ``mode``, ``timeout`` and ``format`` are
        the gateway's own (`RESERVED_PARAMS`).
      type(type): ``str`` (default), ``int`` (decimal, at most 19 digits), ``float`` (finite) or ``bool``
        (``1 true yes on`` / ``0 false no off``, any case).
      required(bool): a request without it is a 400 naming it (default: false).
      default: the value passed when the request omits it (not converted; ``None`` unless given).
      min(float): the smallest value allowed, inclusive, in the parameter's own unit (numbers only).
      max(float): the largest value allowed, inclusive.
      choices(tuple): the only values allowed, compared after conversion.
      max_length(int): the longest raw text accepted, in characters, before any conversion (default
        2048); the gateway's URL limits (16 KiB) come first.
      doc(str): one line for `/checks` and `/openapi.json`: what it is and its unit.
      validator(callable): a rule beyond type and bounds, called with the converted value; raises
        `ValueError` whose message (meant for the caller) becomes the 400's error.
    """

    name: str
    type: type = str
    required: bool = False
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    max_length: int = 2048
    doc: str = ""
    validator: Callable[[Any], None] | None = None

    def parse(self, raw: str) -> Any:
        """The value of `raw` (query-string text, already URL-decoded) as this parameter's type.

        Checks, in order: `max_length`, the type, `choices`, `min`/`max`, then `validator`. Raises
        `ParamError` whose `field` is this parameter's name and whose message says what is wrong.
        """
        if len(raw) > self.max_length:
            raise ParamError(self.name, f"longer than {self.max_length} characters")
        value = self._convert(raw)
        if self.choices is not None and value not in self.choices:
            raise ParamError(self.name, f"must be one of {', '.join(map(str, self.choices))}")
        if self.min is not None and value < self.min:
            raise ParamError(self.name, f"must be >= {self.min}")
        if self.max is not None and value > self.max:
            raise ParamError(self.name, f"must be <= {self.max}")
        if self.validator is not None:
            try:
                self.validator(value)
            except ValueError as exc:
                raise ParamError(self.name, str(exc)) from None
        return value

    def _convert(self, raw: str) -> Any:
        if self.type is int:
            if not _INT_RE.fullmatch(raw):
                raise ParamError(self.name, f"must be an integer, got {raw[:40]!r}")
            return int(raw)
        if self.type is float:
            try:
                value = float(raw)
            except ValueError:
                raise ParamError(self.name, f"must be a number, got {raw[:40]!r}") from None
            if not math.isfinite(value):
                raise ParamError(self.name, "must be a finite number")
            return value
        if self.type is bool:
            try:
                return _BOOLS[raw.lower()]
            except KeyError:
                raise ParamError(self.name, "must be true or false") from None
        if not raw:
            raise ParamError(self.name, "must not be empty")
        return raw

    def describe(self) -> dict[str, Any]:
        """The declaration as JSON for `/checks`: name, type name, required, then default, min, max,
        choices, max_length (strings) and doc where they apply."""
        out: dict[str, Any] = {"name": self.name, "type": self.type.__name__, "required": self.required}
        if not self.required:
            out["default"] = self.default
        for key in ("min", "max", "choices"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.type is str:
            out["max_length"] = self.max_length
        if self.doc:
            out["doc"] = self.doc
        return out


@dataclass(frozen=True)
class CheckType:
    """A registered check type: the function that runs it and the declaration everyone else reads.

    Made by `check`, which documents each field (same names); kept in `REGISTRY` by name. Workers
    register `fn` as the Celery task `task_name` on `queue`; the gateway validates requests with
    `validate` and publishes to that queue.
    """

    name: str
    fn: Callable[..., Any]
    queue: str
    params: tuple[Param, ...]
    doc: str = ""
    pool: str = "io"
    default_timeout: float = 30.0
    max_timeout: float = 300.0
    min_timeout: float = DEFAULT_MIN_TIMEOUT
    validator: Callable[[dict[str, Any]], None] | None = None
    idempotent: bool = True
    cache_ttl: float = 0.0
    coalesce: bool = False

    @property
    def shares_results(self) -> bool:
        """Whether identical requests may share a task: coalescing or a cache."""
        return self.coalesce or self.cache_ttl > 0

    @property
    def task_name(self) -> str:
        """The Celery task name workers register and messages carry."""
        return f"checkgate.{self.name}"

    @property
    def wants_deadline(self) -> bool:
        """Whether the function takes `deadline` (epoch seconds: the task's `expires`, else `max_timeout`
        from its start) to bound its own I/O. Every check runs under it either way (tasks/deadline.py)."""
        return "deadline" in inspect.signature(self.fn).parameters

    def validate(self, given: Mapping[str, str]) -> dict[str, Any]:
        """The task's keyword arguments from the request's query values (name → text, the gateway's own
        ``mode``, ``timeout`` and ``format`` already taken out).

        Every declared parameter is in the result: parsed (`Param.parse`) or its default. Raises
        `ParamError` naming the field: an undeclared name, a missing required one, a value `parse`
        refuses, or what the type's cross-parameter `validator` refuses.
        """
        declared = {p.name for p in self.params}
        for name in given:
            if name not in declared:
                allowed = ", ".join(sorted(declared | RESERVED_PARAMS))
                raise ParamError(name, f"unknown parameter for check {self.name!r}; allowed: {allowed}")
        kwargs: dict[str, Any] = {}
        for param in self.params:
            raw = given.get(param.name)
            if raw is None:
                if param.required:
                    raise ParamError(param.name, "is required")
                kwargs[param.name] = param.default
            else:
                kwargs[param.name] = param.parse(raw)
        if self.validator is not None:
            self.validator(kwargs)
        return kwargs

    def describe(self) -> dict[str, Any]:
        """The declaration as JSON for `/checks`: every option as declared (timeouts in seconds), and the
        parameters (`Param.describe`). The gateway replaces `queue` with the prefixed name it publishes to."""
        return {
            "name": self.name,
            "queue": self.queue,
            "pool": self.pool,
            "doc": self.doc,
            "default_timeout": self.default_timeout,
            "min_timeout": self.min_timeout,
            "max_timeout": self.max_timeout,
            "idempotent": self.idempotent,
            "cache_ttl": self.cache_ttl,
            "coalesce": self.coalesce,
            "params": [p.describe() for p in self.params],
        }


REGISTRY: dict[str, CheckType] = {}


def check(
    name: str | None = None,
    *,
    params: tuple[Param, ...] = (),
    queue: str | None = None,
    pool: str = "io",
    default_timeout: float = 30.0,
    max_timeout: float = 300.0,
    min_timeout: float = DEFAULT_MIN_TIMEOUT,
    validator: Callable[[dict[str, Any]], None] | None = None,
    idempotent: bool = True,
    cache_ttl: float = 0.0,
    coalesce: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as a check type, whose doc is the function's docstring.

    Use it on a module-level function in a module that `load_checks` imports (a built-in in
    tasks/checks/, an entry point of the ``checkgate.checks`` group, or `CHECKGATE_CHECK_MODULES`).
    The function takes the declared parameters as keyword arguments and returns the check's answer:
    a dict with ``ok``, ``reason`` (only when not ok), ``detail``, ``duration_ms`` and its own fields,
    which must serialize with msgpack; a target that is down is a normal return with ``ok: false``,
    and only a check that could not run raises (502 to the caller). It runs under its request's
    deadline: a function that declares a ``deadline`` parameter receives it (epoch seconds: the task's
    ``expires``, else `max_timeout` from its start); `tasks.deadline.remaining()` and
    `tasks.deadline.sleep()` read it; one still running 0.5 s past it is ended
    (``DeadlineExceeded``), so a check should bound its own waits.

    Options:
      name(str): the type's name, in ``/check/<name>`` and in its task name ``checkgate.<name>``
        (default: the function's name).
      params(tuple[Param, ...]): the query parameters it takes, in order (`Param`); ``mode``, ``timeout``
        and ``format`` are the gateway's own and may not be declared.
      queue(str): the queue its tasks go to, before ``CHECKGATE_QUEUE_PREFIX`` (default: the name); a
        worker serves it with ``celery -A tasks worker -Q <queue>``.
      pool(str): the worker pool it suits, as `/checks` tells operators: ``io`` (threads, for checks
        that wait on the network) or ``cpu`` (prefork); the worker's command line chooses.
      default_timeout(float): seconds a request waits for the answer when it gives no ``timeout``.
      min_timeout(float): the shortest ``timeout`` a request may ask for, in seconds; shorter is a 400
        naming ``timeout`` (a deadline shorter than a trip through broker, worker and Redis could only
        expire).
      max_timeout(float): the longest ``timeout`` a request may ask for, in seconds; also the deadline
        of a task published without one (scheduled runs).
      validator(callable): a rule across parameters, called with the parsed keyword arguments; raises
        `ParamError` naming the field at fault (a 400).
      idempotent(bool): whether running it twice is harmless. True: its task is acknowledged after it
        ran, so a task whose worker died is redelivered. False: acknowledged before it runs, so it runs
        at most once (the caller may get a 504 instead).
      coalesce(bool): identical sync requests (same type, arguments and ``timeout``) in flight at the
        same time share one task, with no cache afterwards: for checks whose answer depends on their
        arguments only (``add``), not on when they run. Idempotent checks only.
      cache_ttl(float): seconds a SUCCESS result answers new identical sync requests without a task
        (0: never); identical requests in flight share one task as with `coalesce`. Idempotent checks
        only.

    Returns:
      The decorator; it registers the function in `REGISTRY` under the type's name (a later
      registration of the same name replaces it) and returns the function unchanged.

    Raises:
      ValueError: when the declaration is inconsistent, at import: an unknown `pool`, sharing results
        (`coalesce`, `cache_ttl`) without `idempotent`, timeouts not in the order
        0 < `min_timeout` <= `default_timeout` <= `max_timeout`, or a reserved parameter name.
    """

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        check_name = name or fn.__name__
        if pool not in ("io", "cpu"):
            raise ValueError(f"check {check_name}: pool must be 'io' or 'cpu'")
        if (cache_ttl or coalesce) and not idempotent:
            raise ValueError(f"check {check_name}: only an idempotent check may share or cache results")
        if not 0 < min_timeout <= default_timeout <= max_timeout:
            raise ValueError(f"check {check_name}: needs 0 < min_timeout <= default_timeout <= max_timeout")
        clash = RESERVED_PARAMS & {p.name for p in params}
        if clash:
            raise ValueError(f"check {check_name}: parameter names reserved by the gateway: {sorted(clash)}")
        REGISTRY[check_name] = CheckType(
            name=check_name,
            fn=fn,
            queue=queue or check_name,
            params=tuple(params),
            doc=inspect.cleandoc(fn.__doc__ or ""),
            pool=pool,
            default_timeout=default_timeout,
            max_timeout=max_timeout,
            min_timeout=min_timeout,
            validator=validator,
            idempotent=idempotent,
            cache_ttl=cache_ttl,
            coalesce=coalesce,
        )
        return fn

    return register


ENTRY_POINT_GROUP = "checkgate.checks"
# The built-in check types, one module each (tasks/checks/); importing one registers it.
BUILTIN_CHECKS = ("add", "dns", "http", "sleep", "tcp", "tls")


def load_checks() -> dict[str, CheckType]:
    """Import every check module (once) and return the registry, name → `CheckType`.

    Checks come from the built-ins (`BUILTIN_CHECKS`, in `tasks.checks`), from installed packages that
    declare an entry point in the ``checkgate.checks`` group (the entry point names a module that
    registers checks with `check`), and from the comma-separated modules in `CHECKGATE_CHECK_MODULES`.
    Workers and gateway must see the same set. Importing is done once by Python; calling again only
    returns `REGISTRY`.

    Raises:
      ImportError: a module of `CHECKGATE_CHECK_MODULES` or an entry point that cannot be imported.
      ValueError: a declaration `check` refuses.
    """
    for name in BUILTIN_CHECKS:
        importlib.import_module(f"tasks.checks.{name}")
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        entry_point.load()
    for module in filter(None, (m.strip() for m in os.environ.get("CHECKGATE_CHECK_MODULES", "").split(","))):
        importlib.import_module(module)
    return REGISTRY
