"""Built-in check types, one module each; importing this package registers them.

Modules starting with an underscore are shared helpers: the result shape and connections (`_common`),
the target policy (`_guard`), the CA certificates a caller may give (`_trust`) and certificate decoding
(`_x509`).
"""

from tasks.checks import add, dns, http, sleep, tcp, tls  # noqa: F401
