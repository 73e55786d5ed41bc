"""gunicorn settings of the blocking peer: its workers die with their master.

Each worker asks the kernel for SIGKILL when its parent goes (PR_SET_PDEATHSIG): a master killed
outright (the harness killed with SIGKILL) must not leave 10 workers behind on a shared machine,
blocked in `AsyncResult.get` on tasks nobody will run.
"""

from typing import Any

from bench.stack import die_with_parent


def post_fork(server: Any, worker: Any) -> None:
    die_with_parent()
