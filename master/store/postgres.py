"""PostgreSQL implementation of ``Store``: the shared store of several masters.

The same contract as the SQLite store (``base.Store``): a batch of returns is one
transaction, committed (durable: PostgreSQL's own WAL, ``synchronous_commit`` as the server
sets it) before the master acknowledges it; returns are deduplicated by (jid, minion);
every reaction decision is stored before its actions run. Structured values are msgpack in
``bytea`` columns, exactly as SQLite stores them.

The schema is saline's own, versioned in ``saline_schema`` and migrated on open (or by
``saline store migrate``); a schema newer than this code is refused. A connection that
broke (the server restarted, a network blip) is opened again on the next call; the call
that saw it break raises, so nothing is acknowledged that was not stored.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg2  # type: ignore[import-untyped]
import psycopg2.extras  # type: ignore[import-untyped]

from master.store import pg_sql as sql
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
    StoreUnavailable,
    TableStats,
)
from master.store.pg_sql import MIGRATIONS, SCHEMA_VERSION
from master.store.rows import (
    batch_epoch,
    event_from_row,
    event_row,
    job_from_row,
    job_row,
    key_from_row,
    key_row,
    pack_value,
    reaction_from_row,
    reaction_row,
    return_from_row,
    return_row,
    unpack_value,
)

__all__ = ["SCHEMA_VERSION", "Fenced", "PostgresStore", "StoreUnavailable"]


def glob_regex(glob: str) -> str:
    """A glob (``*``, ``?``, ``[abc]``, ``[^abc]`` / ``[!abc]``; case-sensitive, as SQLite's
    GLOB) as an anchored POSIX regular expression for PostgreSQL's ``~``."""
    out = ["^"]
    i = 0
    while i < len(glob):
        char = glob[i]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[" and (end := glob.find("]", i + 2)) != -1:
            body = glob[i + 1 : end]
            negated = body[:1] in ("^", "!")
            body = body[1:] if negated else body
            escaped = "".join("\\" + c if c in "\\^[" else c for c in body)
            out.append(f"[{'^' if negated else ''}{escaped}]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    out.append("$")
    return "".join(out)


def _bytes(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """psycopg2 returns bytea as memoryview: the row decoders take bytes."""
    return tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)


class PostgresStore(Store):
    """``Store`` on a PostgreSQL database; all calls from the master's event loop thread."""

    def __init__(self, dsn: str, connect_timeout: float = 5.0) -> None:
        self._dsn = dsn
        self._timeout = connect_timeout
        self._conn: Any = None
        self._closed = False
        self._connect()
        self.migrate()

    # -- connection ---------------------------------------------------------------------

    def _connect(self) -> Any:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg2.connect(
                    self._dsn,
                    connect_timeout=max(1, int(self._timeout)),
                    application_name="saline-master",
                )
            except psycopg2.OperationalError as e:
                # the DSN may hold a password: the message names the failure, not the DSN
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise StoreUnavailable(f"PostgreSQL store unavailable: {first}") from None
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """One transaction; commits on success, rolls back on any exception. A broken
        connection is dropped, so the next call connects again."""
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                yield cur
            conn.commit()
        except BaseException as e:
            if not conn.closed:
                try:
                    conn.rollback()
                except psycopg2.Error:
                    conn.close()
            if isinstance(e, psycopg2.OperationalError | psycopg2.InterfaceError):
                conn.close()
                raise StoreUnavailable(f"PostgreSQL store unavailable: {e}".strip()) from e
            raise

    def _read(
        self, statement: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        with self._transaction() as cur:
            cur.execute(statement, params)
            return [_bytes(row) for row in cur.fetchall()]

    def migrate(self) -> int:
        """Create or migrate saline's tables to SCHEMA_VERSION; the version found before.

        :raises StoreError: the database's schema is newer than this code.
        """
        with self._transaction() as cur:
            # one master migrates at a time; the others wait here, then find it done
            cur.execute(sql.MIGRATION_LOCK)
            cur.execute(sql.CREATE_VERSION_TABLE)
            cur.execute(sql.SELECT_VERSION)
            row = cur.fetchone()
            found = 0 if row is None else int(row[0])
            if found > SCHEMA_VERSION:
                raise StoreError(
                    f"the PostgreSQL store has schema version {found}, newer than this code "
                    f"({SCHEMA_VERSION}); refusing to use it"
                )
            for version in range(found + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    cur.execute(statement)
            if row is None:
                cur.execute(sql.INSERT_VERSION, (SCHEMA_VERSION,))
            elif found != SCHEMA_VERSION:
                cur.execute(sql.UPDATE_VERSION, (SCHEMA_VERSION,))
        return found

    # -- fencing ----------------------------------------------------------------------

    @staticmethod
    def _fence(cur: Any, epoch: int) -> None:
        """First in the caller's transaction: raise the fence to ``epoch`` (its row stays
        locked until the transaction ends: a concurrent fenced write waits for it), or
        refuse an epoch older than the fence. Epoch 0 is not checked.

        :raises Fenced: ``epoch`` is older (the caller's transaction rolls back).
        """
        if epoch <= 0:
            return
        cur.execute(sql.RAISE_FENCE, (epoch,))
        (newest,) = cur.fetchone()
        Fenced.check(epoch, int(newest))

    def fence_epoch(self) -> int:
        rows = self._read(sql.SELECT_FENCE)
        return int(rows[0][0]) if rows else 0

    # -- jobs -------------------------------------------------------------------------

    def save_job(self, job: JobRecord) -> None:
        """See ``base.Store.save_job``; fenced in the same transaction."""
        row = job_row(job)
        with self._transaction() as cur:
            self._fence(cur, job.epoch)
            cur.execute(sql.SAVE_JOB, row)

    def get_job(self, jid: str) -> JobRecord | None:
        rows = self._read(sql.SELECT_JOB, (jid,))
        return job_from_row(rows[0]) if rows else None

    def list_jobs(self, limit: int = 50, filters: JobFilter | None = None) -> list[JobSummary]:
        """As the SQLite store's: function, target (globs) and user filter in SQL; the
        test-mode filter reads the kwargs of at most ``TEST_SCAN_FACTOR * limit`` (at most
        ``TEST_SCAN_MAX``) of the newest jobs passing those."""
        wanted = filters or JobFilter()
        params: dict[str, Any] = {
            "fun": None if wanted.fun is None else glob_regex(wanted.fun),
            "target": None if wanted.target is None else glob_regex(wanted.target),
            "user": wanted.user,
        }
        if wanted.test is None:
            rows = self._read(sql.LIST_JOBS, {**params, "limit": limit})
        else:
            scan = {**params, "limit": min(TEST_SCAN_FACTOR * limit, TEST_SCAN_MAX)}
            candidates = self._read(sql.SCAN_JOBS_KWARGS, scan)
            matching = [
                jid for jid, kwargs in candidates if wanted.admits_test_mode(unpack_value(kwargs))
            ][:limit]
            rows = self._read(sql.LIST_JOBS_BY_JID, {"jids": matching})
        return [
            JobSummary(job=job_from_row(row[:-2]), returned=row[-2], succeeded=row[-1])
            for row in rows
        ]

    # -- returns ----------------------------------------------------------------------

    def save_returns(self, returns: Sequence[ReturnRecord]) -> list[bool]:
        if not returns:
            return []
        """See ``base.Store.save_returns``: one statement per page of 1,000; the first of
        the batch's copies of a (jid, minion) is the new one."""
        rows = [return_row(r) for r in returns]
        with self._transaction() as cur:
            stored = psycopg2.extras.execute_values(
                cur, sql.INSERT_RETURNS, rows, page_size=1000, fetch=True
            )
        fresh = {(jid, minion) for jid, minion in stored}
        new: list[bool] = []
        for r in returns:
            new.append((r.jid, r.minion) in fresh)
            fresh.discard((r.jid, r.minion))
        return new

    def job_returns(self, jid: str) -> dict[str, ReturnRecord]:
        rows = self._read(sql.SELECT_RETURNS, (jid,))
        return {row[1]: return_from_row(row) for row in rows}

    # -- events -----------------------------------------------------------------------

    def save_events(self, events: Sequence[EventRecord]) -> list[EventRecord]:
        if not events:
            return []
        rows = [event_row(e) for e in events]
        with self._transaction() as cur:
            # one statement per page, RETURNING in the order of the VALUES
            seqs = psycopg2.extras.execute_values(
                cur,
                sql.INSERT_EVENTS,
                rows,
                page_size=1000,
                fetch=True,
            )
        return [dataclasses.replace(e, seq=s[0]) for e, s in zip(events, seqs, strict=True)]

    def events_since(self, seq: int = 0, limit: int = 1000) -> list[EventRecord]:
        rows = self._read(sql.EVENTS_SINCE, (seq, limit))
        return [event_from_row(row) for row in rows]

    def last_event_seq(self) -> int:
        return int(self._read(sql.LAST_EVENT_SEQ)[0][0])

    # -- minions ----------------------------------------------------------------------

    def save_minion(self, minion: MinionRecord) -> None:
        with self._transaction() as cur:
            row = (minion.id, pack_value(minion.grains), minion.last_seen)
            cur.execute(sql.SAVE_MINION, row)

    def minions(self) -> dict[str, MinionRecord]:
        rows = self._read(sql.SELECT_MINIONS)
        return {
            mid: MinionRecord(id=mid, grains=unpack_value(grains), last_seen=last_seen)
            for mid, grains, last_seen in rows
        }

    def forget_minion(self, minion_id: str) -> None:
        with self._transaction() as cur:
            cur.execute(sql.DELETE_MINION, (minion_id,))

    # -- the reactor's trail --------------------------------------------------------------

    def save_reactions(self, reactions: Sequence[ReactionRecord]) -> None:
        """See ``base.Store.save_reactions``; fenced in the same transaction, one statement
        per page of 500."""
        last = {r.id: r for r in reactions}  # an id twice in a batch: its last write wins
        rows = [reaction_row(r) for r in last.values()]
        with self._transaction() as cur:
            self._fence(cur, batch_epoch(reactions))
            if rows:
                psycopg2.extras.execute_values(cur, sql.SAVE_REACTIONS, rows, page_size=500)

    def get_reaction(self, reaction_id: str) -> ReactionRecord | None:
        rows = self._read(sql.SELECT_REACTION, (reaction_id,))
        return reaction_from_row(rows[0]) if rows else None

    def reaction_history(self, limit: int = 50, rule: str | None = None) -> list[ReactionRecord]:
        rows = self._read(sql.REACTION_HISTORY, (rule, rule, limit))
        return [reaction_from_row(r) for r in rows]

    def open_reactions(self) -> list[ReactionRecord]:
        rows = self._read(sql.OPEN_REACTIONS)
        return [reaction_from_row(r) for r in rows]

    def decided_events(self, seqs: Sequence[int]) -> set[int]:
        """See ``base.Store.decided_events``: one query on the event_seq index."""
        if not seqs:
            return set()
        rows = self._read(sql.DECIDED_EVENTS, ([int(s) for s in seqs],))
        return {int(r[0]) for r in rows}

    def save_reactor_state(self, state: dict[str, Any], epoch: int = 0) -> None:
        """See ``base.Store.save_reactor_state``; fenced in the same transaction."""
        with self._transaction() as cur:
            self._fence(cur, epoch)
            cur.execute(sql.SAVE_REACTOR_STATE, (pack_value(state), time.time()))

    def load_reactor_state(self) -> dict[str, Any] | None:
        rows = self._read(sql.LOAD_REACTOR_STATE)
        return dict(unpack_value(rows[0][0])) if rows else None

    # -- shared keys ------------------------------------------------------------------

    def put_key(self, row: KeyRow) -> None:
        """See ``base.Store.put_key``: key writers are serialised (an advisory lock held
        to commit), so versions commit in the order they were taken."""
        values = (*key_row(row), time.time())
        with self._transaction() as cur:
            cur.execute(sql.KEY_WRITE_LOCK)
            cur.execute(sql.PUT_KEY, values)

    def delete_key(self, minion_id: str) -> None:
        with self._transaction() as cur:
            cur.execute(sql.KEY_WRITE_LOCK)
            cur.execute(sql.DELETE_KEY, (minion_id, time.time()))

    def keys_since(self, version: int = 0) -> list[KeyRow]:
        return [key_from_row(row) for row in self._read(sql.KEYS_SINCE, (version,))]

    # -- retention --------------------------------------------------------------------

    def prune(self, cutoffs: Cutoffs, batch: int = 1000) -> Pruned:
        """See ``base.Store.prune``: each kind one transaction of at most ``batch`` rows."""
        returns = jobs = events = reactions = 0
        if cutoffs.jobs is not None:
            params: dict[str, Any] = {
                "before": cutoffs.jobs,
                "keep": sorted(cutoffs.keep_jids),
                "batch": batch,
            }
            with self._transaction() as cur:
                cur.execute(sql.PRUNE_RETURNS, params)
                returns = cur.rowcount
                if returns < batch:
                    cur.execute(sql.PRUNE_JOBS, {**params, "batch": batch - returns})
                    jobs = cur.rowcount
        if cutoffs.events is not None:
            with self._transaction() as cur:
                cur.execute(sql.PRUNE_EVENTS, {"before": cutoffs.events, "batch": batch})
                events = cur.rowcount
        if cutoffs.reactions is not None:
            with self._transaction() as cur:
                cur.execute(sql.PRUNE_REACTIONS, {"before": cutoffs.reactions, "batch": batch})
                reactions = cur.rowcount
        return Pruned(jobs=jobs, returns=returns, events=events, reactions=reactions)

    def stats(self) -> StoreStats:
        """Rows per table and ``pg_total_relation_size`` (indexes and TOAST included)."""
        tables = [
            TableStats(name, int(count), int(size))
            for name, count, size in self._read(sql.TABLE_STATS)
        ]
        return StoreStats("PostgreSQL", tables, sum(t.bytes or 0 for t in tables))

    def schema_version(self) -> int:
        return int(self._read(sql.SELECT_VERSION)[0][0])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
