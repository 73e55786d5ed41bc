"""Built-in check types, one module each; importing this package registers them."""

from tasks.checks import add, http, sleep  # noqa: F401
