"""The reactor's audit trail and state, in the master's SQLite file (its own tables).

Every decision is a row: event -> rule -> verdict and reason -> jobs -> outcome. A fired
reaction records each action's progress before and after it runs, so a master restarted
mid-reaction resumes it: an action already dispatched is waited for, never sent twice;
an action not yet started is started.
"""

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from master.store.sqlite import pack_value, unpack_value

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS reactions (
        id TEXT PRIMARY KEY,
        event_seq INTEGER,
        event_tag TEXT NOT NULL,
        rule TEXT NOT NULL,
        verdict TEXT NOT NULL,
        reason TEXT NOT NULL,
        key TEXT NOT NULL,
        actions BLOB NOT NULL,
        progress BLOB NOT NULL,
        outcome TEXT,
        created REAL NOT NULL,
        finished REAL
    )""",
    "CREATE INDEX IF NOT EXISTS reactions_created ON reactions (created)",
    """CREATE TABLE IF NOT EXISTS reactor_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        state BLOB NOT NULL,
        updated REAL NOT NULL
    )""",
)
_COLUMNS = (
    "id, event_seq, event_tag, rule, verdict, reason, key, actions, progress, outcome,"
    " created, finished"
)


@dataclass
class ReactionRecord:
    id: str
    event_seq: int | None
    event_tag: str
    rule: str
    #: fire | skip | escalate | dry_run | await_approval | approved
    verdict: str
    reason: str
    key: str
    #: the rendered actions (plain data)
    actions: list[dict[str, Any]] = field(default_factory=list)
    #: per action index: {"state": "started"|"done"|"failed", "jid": ..., "detail": ...}
    progress: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: None while open; ok | failed | cancelled when finished
    outcome: str | None = None
    created: float = 0.0
    finished: float | None = None


class ReactionStore:
    """Audit rows and the reactor's state; all calls come from the master's loop thread."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        for statement in _SCHEMA:
            self._conn.execute(statement)

    def save(self, record: ReactionRecord) -> None:
        """Insert or replace one reaction (durable against a process kill on return)."""
        row = (
            record.id,
            record.event_seq,
            record.event_tag,
            record.rule,
            record.verdict,
            record.reason,
            record.key,
            pack_value(record.actions),
            pack_value({str(k): v for k, v in record.progress.items()}),
            record.outcome,
            record.created or time.time(),
            record.finished,
        )
        self._conn.execute(
            f"INSERT OR REPLACE INTO reactions ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608 - constant column list
            row,
        )

    def save_many(self, records: list[ReactionRecord]) -> None:
        """All of ``records`` in one transaction."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for record in records:
                self.save(record)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    @staticmethod
    def _record(row: tuple[Any, ...]) -> ReactionRecord:
        progress = {int(k): v for k, v in unpack_value(row[8]).items()}
        return ReactionRecord(
            id=row[0],
            event_seq=row[1],
            event_tag=row[2],
            rule=row[3],
            verdict=row[4],
            reason=row[5],
            key=row[6],
            actions=unpack_value(row[7]),
            progress=progress,
            outcome=row[9],
            created=row[10],
            finished=row[11],
        )

    def get(self, reaction_id: str) -> ReactionRecord | None:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM reactions WHERE id = ?",  # noqa: S608 - constant columns
            (reaction_id,),
        ).fetchone()
        return self._record(row) if row else None

    def history(self, limit: int = 50, rule: str | None = None) -> list[ReactionRecord]:
        """Newest first."""
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM reactions WHERE (? IS NULL OR rule = ?)"  # noqa: S608
            " ORDER BY created DESC, rowid DESC LIMIT ?",
            (rule, rule, limit),
        ).fetchall()
        return [self._record(r) for r in rows]

    def open_reactions(self) -> list[ReactionRecord]:
        """Fired or approved reactions that have not finished: resumed after a restart."""
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM reactions WHERE outcome IS NULL"  # noqa: S608
            " AND verdict IN ('fire', 'approved') ORDER BY created",
        ).fetchall()
        return [self._record(r) for r in rows]

    def save_state(self, state: dict[str, Any]) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO reactor_state (id, state, updated) VALUES (1, ?, ?)",
            (pack_value(state), time.time()),
        )

    def load_state(self) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT state FROM reactor_state WHERE id = 1").fetchone()
        return unpack_value(row[0]) if row else None

    def close(self) -> None:
        self._conn.close()
