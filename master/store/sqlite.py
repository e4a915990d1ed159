"""SQLite implementation of ``Store``: the embedded default, one file, WAL mode.

Durability: ``journal_mode=WAL`` with ``synchronous=NORMAL``. A committed transaction is
in the WAL file (in the OS page cache) when ``COMMIT`` returns, so it survives a crash or
``kill -9`` of the master process, which is the contract of ``base.Store``. It may be
lost on a power failure or kernel crash (the WAL is fsynced only at checkpoints); that
is the accepted trade-off for not paying one fsync per batch.

Structured values (args, kwargs, return values, event data, grains) are stored as
msgpack blobs: return values may hold bytes and large strings, which JSON cannot carry
losslessly. Tuples come back as lists, as they do over the wire.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from master.store import schema
from master.store.base import (
    TEST_SCAN_FACTOR,
    TEST_SCAN_MAX,
    Cutoffs,
    EventRecord,
    Fenced,
    JobFilter,
    JobRecord,
    JobSummary,
    KeyRow,
    MinionRecord,
    Pruned,
    ReactionRecord,
    ReturnRecord,
    Store,
    StoreError,
    StoreStats,
    TableStats,
)
from master.store.rows import (
    batch_epoch,
    event_from_row,
    event_row,
    job_from_row,
    job_row,
    key_from_row,
    key_row,
    kwargs_of,
    pack_value,
    reaction_from_row,
    reaction_row,
    return_from_row,
    return_row,
    unpack_value,
)
from master.store.schema import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "TEST_SCAN_FACTOR",
    "TEST_SCAN_MAX",
    "SqliteStore",
    "pack_value",
    "unpack_value",
]

BUSY_TIMEOUT_MS = 5000


def _glob(pattern: str | None) -> str | None:
    """A shell glob (``fnmatch``: ``[!abc]`` negates) in SQLite's GLOB spelling (``[^abc]``)."""
    return None if pattern is None else pattern.replace("[!", "[^")


class SqliteStore(Store):
    """``Store`` on one SQLite file.

    All calls must come from one thread (the master's event loop thread, see
    ``base.Store``); ``check_same_thread=False`` only allows creating the store in a
    different thread than the one using it. The connection is not thread-safe for
    concurrent use.
    """

    def __init__(self, path: Path) -> None:
        """Open (creating if missing) the database at ``path``.

        The parent directory is created with mode 0700 and the file is mode 0600: return
        values may contain secrets.
        """
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Create the file ourselves so it never exists with umask-derived permissions;
        # SQLite gives the -wal and -shm files the mode of the database file.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)

        # isolation_level=None: no implicit transactions, we issue BEGIN/COMMIT ourselves.
        self._conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            self._configure()
            self._migrate()
        except BaseException:
            self._conn.close()
            raise
        self._closed = False

    def _configure(self) -> None:
        (mode,) = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if str(mode).lower() != "wal":
            # e.g. a filesystem without shared memory support; the durability and
            # readers-don't-block guarantees depend on WAL, so refuse to run without it.
            raise RuntimeError(f"cannot enable WAL on {self.path} (journal_mode={mode})")
        # Durable against a process kill -9 (the master's crash model); see module doc.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS:d}")

    def _migrate(self) -> None:
        with self._transaction():
            (version,) = self._conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this code "
                    f"({SCHEMA_VERSION}); refusing to open it"
                )
            if version == SCHEMA_VERSION:
                return
            for step in range(version, SCHEMA_VERSION) if version else ():
                for statement in schema.MIGRATIONS[step]:
                    self._conn.execute(statement)
            for statement in schema.TABLES:
                self._conn.execute(statement)
            # PRAGMA takes no parameters; the value is our own integer constant.
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION:d}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; commits on success, rolls back on any exception.

        IMMEDIATE takes the write lock up front, so a concurrent writer (another process
        on the same file) makes us wait in busy_timeout at BEGIN rather than fail later.
        """
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException:
            # Also covers a failed COMMIT, which leaves the transaction open.
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    # -- fencing ----------------------------------------------------------------------

    def _fence(self, conn: sqlite3.Connection, epoch: int) -> None:
        """In the caller's IMMEDIATE transaction (the write lock is held: no other writer
        reads the fence between our read and our write): refuse an epoch older than the
        newest seen, else make it the newest. Epoch 0 is not checked.

        :raises Fenced: ``epoch`` is older (the caller's transaction rolls back).
        """
        if epoch <= 0:
            return
        row = conn.execute(schema.SELECT_FENCE).fetchone()
        newest = 0 if row is None else int(row[0])
        Fenced.check(epoch, newest)
        if epoch > newest:
            conn.execute(schema.SAVE_FENCE, (epoch,))

    def fence_epoch(self) -> int:
        row = self._conn.execute(schema.SELECT_FENCE).fetchone()
        return 0 if row is None else int(row[0])

    # -- jobs -------------------------------------------------------------------------

    def save_job(self, job: JobRecord) -> None:
        """Insert or replace the job; durable (see module doc) when this returns.

        :raises Fenced: see ``base.Store.save_job``.
        """
        row = job_row(job)
        with self._transaction() as conn:
            self._fence(conn, job.epoch)
            conn.execute(schema.INSERT_JOB, row)

    def get_job(self, jid: str) -> JobRecord | None:
        row = self._conn.execute(schema.SELECT_JOB, (jid,)).fetchone()
        return None if row is None else job_from_row(row)

    def list_jobs(self, limit: int = 50, filters: JobFilter | None = None) -> list[JobSummary]:
        """The ``limit`` newest jobs (by jid, which sorts by time) that pass ``filters``,
        newest first. Function, target and user filter in SQL; the test-mode filter reads
        the kwargs of at most ``TEST_SCAN_FACTOR * limit`` (at most ``TEST_SCAN_MAX``) jobs
        passing those."""
        wanted = filters or JobFilter()
        params = {"fun": _glob(wanted.fun), "target": _glob(wanted.target), "user": wanted.user}
        if wanted.test is None:
            rows = self._conn.execute(schema.LIST_JOBS, {**params, "limit": limit}).fetchall()
        else:
            scan = {**params, "limit": min(TEST_SCAN_FACTOR * limit, TEST_SCAN_MAX)}
            matching: list[str] = []
            cursor = self._conn.execute(schema.SCAN_JOBS_KWARGS, scan)
            for jid, kwargs in cursor:  # row by row: stop at the limit'th match
                if wanted.admits_test_mode(kwargs_of(kwargs)):
                    matching.append(jid)
                    if len(matching) == limit:
                        break
            cursor.close()
            rows = [self._conn.execute(schema.LIST_JOB, (jid,)).fetchone() for jid in matching]
        return [
            JobSummary(job=job_from_row(row[:-2]), returned=row[-2], succeeded=row[-1])
            for row in rows
            if row is not None
        ]

    # -- returns ----------------------------------------------------------------------

    def save_returns(self, returns: Sequence[ReturnRecord]) -> list[bool]:
        """Store the batch in one transaction; element i is True when returns[i] was new.

        Duplicates by (jid, minion) are ignored, including within the batch (the first
        occurrence wins). Durable (see module doc) when this returns.
        """
        if not returns:
            return []
        # Serialise before BEGIN so a bad value cannot hold the write lock.
        rows = [return_row(r) for r in returns]
        new: list[bool] = []
        with self._transaction() as conn:
            for row in rows:
                cur = conn.execute(schema.INSERT_RETURN, row)
                # rowcount is 1 when inserted, 0 when the (jid, minion) key already existed.
                new.append(cur.rowcount == 1)
        return new

    def job_returns(self, jid: str) -> dict[str, ReturnRecord]:
        """Returns of ``jid`` keyed by minion id."""
        rows = self._conn.execute(schema.SELECT_RETURNS, (jid,)).fetchall()
        return {row[1]: return_from_row(row) for row in rows}

    # -- events -----------------------------------------------------------------------

    def save_events(self, events: Sequence[EventRecord]) -> list[EventRecord]:
        """Store the batch in one transaction; returns copies with increasing ``seq`` set.

        Any ``seq`` already set on the input is ignored. AUTOINCREMENT guarantees seq is
        never reused, even after the newest events were deleted.
        """
        if not events:
            return []
        rows = [event_row(e) for e in events]
        saved: list[EventRecord] = []
        with self._transaction() as conn:
            for event, row in zip(events, rows, strict=True):
                cur = conn.execute(schema.INSERT_EVENT, row)
                saved.append(dataclasses.replace(event, seq=cur.lastrowid))
        return saved

    def events_since(self, seq: int = 0, limit: int = 1000) -> list[EventRecord]:
        """At most ``limit`` events with seq > ``seq``, oldest first."""
        rows = self._conn.execute(schema.EVENTS_SINCE, (seq, limit)).fetchall()
        return [event_from_row(row) for row in rows]

    def last_event_seq(self) -> int:
        (seq,) = self._conn.execute(schema.LAST_EVENT_SEQ).fetchone()
        return int(seq)

    # -- minions ----------------------------------------------------------------------

    def save_minion(self, minion: MinionRecord) -> None:
        """Insert or update (grains and last_seen) the minion."""
        row = (minion.id, pack_value(minion.grains), minion.last_seen)
        with self._transaction() as conn:
            conn.execute(schema.SAVE_MINION, row)

    def minions(self) -> dict[str, MinionRecord]:
        rows = self._conn.execute(schema.SELECT_MINIONS).fetchall()
        return {
            mid: MinionRecord(id=mid, grains=unpack_value(grains), last_seen=last_seen)
            for mid, grains, last_seen in rows
        }

    def forget_minion(self, minion_id: str) -> None:
        """Delete the minion's row (its jobs, returns and events are kept)."""
        with self._transaction() as conn:
            conn.execute(schema.DELETE_MINION, (minion_id,))

    # -- the reactor's trail --------------------------------------------------------------

    def save_reactions(self, reactions: Sequence[ReactionRecord]) -> None:
        """See ``base.Store.save_reactions``; fenced in the same transaction.

        :raises Fenced: the batch's epoch is older than the newest seen (nothing stored).
        """
        rows = [reaction_row(r) for r in reactions]  # before BEGIN: see save_returns
        with self._transaction() as conn:
            self._fence(conn, batch_epoch(reactions))
            for row in rows:
                conn.execute(schema.SAVE_REACTION, row)

    def get_reaction(self, reaction_id: str) -> ReactionRecord | None:
        row = self._conn.execute(schema.SELECT_REACTION, (reaction_id,)).fetchone()
        return None if row is None else reaction_from_row(row)

    def reaction_history(self, limit: int = 50, rule: str | None = None) -> list[ReactionRecord]:
        rows = self._conn.execute(schema.REACTION_HISTORY, (rule, rule, limit)).fetchall()
        return [reaction_from_row(r) for r in rows]

    def open_reactions(self) -> list[ReactionRecord]:
        return [reaction_from_row(r) for r in self._conn.execute(schema.OPEN_REACTIONS)]

    def decided_events(self, seqs: Sequence[int]) -> set[int]:
        """See ``base.Store.decided_events``: one query on the event_seq index."""
        if not seqs:
            return set()
        params = {"seqs": json.dumps([int(s) for s in seqs])}
        return {int(r[0]) for r in self._conn.execute(schema.DECIDED_EVENTS, params)}

    def save_reactor_state(self, state: dict[str, Any], epoch: int = 0) -> None:
        """See ``base.Store.save_reactor_state``; fenced in the same transaction."""
        row = (pack_value(state), time.time())
        with self._transaction() as conn:
            self._fence(conn, epoch)
            conn.execute(schema.SAVE_REACTOR_STATE, row)

    def load_reactor_state(self) -> dict[str, Any] | None:
        row = self._conn.execute(schema.LOAD_REACTOR_STATE).fetchone()
        return None if row is None else dict(unpack_value(row[0]))

    # -- shared keys ------------------------------------------------------------------

    def put_key(self, row: KeyRow) -> None:
        """See ``base.Store.put_key``: the version is the largest + 1, in the write's own
        IMMEDIATE transaction."""
        values = (*key_row(row), time.time())
        with self._transaction() as conn:
            conn.execute(schema.PUT_KEY, values)

    def delete_key(self, minion_id: str) -> None:
        with self._transaction() as conn:
            conn.execute(schema.DELETE_KEY, (minion_id, time.time()))

    def keys_since(self, version: int = 0) -> list[KeyRow]:
        rows = self._conn.execute(schema.KEYS_SINCE, (version,)).fetchall()
        return [key_from_row(row) for row in rows]

    # -- retention --------------------------------------------------------------------

    def prune(self, cutoffs: Cutoffs, batch: int = 1000) -> Pruned:
        """See ``base.Store.prune``: each kind one IMMEDIATE transaction of ``batch`` rows."""
        returns = jobs = events = reactions = 0
        if cutoffs.jobs is not None:
            keep = json.dumps(sorted(cutoffs.keep_jids))
            params = {"before": cutoffs.jobs, "keep": keep, "batch": batch}
            with self._transaction() as conn:
                returns = conn.execute(schema.PRUNE_RETURNS, params).rowcount
                if returns < batch:
                    params["batch"] = batch - returns
                    jobs = conn.execute(schema.PRUNE_JOBS, params).rowcount
        if cutoffs.events is not None:
            with self._transaction() as conn:
                params = {"before": cutoffs.events, "batch": batch}
                events = conn.execute(schema.PRUNE_EVENTS, params).rowcount
        if cutoffs.reactions is not None:
            with self._transaction() as conn:
                params = {"before": cutoffs.reactions, "batch": batch}
                reactions = conn.execute(schema.PRUNE_REACTIONS, params).rowcount
        return Pruned(jobs=jobs, returns=returns, events=events, reactions=reactions)

    def stats(self) -> StoreStats:
        """Rows per table; bytes per table from ``dbstat`` when this SQLite has it (None
        otherwise); the total is the database file and its WAL."""
        rows = self._conn.execute(schema.COUNT_ROWS).fetchall()
        try:
            sizes = dict(self._conn.execute(schema.TABLE_BYTES).fetchall())
        except sqlite3.OperationalError:  # built without SQLITE_ENABLE_DBSTAT_VTAB
            sizes = {}
        total = 0
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                continue
        tables = [
            TableStats(name, int(count), None if name not in sizes else int(sizes[name]))
            for name, count in rows
        ]
        return StoreStats(f"SQLite {self.path}", tables, total)

    def schema_version(self) -> int:
        (version,) = self._conn.execute("PRAGMA user_version").fetchone()
        return int(version)

    def close(self) -> None:
        """Close the connection; idempotent. The store is unusable afterwards."""
        if self._closed:
            return
        self._closed = True
        self._conn.close()
