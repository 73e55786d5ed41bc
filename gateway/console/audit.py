"""The audit log: who did what, where, with what result and when, in SQLite.

The calls run on the event loop, on purpose. Each is one small statement on a local file: an INSERT or
UPDATE of one row by primary key, or a SELECT capped at `MAX_ROWS` through an index, in WAL mode with
synchronous=NORMAL, so a commit appends to the WAL without an fsync. That takes tens of microseconds,
less than handing the work to a thread and back would cost, and keeps every write in the order the
actions happened. Searches are bounded so a large log cannot turn one page view into a long scan that
holds the loop: at most `MAX_ROWS` answers, and a text search looks at the newest `SCAN_ROWS` rows only
(a few milliseconds); older rows stay in the file for sqlite3 or an export.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_ROWS = 200
SCAN_ROWS = 50_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id      INTEGER PRIMARY KEY,
    ts      REAL NOT NULL,
    user    TEXT NOT NULL,
    role    TEXT NOT NULL,
    client  TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    result  TEXT NOT NULL,
    detail  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_user ON audit (user, id);
CREATE INDEX IF NOT EXISTS audit_action ON audit (action, id);
"""


@dataclass(frozen=True)
class Entry:
    """One audit row."""

    id: int
    ts: float
    user: str
    role: str
    client: str
    action: str
    target: str
    result: str
    detail: str

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.ts))


class AuditLog:
    """Append-mostly log of console actions; rows are never deleted through the console."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Who did what to which process is the operators' business: the file is made 0600 before SQLite
        # opens it (SQLite gives its -wal and -shm files the database's mode), and an older 0644 one is
        # narrowed.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        for path in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(path, 0o600)
        # The loop is the only user of this connection; check_same_thread=False merely allows the loop
        # to run in a thread other than the one that built the console (as in the tests).
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def record(self, user: str, role: str, client: str, action: str, target: str, result: str, detail: Any = "") -> int:
        """Add a row now; `result` may be "running" and be settled later by `finish`. Returns its id."""
        text = detail if isinstance(detail, str) else json.dumps(detail, default=str, separators=(",", ":"))
        cursor = self._db.execute(
            "INSERT INTO audit (ts, user, role, client, action, target, result, detail) VALUES (?,?,?,?,?,?,?,?)",
            (time.time(), user, role, client, action, target, result, text),
        )
        return int(cursor.lastrowid or 0)

    def finish(self, entry_id: int, result: str, detail: Any) -> None:
        """Settle the result of a row written when its action began."""
        text = detail if isinstance(detail, str) else json.dumps(detail, default=str, separators=(",", ":"))
        self._db.execute("UPDATE audit SET result = ?, detail = ? WHERE id = ?", (result, text, entry_id))

    def search(self, text: str = "", user: str = "", action: str = "", result: str = "") -> list[Entry]:
        """Newest first, at most MAX_ROWS: `text` anywhere (user, action, target, result, detail)."""
        clauses, args = [], []
        for column, value in (("user", user), ("action", action), ("result", result)):
            if value:
                clauses.append(f"{column} = ?")
                args.append(value)
        if text:
            like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            fields = ("user", "client", "action", "target", "result", "detail")
            clauses.append("(" + " OR ".join(f"{f} LIKE ? ESCAPE '\\'" for f in fields) + ")")
            args += [like] * len(fields)
            clauses.append(f"id > (SELECT coalesce(max(id), 0) - {SCAN_ROWS} FROM audit)")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            f"SELECT id, ts, user, role, client, action, target, result, detail FROM audit {where} "
            f"ORDER BY id DESC LIMIT {MAX_ROWS}",
            args,
        ).fetchall()
        return [Entry(*row) for row in rows]

    def close(self) -> None:
        self._db.close()
