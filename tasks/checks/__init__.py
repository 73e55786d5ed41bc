"""Built-in check types, one module each (`tasks.registry.load_checks` imports them), and the plugin API.

Modules starting with an underscore are shared helpers: the result shape and connections (`_common`),
the target policy (`_guard`), the CA certificates a caller may give (`_trust`) and certificate decoding
(`_x509`).

A check of another package (a plugin) that touches the network imports what it needs from here:
`connect` for a TCP connection, `resolve` for an address to send to (UDP) or to hand to a client
library, `host_param`/`port_param` for parameters the gateway pre-checks. Both let the target policy
judge every address after resolution; a plugin that opens sockets by itself bypasses it.
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
    resolve,
)

__all__ = [
    "NETWORK_ERRORS",
    "Endpoint",
    "Probe",
    "ProbeFailure",
    "classify",
    "connect",
    "host_param",
    "port_param",
    "resolve",
]
