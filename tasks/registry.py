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
    """One declared parameter of a check type: its type and the values it allows."""

    name: str
    type: type = str
    required: bool = False
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    max_length: int = 2048
    doc: str = ""
    # Extra rule beyond type and bounds: raises ValueError with a message meant for the caller.
    validator: Callable[[Any], None] | None = None

    def parse(self, raw: str) -> Any:
        """Convert the raw query-string value; raise `ParamError` naming this parameter."""
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
        """The declaration as JSON for `/checks`."""
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
    """A registered check: the function that runs it and the declaration everyone else reads."""

    name: str
    fn: Callable[..., Any]
    queue: str
    params: tuple[Param, ...]
    doc: str = ""
    pool: str = "io"
    default_timeout: float = 30.0
    max_timeout: float = 300.0
    # Shortest timeout a request may ask for (seconds); shorter is a 400 naming `timeout`.
    min_timeout: float = DEFAULT_MIN_TIMEOUT
    # Rule across parameters, run on the parsed keyword arguments: raises ParamError naming the field.
    validator: Callable[[dict[str, Any]], None] | None = None
    # Whether running it twice is harmless. Idempotent checks are acknowledged after they ran, so a
    # worker's death redelivers them; the others before, so they run at most once (or answer 504).
    idempotent: bool = True
    # Seconds an identical request may be answered from a recent result (0: never). Identical requests
    # in flight at the same time then share one task too.
    cache_ttl: float = 0.0
    # Whether identical sync requests in flight at the same time share one task ("single flight"), with
    # no cache afterwards: for checks whose answer depends on their arguments only (`add`), not on
    # when they run or on the run itself taking time (`sleep`).
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
        """Turn raw query values into the task's keyword arguments, or raise `ParamError`."""
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
        """The declaration as JSON for `/checks`."""
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
            "coalesce": self.shares_results,
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
    """Register the decorated function as a check type (its docstring becomes the doc).

    `validator`, when given, checks rules that span parameters after each one was parsed, and raises
    `ParamError` naming the field at fault. A request's `timeout` must lie within `min_timeout` and
    `max_timeout` (seconds); `default_timeout` is used when it gives none.
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
    """Import every check module (once) and return the registry, name → declaration.

    Checks come from the built-ins (`BUILTIN_CHECKS`, in `tasks.checks`), from installed packages that declare an entry
    point in the `checkgate.checks` group (the entry point names a module that registers checks with
    `@check`), and from the comma-separated modules in `CHECKGATE_CHECK_MODULES`. Workers and gateway
    must see the same set.
    """
    for name in BUILTIN_CHECKS:
        importlib.import_module(f"tasks.checks.{name}")
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        entry_point.load()
    for module in filter(None, (m.strip() for m in os.environ.get("CHECKGATE_CHECK_MODULES", "").split(","))):
        importlib.import_module(module)
    return REGISTRY
