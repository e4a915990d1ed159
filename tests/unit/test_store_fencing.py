"""Fencing by leadership epoch (issue #11), on both stores: a write carrying an epoch older
than the newest the store has seen raises ``Fenced`` and stores nothing, in the write's own
transaction; epoch 0 is never checked. On PostgreSQL also across connections, interleaved.
Plus ``decided_events``, ``last_event_seq`` and the migrations adding the epoch columns."""

import sqlite3
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import psycopg2  # type: ignore[import-untyped]
import pytest

from master.store import pg_sql, schema
from master.store.base import (
    ActionProgress,
    Chain,
    EventRecord,
    Fenced,
    JobRecord,
    ReactionRecord,
    Store,
    StoreError,
)
from master.store.postgres import PostgresStore
from master.store.sqlite import SqliteStore
from reactors.model import RenderedAction
from reactors.rules import RunAction
from tests.unit.conftest import fresh_schema

RUN = {"kind": "run", "target": "be1", "tgt_type": "glob", "function": "test.ping"}


@pytest.fixture
def store(any_store: Store) -> Store:
    """SQLite and PostgreSQL (tests/unit/conftest.py)."""
    return any_store


def _job(jid: str, epoch: int = 0) -> JobRecord:
    return JobRecord(
        jid, "test.ping", [], {}, "be1", "glob", ["be1"], [], "u", 1.0, 5.0, Chain(), epoch
    )


def _reaction(rid: str, epoch: int = 0, event_seq: int | None = 7) -> ReactionRecord:
    action = RenderedAction(action=RunAction(**RUN), cause="7", depth=1, rule="fix")
    return ReactionRecord(
        rid, event_seq, "t/x", "fix", "fire", "fired", "be1", [action], created=1.0, epoch=epoch
    )


# -- round trips ----------------------------------------------------------------------------


def test_epochs_round_trip_on_jobs_and_reactions(store: Store) -> None:
    store.save_job(_job("j1", epoch=7))
    store.save_job(_job("j0"))
    store.save_reactions([_reaction("r1", epoch=7), _reaction("r0")])
    assert store.get_job("j1") == _job("j1", epoch=7)
    assert store.get_job("j0").epoch == 0  # type: ignore[union-attr]
    assert [s.job.epoch for s in store.list_jobs()] == [7, 0]  # j1 > j0
    assert store.get_reaction("r1") == _reaction("r1", epoch=7)
    assert store.get_reaction("r0").epoch == 0  # type: ignore[union-attr]
    assert {r.id: r.epoch for r in store.reaction_history()} == {"r1": 7, "r0": 0}
    assert {r.id: r.epoch for r in store.open_reactions()} == {"r1": 7, "r0": 0}


def test_the_default_constructors_carry_no_epoch() -> None:
    assert _job("j").epoch == 0 and _reaction("r").epoch == 0
    legacy = JobRecord("j", "f", [], {}, "*", "glob", [], [], "u", 1.0, 5.0)
    assert legacy.epoch == 0 and legacy.chain == Chain()


# -- the fence ------------------------------------------------------------------------------


def test_the_fence_starts_at_0_and_grows_with_epochs_written(store: Store) -> None:
    assert store.fence_epoch() == 0
    store.save_job(_job("j1", epoch=3))
    assert store.fence_epoch() == 3
    store.save_reactions([_reaction("r1", epoch=5), _reaction("r2", epoch=4)])  # the largest
    assert store.fence_epoch() == 5
    store.save_reactor_state({"cursor": 1}, epoch=9)
    assert store.fence_epoch() == 9
    store.save_job(_job("j2"))  # epoch 0 neither checks nor moves the fence
    store.save_reactions([_reaction("r3")])
    store.save_reactor_state({"cursor": 2})
    assert store.fence_epoch() == 9


def test_an_older_epoch_writes_nothing(store: Store) -> None:
    store.save_reactor_state({"cursor": 10}, epoch=9)
    with pytest.raises(Fenced, match="epoch 7 is older than epoch 9 already seen") as caught:
        store.save_reactions([_reaction("r1", epoch=7)])
    assert (caught.value.epoch, caught.value.newest) == (7, 9)
    assert "this master no longer leads" in str(caught.value)
    assert isinstance(caught.value, StoreError)
    assert store.get_reaction("r1") is None
    with pytest.raises(Fenced):
        store.save_job(_job("j1", epoch=7))
    assert store.get_job("j1") is None and store.list_jobs() == []
    with pytest.raises(Fenced):
        store.save_reactor_state({"cursor": 99}, epoch=8)
    assert store.load_reactor_state() == {"cursor": 10}
    assert store.fence_epoch() == 9


def test_a_batch_is_fenced_at_its_newest_epoch_and_stored_whole_or_not_at_all(
    store: Store,
) -> None:
    store.save_job(_job("j1", epoch=5))
    with pytest.raises(Fenced):  # r2 alone would pass: the batch goes as one
        store.save_reactions([_reaction("r1", epoch=4), _reaction("r2", epoch=0)])
    assert store.get_reaction("r1") is None and store.get_reaction("r2") is None
    store.save_reactions([_reaction("r3", epoch=3), _reaction("r4", epoch=6)])
    assert store.get_reaction("r3") is not None and store.fence_epoch() == 6


def test_a_deposed_leaders_progress_on_an_existing_reaction_is_refused(store: Store) -> None:
    store.save_reactions([_reaction("r1", epoch=7)])
    store.save_job(_job("j-new", epoch=8))  # a new leader took over
    stale = _reaction("r1", epoch=7)
    stale.progress = {0: ActionProgress("done")}
    stale.outcome = "ok"
    with pytest.raises(Fenced):
        store.save_reactions([stale])
    assert store.get_reaction("r1") == _reaction("r1", epoch=7)  # unchanged


def test_epoch_0_and_the_same_epoch_always_pass(store: Store) -> None:
    store.save_reactions([_reaction("r1", epoch=9)])
    store.save_job(_job("adhoc"))  # any master's ad-hoc job
    store.save_reactions([_reaction("r0")])
    store.save_reactor_state({"cursor": 1})
    store.save_job(_job("j9", epoch=9))  # the leader of epoch 9 goes on writing
    store.save_reactions([_reaction("r9", epoch=9)])
    store.save_reactor_state({"cursor": 2}, epoch=9)
    assert store.get_job("adhoc") and store.get_job("j9") and store.get_reaction("r9")
    assert store.get_reaction("r0") and store.load_reactor_state() == {"cursor": 2}
    assert store.fence_epoch() == 9


def test_a_fenced_write_leaves_the_store_usable(store: Store) -> None:
    store.save_job(_job("j1", epoch=2))
    with pytest.raises(Fenced):
        store.save_job(_job("j0", epoch=1))
    store.save_job(_job("j3", epoch=3))  # the same connection, a fresh transaction
    assert [s.job.jid for s in store.list_jobs()] == ["j3", "j1"]


# -- replay after a take-over ---------------------------------------------------------------


def test_decided_events_names_the_seqs_some_reaction_has(store: Store) -> None:
    assert store.decided_events([]) == set()
    assert store.decided_events([1, 2, 3]) == set()
    store.save_reactions(
        [
            _reaction("r1", event_seq=2),
            _reaction("r2", event_seq=2),
            _reaction("r3", event_seq=5),
            _reaction("manual", event_seq=None),
        ]
    )
    assert store.decided_events([1, 2, 3, 4, 5]) == {2, 5}
    assert store.decided_events((5, 5, 6)) == {5}


def test_decided_events_takes_a_thousand_seqs_in_one_call(store: Store) -> None:
    store.save_reactions([_reaction(f"r{n}", event_seq=n) for n in range(0, 3000, 3)])
    asked = list(range(1000, 2000))
    started = time.perf_counter()
    found = store.decided_events(asked)
    assert found == {n for n in asked if n % 3 == 0}
    assert time.perf_counter() - started < 2.0


def test_last_event_seq(store: Store) -> None:
    assert store.last_event_seq() == 0
    saved = store.save_events(
        [EventRecord("t/a", {}, None, 1.0), EventRecord("t/b", {}, None, 2.0)]
    )
    assert store.last_event_seq() == saved[-1].seq


def test_the_sqlite_replay_query_walks_the_event_seq_index(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "master.db").close()
    with sqlite3.connect(tmp_path / "master.db") as conn:
        plan = " ".join(
            str(row[-1])
            for row in conn.execute("EXPLAIN QUERY PLAN " + schema.DECIDED_EVENTS, {"seqs": "[1]"})
        )
    assert "reactions_event" in plan, plan


# -- PostgreSQL: two masters on one store ---------------------------------------------------


def _waiting_on_a_lock(dsn: str, count: int) -> bool:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM pg_stat_activity"
                " WHERE application_name = 'saline-master' AND wait_event_type = 'Lock'"
            )
            return bool(cur.fetchone()[0] >= count)
    finally:
        conn.close()


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_two_masters_the_newer_epoch_fences_the_other(pg_dsn: str) -> None:
    dsn = fresh_schema(pg_dsn)
    old, new = PostgresStore(dsn), PostgresStore(dsn)
    try:
        old.save_reactions([_reaction("r-old", epoch=7)])
        new.save_reactor_state({"cursor": 3}, epoch=8)
        with pytest.raises(Fenced, match="epoch 7 is older than epoch 8"):
            old.save_job(_job("j-old", epoch=7))
        assert new.get_job("j-old") is None and old.fence_epoch() == new.fence_epoch() == 8
    finally:
        old.close()
        new.close()


def test_interleaved_the_older_epoch_loses_when_the_newer_commits_first(pg_dsn: str) -> None:
    """The newer leader's transaction has passed the fence and not committed when the
    deposed one writes: the deposed one waits on the fence's row, then is refused."""
    dsn = fresh_schema(pg_dsn)
    old = PostgresStore(dsn)
    old.save_reactions([_reaction("r-old", epoch=7)])
    newer = psycopg2.connect(dsn, application_name="newer-leader")
    outcome: list[BaseException | None] = []

    def deposed_write() -> None:
        try:
            old.save_reactions([_reaction("r-late", epoch=7)])
            outcome.append(None)
        except BaseException as e:  # handed to the test thread
            outcome.append(e)

    try:
        with newer.cursor() as cur:  # the newer leader's write, as PostgresStore does it
            cur.execute(pg_sql.RAISE_FENCE, (9,))
            assert cur.fetchone()[0] == 9
            writer = threading.Thread(target=deposed_write)
            writer.start()
            _wait_for(partial(_waiting_on_a_lock, dsn, 1), "the deposed write waits on the fence")
            assert writer.is_alive()
            cur.execute(pg_sql.SAVE_REACTOR_STATE, (b"\x80", 1.0))
        newer.commit()
        writer.join(10)
        [raised] = outcome
        assert isinstance(raised, Fenced) and (raised.epoch, raised.newest) == (7, 9)
        assert old.get_reaction("r-late") is None and old.get_reaction("r-old") is not None
        assert old.fence_epoch() == 9 and old.load_reactor_state() == {}
    finally:
        newer.close()
        old.close()


def test_two_concurrent_leaders_cannot_both_pass(pg_dsn: str) -> None:
    """A third transaction holds the fence; both leaders queue on it, the newer first: once
    the newer one committed, the older one is refused (checking without the row lock would
    let both read the same fence and pass)."""
    dsn = fresh_schema(pg_dsn)
    setup = PostgresStore(dsn)
    setup.save_reactor_state({}, epoch=1)
    setup.close()
    old, new = PostgresStore(dsn), PostgresStore(dsn)
    holder = psycopg2.connect(dsn, application_name="holder")
    results: dict[str, BaseException | None] = {}

    def write(name: str, store: PostgresStore, epoch: int) -> None:
        try:
            store.save_job(_job(f"j-{name}", epoch=epoch))
            results[name] = None
        except BaseException as e:  # handed to the test thread
            results[name] = e

    threads = [
        threading.Thread(target=write, args=("new", new, 9)),
        threading.Thread(target=write, args=("old", old, 8)),
    ]
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT epoch FROM saline_fence WHERE id = 1 FOR UPDATE")
            for count, thread in enumerate(threads, 1):
                thread.start()
                _wait_for(partial(_waiting_on_a_lock, dsn, count), "writers queue")
        holder.commit()
        for thread in threads:
            thread.join(10)
        assert results["new"] is None and isinstance(results["old"], Fenced)
        assert new.get_job("j-new") is not None and new.get_job("j-old") is None
        assert new.fence_epoch() == 9
    finally:
        holder.close()
        old.close()
        new.close()


# -- migrations -----------------------------------------------------------------------------


def test_a_version_4_sqlite_store_migrates_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "master.db"
    old = SqliteStore(path)
    old.save_job(_job("j1"))
    old.save_reactions([_reaction("r1", event_seq=3)])
    old.save_reactor_state({"cursor": 3})
    old.close()
    with sqlite3.connect(path) as conn:  # what version 4 had: no epochs, no fence
        conn.execute("DROP INDEX reactions_event")
        conn.execute("DROP TABLE saline_fence")
        conn.execute("ALTER TABLE jobs DROP COLUMN epoch")
        conn.execute("ALTER TABLE reactions DROP COLUMN epoch")
        conn.execute("PRAGMA user_version=4")
    migrated = SqliteStore(path)
    try:
        assert migrated.schema_version() == schema.SCHEMA_VERSION == 6
        assert migrated.get_job("j1") == _job("j1")
        assert migrated.get_reaction("r1") == _reaction("r1", event_seq=3)
        assert migrated.load_reactor_state() == {"cursor": 3}
        assert migrated.fence_epoch() == 0 and migrated.decided_events([3, 4]) == {3}
        migrated.save_job(_job("j2", epoch=4))
        with pytest.raises(Fenced):
            migrated.save_reactions([_reaction("r2", epoch=3)])
    finally:
        migrated.close()


def test_a_version_2_sqlite_store_without_reactions_migrates(tmp_path: Path) -> None:
    """A master of version 2 that never reacted had no reactions table."""
    path = tmp_path / "master.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as conn:
        for table in ("reactions", "reactor_state", "saline_fence"):
            conn.execute(f"DROP TABLE {table}")  # our own names: no injection
        for column in ("cause", "depth", "rule", "epoch"):
            conn.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
        conn.execute("DROP INDEX jobs_created")
        conn.execute("PRAGMA user_version=2")
    migrated = SqliteStore(path)
    try:
        assert migrated.schema_version() == 6
        migrated.save_reactions([_reaction("r1", epoch=2)])
        assert migrated.get_reaction("r1") == _reaction("r1", epoch=2)
    finally:
        migrated.close()


def test_a_version_2_postgres_store_migrates_keeping_its_rows(pg_dsn: str) -> None:
    dsn = fresh_schema(pg_dsn)
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:  # the schema as version 2 created it
        cur.execute(pg_sql.CREATE_VERSION_TABLE)
        cur.execute(pg_sql.INSERT_VERSION, (2,))
        for version in (1, 2):
            for statement in pg_sql.MIGRATIONS[version]:
                cur.execute(statement)
        cur.execute(
            "INSERT INTO jobs VALUES ('j1', 'test.ping', %s, %s, 'be1', 'glob', %s, %s, 'u',"
            " 1.0, 5.0, NULL, 0, NULL)",
            (b"\x90", b"\x80", b"\x91\xa3be1", b"\x90"),
        )
        cur.execute(
            "INSERT INTO reactions (id, event_seq, event_tag, rule, verdict, reason, key,"
            " actions, progress, outcome, created, finished)"
            " VALUES ('r1', 3, 't/x', 'fix', 'fire', 'fired', 'be1', %s, %s, NULL, 1.0, NULL)",
            (b"\x90", b"\x80"),
        )
    conn.close()
    store = PostgresStore(dsn)
    try:
        assert store.migrate() == store.schema_version() == pg_sql.SCHEMA_VERSION == 4
        assert store.get_job("j1") == JobRecord(
            "j1", "test.ping", [], {}, "be1", "glob", ["be1"], [], "u", 1.0, 5.0
        )
        reaction = store.get_reaction("r1")
        assert reaction is not None and reaction.epoch == 0 and reaction.event_seq == 3
        assert store.fence_epoch() == 0 and store.decided_events([3, 4]) == {3}
        store.save_job(_job("j2", epoch=4))
        with pytest.raises(Fenced):
            store.save_reactions([_reaction("r2", epoch=3)])
    finally:
        store.close()
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
        assert "reactions_event" in {row[0] for row in cur.fetchall()}
    conn.close()
