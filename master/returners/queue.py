"""A returner's bounded on-disk queue: documents wait here while the destination is away.

One SQLite file per returner, ``data_dir/returner-NAME.queue`` (0600), used by the
returner's worker thread alone. A document stays until the destination took it (or
refused it for good). At ``max_docs`` the oldest are dropped to make room — the newest say
most about a cluster that is unhealthy now — and the pump counts what was dropped.
"""

import json
import os
import sqlite3
from pathlib import Path

from master.returners.base import KINDS, Doc, Kind

_SCHEMA = """CREATE TABLE IF NOT EXISTS queue (
    row INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT NOT NULL
)"""


class DiskQueue:
    def __init__(self, path: Path, max_docs: int) -> None:
        self.path = path
        self.max_docs = max_docs
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # 0600 before any row is written
        os.close(fd)
        os.chmod(path, 0o600)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._depth = int(self._db.execute("SELECT count(*) FROM queue").fetchone()[0])

    @property
    def depth(self) -> int:
        return self._depth

    def put(self, docs: list[Doc]) -> int:
        """Queue ``docs``; :returns: how many of the oldest were dropped to stay bounded."""
        if not docs:
            return 0
        rows = [(d.kind, d.id, json.dumps(d.body, default=str)) for d in docs]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO queue (kind, id, body) VALUES (?, ?, ?)", rows)
            over = self._depth + len(rows) - self.max_docs
            if over > 0:
                self._db.execute(
                    "DELETE FROM queue WHERE row IN (SELECT row FROM queue ORDER BY row LIMIT ?)",
                    (over,),
                )
        dropped = max(over, 0)
        self._depth += len(rows) - dropped
        return dropped

    def peek(self, limit: int) -> list[tuple[int, Doc]]:
        """The oldest ``limit`` documents, with their row numbers (for :meth:`remove`)."""
        found = self._db.execute(
            "SELECT row, kind, id, body FROM queue ORDER BY row LIMIT ?", (limit,)
        ).fetchall()
        out: list[tuple[int, Doc]] = []
        for row, kind, doc_id, body in found:
            if kind in KINDS:
                kind_: Kind = kind
                out.append((int(row), Doc(kind_, str(doc_id), json.loads(body))))
        return out

    def remove(self, rows: list[int]) -> None:
        if not rows:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM queue WHERE row = ?", [(r,) for r in rows])
        self._depth = int(self._db.execute("SELECT count(*) FROM queue").fetchone()[0])

    def close(self) -> None:
        self._db.close()
