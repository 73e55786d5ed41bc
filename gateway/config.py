"""Gateway settings, read once from the environment (`CHECKGATE_*`): one typed mapping.

Each setting is a field of `Settings`: its variable is ``CHECKGATE_`` + the field's name in capitals,
its type and default are the field's, and `setting()` gives its bounds and its one line of doc.
`Settings.from_env()` reads them all; an empty variable means the default. A value that is not of the
field's type or lies outside its bounds raises `ConfigError`, which names the variable, the value and
the form expected (``CHECKGATE_PORT='abc': expected an integer from 1 to 65535``);
`gateway.server.main` prints it and exits with status 2, without a traceback. Settings built in code
(tests) are held to the same bounds. The README's table of these variables is generated from the
fields (`Settings.documented()`; tests/test_config.py keeps it in step).

Why our own code (the conversion and bounds below) and not pydantic-settings, measured with
`python -m bench.library_cost --peer-python <a venv with pydantic-settings 2.16>` on the 2-core
development VM (load average 16 from other work, five interleaved rounds, each in a fresh process):
importing pydantic-settings and building a `BaseSettings` of these thirteen fields took 441-928 ms
(median 872) where everything the gateway imports (`import gateway.server`) took 931-2179 ms (median
1678), so +52 % on the gateway's start-up. It would add five distributions (pydantic, pydantic-core,
annotated-types, typing-inspection, python-dotenv: 10.8 MB), and its errors name the field (``port``),
not the variable, so they would need rewriting all the same. Tornado's `OptionParser`, which Flower's
`apply_env_options` feeds from ``FLOWER_*`` variables, is installed already but converts with a bare
``int()`` (the very error this module exists to replace) and knows no bounds.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ENV_PREFIX = "CHECKGATE_"
_INT_RE = re.compile(r"[+-]?[0-9]{1,18}")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A setting's value cannot be used: `variable` names it, the message says what form it must have
    (`expected`) and, when the form alone does not say it, what is wrong (`detail`)."""

    def __init__(self, variable: str, value: object, expected: str, detail: str = "") -> None:
        super().__init__(
            f"{variable}={value!r}: " + (f"{detail}; expected {expected}" if detail else f"expected {expected}")
        )
        self.variable = variable
        self.expected = expected

    @classmethod
    def stated(cls, variable: str, message: str) -> ConfigError:
        """A `ConfigError` whose whole message is `message` (another module's, which names `variable`)."""
        error = cls.__new__(cls)
        ValueError.__init__(error, message)
        error.variable, error.expected = variable, ""
        return error


@dataclass(frozen=True)
class Bounds:
    """What one setting accepts beyond its type, and its line of doc."""

    doc: str
    minimum: float | None = None  # inclusive
    above: float | None = None  # exclusive lower bound: "> 0" for durations
    maximum: float | None = None  # inclusive
    pattern: str | None = None  # strings: a full match of this regular expression
    form: str = ""  # strings: the expected form, in words, when a pattern says it
    unit: str = ""  # numbers: what they count ("seconds")
    default_doc: str = ""  # what the default means when its value does not say it ("random")


def setting(default: Any, doc: str, **bounds: Any) -> Any:
    """A `Settings` field: its default, its one line of doc and its `Bounds` (keyword arguments)."""
    return field(default=default, metadata={"bounds": Bounds(doc, **bounds)})


@dataclass(frozen=True)
class Settings:
    """Everything the gateway process needs to know that is not in celeryconfig (see `from_env`)."""

    port: int = setting(
        8888,
        "TCP port the gateway listens on (workers refuse it as a target: give them the same value)",
        minimum=1,
        maximum=65535,
    )
    bind: str = setting(
        "127.0.0.1",
        "address the gateway listens on, 0.0.0.0 or :: for every interface (give workers the same value)",
        pattern=r"[A-Za-z0-9.:_%-]{1,253}",
        form="an IP address or host name",
    )
    publish_timeout: float = setting(
        15.0,
        "seconds a publish may wait for the broker's confirm (at most the request's timeout) before a 503",
        above=0,
        unit="seconds",
    )
    max_inflight: int = setting(
        20_000,
        "requests in flight (published, not yet answered) beyond which new ones get 503 + `Retry-After`",
        minimum=1,
    )
    max_inflight_per_type: int = setting(
        10_000, "the same per check type, so a flooded type leaves room for the others", minimum=1
    )
    max_queue_depth: int = setting(
        10_000, "ready messages in a type's queue beyond which its new requests get 503 + `Retry-After`", minimum=1
    )
    retry_after: int = setting(2, "seconds a 503 asks the caller to wait (`Retry-After`)", minimum=1, maximum=3600)
    id_prefix: str = setting(
        "",
        "prefix of every task id this process issues; must be unique per gateway process",
        pattern=r"[A-Za-z0-9._:-]{1,40}",
        form="1 to 40 of A-Z a-z 0-9 . _ : -",
        default_doc="random",
    )
    api_keys_file: str = setting(
        "",
        "TOML file of API keys (see Security)",
        form="the path of a readable TOML file",
        default_doc="unset: no key asked",
    )
    idle_timeout: float = setting(
        75.0,
        "seconds a connection may idle between requests, and a client may take to read an answer",
        above=0,
        unit="seconds",
    )
    head_timeout: float = setting(
        10.0, "seconds a request head may take from its first byte (then 408)", above=0, unit="seconds"
    )
    body_timeout: float = setting(10.0, "seconds an accepted request body may take (then 408)", above=0, unit="seconds")
    debug: bool = setting(False, "include tracebacks in 502 bodies")
    processes: int = setting(
        len(os.sched_getaffinity(0)),
        "gateway processes serving the port, each with its own broker connection and result subscription: "
        "`checkgate run` starts this many under supervisord; above 1 each listens with `SO_REUSEPORT`",
        minimum=1,
        maximum=256,
        default_doc="the number of cores",
    )
    process_num: str = setting(
        "",
        "this process's number among the gateway's processes (supervisord's `process_num`): names its metrics "
        "files and ends its id prefix",
        pattern=r"[0-9]{1,3}",
        form="a number from 0 to 999",
        default_doc="unset: one process alone",
    )

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            _check(variable(spec), getattr(self, spec.name), spec.default, spec.metadata["bounds"])

    def own_id_prefix(self) -> str | None:
        """The prefix of this process's task ids: `id_prefix` with ``p<process_num>-`` appended when both are
        set (supervisord gives every process of the group the same CHECKGATE_ID_PREFIX, and prefixes must
        differ; ``p1-`` is no prefix of ``p10-``), `id_prefix` alone, or None (random: gateway/aiocelery)."""
        if not self.id_prefix:
            return None
        return f"{self.id_prefix}p{self.process_num}-" if self.process_num else self.id_prefix

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``CHECKGATE_PORT``, ``CHECKGATE_BIND``, … (`environ`, default: `os.environ`).

        Unset and empty variables take the field's default. Raises `ConfigError` naming the first
        variable whose value is not of the field's type or lies outside its bounds.
        """
        environ = os.environ if environ is None else environ
        given = {}
        for spec in dataclasses.fields(cls):
            name, bounds = variable(spec), spec.metadata["bounds"]
            raw = environ.get(name, "")
            if raw == "":
                continue
            given[spec.name] = _read(name, raw, spec.default, bounds)
        return cls(**given)

    @classmethod
    def documented(cls) -> list[tuple[str, str, str]]:
        """(variable, default, what it holds and its form) for every setting, in declaration order; the
        default in Markdown (a value as `code`, a meaning in words)."""
        rows = []
        for spec in dataclasses.fields(cls):
            bounds: Bounds = spec.metadata["bounds"]
            default = bounds.default_doc or f"`{_shown(spec.default)}`"
            form = expected(spec.default, bounds)
            rows.append((variable(spec), default, f"{bounds.doc}: {form}" if form else bounds.doc))
        return rows


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def env_number(
    name: str,
    default: int | float,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    unit: str = "",
    environ: Mapping[str, str] | None = None,
) -> Any:
    """One number from the environment, with the same rules and errors as a `Settings` field.

    For the settings other processes read (celeryconfig, the alerts listener): `name` is the whole
    variable name; the result has the type of `default` (int or float), which an unset or empty
    variable gives. Raises `ConfigError` naming the variable, as `Settings.from_env` does.
    """
    raw = (os.environ if environ is None else environ).get(name, "")
    if raw == "":
        return default
    return _read(name, raw, default, Bounds("", minimum=minimum, above=above, maximum=maximum, unit=unit))


def variable(spec: dataclasses.Field[Any]) -> str:
    """The environment variable of a `Settings` field."""
    return ENV_PREFIX + spec.name.upper()


def expected(default: Any, bounds: Bounds) -> str:
    """The form a setting's value must have, in words (for errors and the README)."""
    if isinstance(default, bool):
        return f"one of {', '.join(_TRUE + _FALSE)}"
    if isinstance(default, str):
        return bounds.form
    noun = "an integer" if isinstance(default, int) else "a number"
    unit = f" of {bounds.unit}" if bounds.unit else ""
    lower = f"{bounds.minimum:g}" if bounds.minimum is not None else None
    if lower is not None and bounds.maximum is not None:
        return f"{noun}{unit} from {lower} to {bounds.maximum:g}"
    limits = [f">= {lower}"] if lower is not None else []
    limits += [f"> {bounds.above:g}"] if bounds.above is not None else []
    limits += [f"<= {bounds.maximum:g}"] if bounds.maximum is not None else []
    return " ".join([noun + unit, *limits])


def _read(name: str, raw: str, default: Any, bounds: Bounds) -> Any:
    """The value of variable `name` from its text `raw`; errors quote `raw` as given, not as converted."""
    value = _convert(name, raw, default, bounds)
    try:
        _check(name, value, default, bounds)
    except ConfigError as exc:
        raise ConfigError(name, raw, exc.expected) from None
    return value


def _convert(name: str, raw: str, default: Any, bounds: Bounds) -> Any:
    text = raw.strip()
    if isinstance(default, bool):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(name, raw, expected(default, bounds))
    if isinstance(default, int):
        if not _INT_RE.fullmatch(text):
            raise ConfigError(name, raw, expected(default, bounds))
        return int(text)
    if isinstance(default, float):
        try:
            return float(text)  # nan and inf are refused by the bounds check
        except ValueError:
            raise ConfigError(name, raw, expected(default, bounds)) from None
    return raw


def _check(name: str, value: Any, default: Any, bounds: Bounds) -> None:
    """Raise `ConfigError` when `value` is not of the type of the field's `default` or lies outside `bounds`."""
    kind = type(default)
    numeric = kind in (int, float) and isinstance(value, int | float) and not isinstance(value, bool)
    if not (isinstance(value, kind) or (kind is float and numeric)):
        raise ConfigError(name, value, expected(default, bounds))
    if isinstance(value, str):
        if value and bounds.pattern is not None and not re.fullmatch(bounds.pattern, value):
            raise ConfigError(name, value, bounds.form)
        return
    if isinstance(value, bool):
        return
    if (
        not math.isfinite(value)
        or (bounds.minimum is not None and value < bounds.minimum)
        or (bounds.above is not None and not value > bounds.above)
        or (bounds.maximum is not None and value > bounds.maximum)
    ):
        raise ConfigError(name, value, expected(default, bounds))


_VARIABLE_RE = re.compile(r"CHECKGATE_[A-Z0-9_]+")


def check_read_later(environ: Mapping[str, str] | None = None) -> None:
    """Read now every setting the gateway process would otherwise read later — celeryconfig's (imported when
    the Celery client starts), the checks of ``CHECKGATE_CHECK_MODULES``, the target policy's and
    ``CHECKGATE_CA_DIRS`` (read at each request's validation), the task API's and the console's — so that
    a value it cannot use stops the start (`gateway.server.main`: one line, exit status 2) instead of
    failing requests later. Imports celeryconfig; resolves no name and connects to nothing.

    Raises `ConfigError` naming the variable at fault. celeryconfig reads the process's own environment,
    so `environ` (default: os.environ) must be it for those.
    """
    import importlib

    from gateway.flower_api import TaskApiSettings
    from gateway.nodes import ConfigError as FileConfigError
    from tasks.checks._guard import PolicyConfigError, celery_urls, check_environment
    from tasks.checks._trust import CA_DIRS_ENV, check_ca_dirs

    environ = os.environ if environ is None else environ
    try:
        importlib.import_module("celeryconfig")
    except ConfigError:
        raise
    except ImportError as exc:  # a module of CHECKGATE_CHECK_MODULES (or a plugin's entry point)
        raise ConfigError(
            "CHECKGATE_CHECK_MODULES", environ.get("CHECKGATE_CHECK_MODULES", ""), "importable modules", str(exc)
        ) from None
    except ValueError as exc:  # celeryconfig's and tasks.locations' messages start with the variable
        found = _VARIABLE_RE.search(str(exc))
        raise ConfigError.stated(found.group() if found else "CHECKGATE_*", str(exc)) from None
    if environ.get("CHECKGATE_CONSOLE_CONFIG"):
        from gateway.console.config import settings_from_env

        try:
            settings_from_env(environ)
        except FileConfigError as exc:
            raise ConfigError.stated("CHECKGATE_CONSOLE_CONFIG", f"CHECKGATE_CONSOLE_CONFIG: {exc}") from None
    try:
        check_environment(celery_urls(), environ)
    except PolicyConfigError as exc:
        raise ConfigError.stated(exc.variable, str(exc)) from None
    try:
        check_ca_dirs(environ.get(CA_DIRS_ENV, ""))
    except ValueError as exc:
        raw = environ.get(CA_DIRS_ENV, "")
        raise ConfigError(CA_DIRS_ENV, raw, "comma-separated absolute directories", str(exc)) from None
    try:
        TaskApiSettings.from_env(environ)
    except ValueError as exc:
        raise ConfigError.stated("CHECKGATE_TASK_API_MAX_TIMEOUT", str(exc)) from None
