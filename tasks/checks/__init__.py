"""Built-in check types, one module each (`tasks.registry.load_checks` imports them), and the plugin API.

Modules starting with an underscore are shared helpers: the result shape and connections (`_common`),
the target policy (`_guard`), caller-supplied regular expressions (`_pattern`), the CA certificates a
caller may give (`_trust`) and certificate decoding (`_x509`).

A check of another package (a plugin) imports what it needs from here, and a plugin that opens sockets
by itself bypasses the target policy:

- `Probe`: one run's clock, deadline, phase timings and answer (`Probe.result`);
- `resolve(host, port, probe)`: the one address to send to (UDP) or to hand to a client library, an
  `Endpoint`; `connect(host, port, probe)`: a TCP connection to it. Both let the target policy judge the
  name, the port and the address after resolution, and stop at the probe's deadline;
- `ProbeFailure`: raise it for a target that is down, slow or wrong; `NETWORK_ERRORS` is what to catch
  and `classify(exc)` its ``(reason, detail)`` for `Probe.result`;
- `host_param()`, `port_param()`, `regex_param(name, doc)`: parameters the gateway pre-checks (the target
  policy without DNS; the port range; RE2 syntax), and `compile_pattern` to match a `regex_param`'s
  value in linear time.

`tests/support/extra_checks.py`'s ``banner`` is a complete plugin check written this way.
"""

from tasks.checks._common import (
    NETWORK_ERRORS,
    Endpoint,
    Probe,
    ProbeFailure,
    classify,
    connect,
    host_param,
    port_param,
    regex_param,
    resolve,
)
from tasks.checks._pattern import compile_pattern

__all__ = [
    "NETWORK_ERRORS",
    "Endpoint",
    "Probe",
    "ProbeFailure",
    "classify",
    "compile_pattern",
    "connect",
    "host_param",
    "port_param",
    "regex_param",
    "resolve",
]
