"""What a hostile caller names as a CA bundle: one path of each kind that must be refused, made under a
directory the workers are allowed to read (issue #11, finding 3)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from tasks.checks import _trust


def make_hostile(d: Path, outside_pem: Path) -> dict[str, Path]:
    """Paths under the CA directory `d` that must all be refused, by what they are; `outside_pem` is a
    valid bundle outside `d` (a symlink points to it, the oversized file starts with it)."""
    paths = {
        "missing": d / "missing.pem",
        "fifo": d / "fifo.pem",
        "symlink to /proc/self/fd/0": d / "stdin.pem",
        "symlink to /dev/stdin": d / "devstdin.pem",
        "symlink to /etc/shadow": d / "shadow.pem",
        "symlink to /root/.ssh/id_rsa": d / "id_rsa.pem",
        "symlink out of the directory": d / "elsewhere.pem",
        "through a directory symlink out": d / "etc" / "passwd",
        "symlink loop": d / "loop-a.pem",
        "directory": d / "dir.pem",
        "socket": d / "sock.pem",
        "oversized": d / "big.pem",
        "not PEM": d / "text.pem",
    }
    os.mkfifo(paths["fifo"])
    paths["symlink to /proc/self/fd/0"].symlink_to("/proc/self/fd/0")
    paths["symlink to /dev/stdin"].symlink_to("/dev/stdin")
    paths["symlink to /etc/shadow"].symlink_to("/etc/shadow")
    paths["symlink to /root/.ssh/id_rsa"].symlink_to("/root/.ssh/id_rsa")
    paths["symlink out of the directory"].symlink_to(outside_pem)
    (d / "etc").symlink_to("/etc")
    paths["symlink loop"].symlink_to(d / "loop-b.pem")
    (d / "loop-b.pem").symlink_to(paths["symlink loop"])
    paths["directory"].mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(paths["socket"]))
    pem = outside_pem.read_text()
    paths["oversized"].write_text(pem + "#" * _trust.MAX_CA_BYTES)  # a valid bundle, only too big
    paths["not PEM"].write_text("root:x:0:0:root:/root:/bin/bash\n")
    return paths
