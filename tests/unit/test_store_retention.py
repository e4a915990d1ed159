"""Retention on both stores: old rows pruned in bounded batches, young ones and what is still
needed (active jobs, open or held reactions, the events they name) kept; row counts and
sizes per table; the schema migration adding the indexes the prunes walk."""

import asyncio
import json
import re
import sqlite3
from pathlib import Path

import psycopg2  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner

from master.config import MasterConfig
from master.retention import Keep, Retention, describe
from master.store import pg_sql, schema
from master.store.base import (
    ActionProgress,
    Cutoffs,
    EventRecord,
    JobRecord,
    Pruned,
    ReactionRecord,
    ReturnRecord,
    Store,
)
from master.store.postgres import PostgresStore
from master.store.sqlite import SqliteStore
from saline.cli.main import cli
from saline.cli.store import human_bytes
from tests.unit.conftest import fresh_schema

DAY = 86400.0
NOW = 1000 * DAY  # reaction rows take created 0 as "now"


@pytest.fixture
def store(any_store: Store) -> Store:
    """SQLite and PostgreSQL (tests/unit/conftest.py)."""
    return any_store


def _job(jid: str, created: float, timeout: float = 10.0) -> JobRecord:
    return JobRecord(jid, "test.ping", [], {}, "*", "glob", ["be1"], [], "u", created, timeout)


def _ret(jid: str, minion: str) -> ReturnRecord:
    return ReturnRecord(jid, minion, "test.ping", True, 0, True, 1.0, 1.0)


def _events(store: Store, count: int, ts: float, tag: str = "t/old") -> list[int]:
    saved = store.save_events([EventRecord(tag, {"n": i}, "be1", ts) for i in range(count)])
    return [e.seq for e in saved if e.seq is not None]


def _reaction(
    rid: str, created: float, outcome: str | None, event_seq: int | None = None, **kw: object
) -> ReactionRecord:
    fields: dict[str, object] = {
        "id": rid,
        "event_seq": event_seq,
        "event_tag": "t/old",
        "rule": "fix",
        "verdict": "fire",
        "reason": "fired",
        "key": "be1",
        "outcome": outcome,
        "created": created,
        **kw,
    }
    return ReactionRecord(**fields)  # type: ignore[arg-type]


def _tags(store: Store) -> list[str]:
    return [e.tag for e in store.events_since(0, 10_000)]


def test_old_events_go_and_young_ones_stay(store: Store) -> None:
    _events(store, 3, NOW - 8 * DAY)
    _events(store, 2, NOW - 1 * DAY, "t/young")
    pruned = store.prune(Cutoffs(events=NOW - 7 * DAY))
    assert pruned == Pruned(events=3)
    assert _tags(store) == ["t/young", "t/young"]
    assert store.prune(Cutoffs(events=NOW - 7 * DAY)) == Pruned()


def test_no_cutoff_prunes_nothing(store: Store) -> None:
    _events(store, 3, 1.0)
    store.save_job(_job("j1", 1.0))
    store.save_reactions([_reaction("r1", 1.0, "ok")])
    assert store.prune(Cutoffs()) == Pruned()
    assert len(_tags(store)) == 3 and store.get_job("j1") and store.get_reaction("r1")


def test_each_call_deletes_at_most_a_batch(store: Store) -> None:
    _events(store, 25, NOW - 8 * DAY)
    cutoffs = Cutoffs(events=NOW - 7 * DAY)
    assert [store.prune(cutoffs, batch=10).events for _ in range(4)] == [10, 10, 5, 0]
    assert _tags(store) == []


def test_jobs_go_with_their_returns_and_the_batch_counts_both(store: Store) -> None:
    store.save_job(_job("old", NOW - 8 * DAY))
    store.save_returns([_ret("old", m) for m in ("be1", "be2", "be3")])
    store.save_job(_job("young", NOW - DAY))
    store.save_returns([_ret("young", "be1")])
    cutoffs = Cutoffs(jobs=NOW - 7 * DAY)
    assert store.prune(cutoffs, batch=2) == Pruned(returns=2)  # returns first, within batch
    assert store.prune(cutoffs, batch=2) == Pruned(jobs=1, returns=1)
    assert store.prune(cutoffs, batch=2) == Pruned()
    assert store.get_job("old") is None and store.job_returns("old") == {}
    assert store.get_job("young") is not None and list(store.job_returns("young")) == ["be1"]


def test_active_jobs_and_jobs_still_waiting_are_kept(store: Store) -> None:
    store.save_job(_job("active", NOW - 30 * DAY))
    store.save_returns([_ret("active", "be1")])
    # created before the cutoff but waiting (timeout) past it: still running somewhere
    store.save_job(_job("long", NOW - 8 * DAY, timeout=2 * DAY))
    store.save_job(_job("done", NOW - 8 * DAY))
    pruned = store.prune(Cutoffs(jobs=NOW - 7 * DAY, keep_jids=frozenset({"active"})))
    assert pruned == Pruned(jobs=1)
    assert store.get_job("done") is None
    assert store.get_job("active") is not None and store.job_returns("active")
    assert store.get_job("long") is not None


def test_open_and_held_reactions_and_their_events_are_kept(store: Store) -> None:
    open_seq, held_seq, done_seq = _events(store, 3, NOW - 200 * DAY)
    store.save_reactions(
        [
            _reaction("open", NOW - 100 * DAY, None, open_seq),
            _reaction(
                "held", NOW - 100 * DAY, "await_approval", held_seq, verdict="await_approval"
            ),
            _reaction("done", NOW - 100 * DAY, "ok", done_seq),
            _reaction("rejected", NOW - 100 * DAY, "rejected", verdict="await_approval"),
            _reaction("recent", NOW - DAY, "failed"),
        ]
    )
    pruned = store.prune(Cutoffs(events=NOW - 7 * DAY, reactions=NOW - 90 * DAY))
    assert pruned == Pruned(events=1, reactions=2)
    assert {e.seq for e in store.events_since()} == {open_seq, held_seq}
    assert store.get_reaction("done") is None and store.get_reaction("rejected") is None
    assert all(store.get_reaction(r) for r in ("open", "held", "recent"))
    # once the reaction finished and aged, it and its event go
    store.save_reactions([_reaction("open", NOW - 100 * DAY, "ok", open_seq)])
    pruned = store.prune(Cutoffs(events=NOW - 7 * DAY, reactions=NOW - 90 * DAY))
    assert pruned == Pruned(events=1, reactions=1)


def test_the_jobs_of_open_reactions_are_held(store: Store) -> None:
    progress = {0: ActionProgress("started", jid="awaited")}
    store.save_reactions([_reaction("open", NOW - DAY, None, progress=progress)])
    store.save_reactions(
        [_reaction("finished", NOW - DAY, "ok", progress={0: ActionProgress("done", jid="x")})]
    )
    assert store.held_jids() == frozenset({"awaited"})


def test_stats_count_rows_and_measure_every_table(store: Store) -> None:
    _events(store, 5, NOW)
    store.save_job(_job("j1", NOW))
    store.save_returns([_ret("j1", "be1"), _ret("j1", "be2")])
    store.save_reactions([_reaction("r1", NOW, None)])
    stats = store.stats()
    rows = {t.name: t.rows for t in stats.tables}
    assert rows == {
        "jobs": 1,
        "returns": 2,
        "events": 5,
        "reactions": 1,
        "minions": 0,
        "reactor_state": 0,
        "minion_keys": 0,
    }
    # this machine's SQLite has dbstat: every table has a size; PostgreSQL always does
    assert all(t.bytes is not None and t.bytes > 0 for t in stats.tables if t.rows)
    assert stats.total_bytes > 0
    store.prune(Cutoffs(events=NOW + 1))
    assert {t.name: t.rows for t in store.stats().tables}["events"] == 0


# -- the loop ---------------------------------------------------------------------------


def test_a_pass_prunes_batch_after_batch_and_keeps_active_jobs(store: Store) -> None:
    _events(store, 25, NOW - 8 * DAY)
    _events(store, 1, NOW, "t/young")
    for jid in ("active", "awaited", "old"):
        store.save_job(_job(jid, NOW - 30 * DAY))
    progress = {0: ActionProgress("started", jid="awaited")}
    store.save_reactions([_reaction("open", NOW - DAY, None, progress=progress)])
    keep = Keep(jobs=7 * DAY, events=7 * DAY, reactions=90 * DAY)
    retention = Retention(store, keep, lambda: ["active"], batch=10, clock=lambda: NOW)
    pruned, sentence = asyncio.run(retention.run_pass())
    assert pruned == Pruned(jobs=1, events=25)
    assert sentence.startswith("pruned 25 events, 1 jobs in ")
    assert _tags(store) == ["t/young"]
    assert store.get_job("active") and store.get_job("awaited") and not store.get_job("old")
    assert asyncio.run(retention.run_pass()) == (Pruned(), "nothing older than its keep setting")
    assert retention.deleted == Pruned(jobs=1, events=25)


def test_keep_settings_parse_as_durations_with_their_defaults() -> None:
    default = Keep.of(MasterConfig())
    assert default == Keep(jobs=7 * DAY, events=7 * DAY, reactions=90 * DAY)
    assert default.interval() == 60.0
    given = Keep.of(MasterConfig(keep_jobs="2d", keep_events=1, keep_reactions="0"))
    assert given == Keep(jobs=2 * DAY, events=1.0, reactions=0.0)
    assert given.interval() == 1.0  # half the shortest keep, a second at least
    assert given.cutoffs(NOW) == Cutoffs(jobs=NOW - 2 * DAY, events=NOW - 1, reactions=None)
    assert Keep(0, 0, 0).interval() == 60.0
    with pytest.raises(ValueError, match="duration"):
        MasterConfig(keep_events="a week")


def test_the_sentence_names_what_went() -> None:
    assert describe(Pruned(), 0.1) == "nothing older than its keep setting"
    said = describe(Pruned(jobs=2, returns=6, events=1000, reactions=1), 0.25)
    assert said == "pruned 1000 events, 2 jobs, 6 returns, 1 reactions in 0.2s"


# -- migrations -------------------------------------------------------------------------

_RETENTION_INDEXES = ("jobs_created", "events_ts", "reactions_held")


def test_a_version_3_sqlite_store_migrates_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "master.db"
    old = SqliteStore(path)
    _events(old, 3, 1.0)
    old.save_job(_job("j1", 1.0))
    old.save_returns([_ret("j1", "be1")])
    old.save_reactions([_reaction("r1", 1.0, "ok")])
    old.close()
    with sqlite3.connect(path) as conn:  # what version 3 had: these indexes did not exist
        for name in (*_RETENTION_INDEXES, "reactions_event"):
            conn.execute(f"DROP INDEX {name}")  # our own names: no injection
        conn.execute("DROP TABLE saline_fence")  # nor the fencing of version 5
        conn.execute("ALTER TABLE jobs DROP COLUMN epoch")
        conn.execute("ALTER TABLE reactions DROP COLUMN epoch")
        conn.execute("PRAGMA user_version=3")
    migrated = SqliteStore(path)
    try:
        assert migrated.schema_version() == schema.SCHEMA_VERSION == 6
        assert len(_tags(migrated)) == 3 and migrated.get_job("j1") is not None
        assert list(migrated.job_returns("j1")) == ["be1"] and migrated.get_reaction("r1")
        assert migrated.prune(Cutoffs(events=2.0, jobs=20.0, reactions=2.0)) == Pruned(
            jobs=1, returns=1, events=3, reactions=1
        )
    finally:
        migrated.close()
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert set(_RETENTION_INDEXES) <= names


def test_the_event_prune_walks_the_ts_index(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "master.db")
    store.close()
    with sqlite3.connect(tmp_path / "master.db") as conn:
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN " + schema.PRUNE_EVENTS, {"before": 1.0, "batch": 10}
            )
        )
    assert "events_ts" in plan and "reactions_held" in plan


def test_a_version_1_postgres_store_migrates_keeping_its_rows(pg_dsn: str) -> None:
    dsn = fresh_schema(pg_dsn)
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:  # the schema as version 1 created it
        cur.execute(pg_sql.CREATE_VERSION_TABLE)
        cur.execute(pg_sql.INSERT_VERSION, (1,))
        for statement in pg_sql.MIGRATIONS[1]:
            cur.execute(statement)
        cur.execute(
            "INSERT INTO events (tag, data, minion, ts) VALUES ('t/old', %s, 'be1', 1.0)",
            (b"\x80",),
        )
    conn.close()
    store = PostgresStore(dsn)
    try:
        assert store.migrate() == store.schema_version() == pg_sql.SCHEMA_VERSION == 4
        assert _tags(store) == ["t/old"]
        assert store.prune(Cutoffs(events=2.0)) == Pruned(events=1)
    finally:
        store.close()
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
        names = {row[0] for row in cur.fetchall()}
    conn.close()
    assert set(_RETENTION_INDEXES) <= names


# -- saline store stats -----------------------------------------------------------------


def test_store_stats_prints_rows_and_sizes(tmp_path: Path) -> None:
    config = MasterConfig(data_dir=tmp_path / "data")
    path = tmp_path / "master.yaml"
    path.write_text(f"data_dir: {config.data_dir}\npki_dir: {tmp_path / 'pki'}\n")
    runner = CliRunner()
    missing = runner.invoke(cli, ["-c", str(path), "store", "stats"])
    assert missing.exit_code == 1 and "no store at" in missing.output
    store = SqliteStore(config.store_path)
    _events(store, 3, NOW)
    store.close()
    shown = runner.invoke(cli, ["-c", str(path), "store", "stats", "--out", "json"])
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.output)
    assert doc["schema_version"] == 6 and doc["total_bytes"] > 0
    assert doc["tables"]["events"]["rows"] == 3 and doc["tables"]["events"]["bytes"] > 0
    human = runner.invoke(cli, ["-c", str(path), "store", "stats"]).output.splitlines()
    assert human[0].startswith(f"SQLite {config.store_path}: schema version 6, ")
    assert human[1].split() == ["TABLE", "ROWS", "SIZE"]
    assert re.fullmatch(r"events +3 +\d+\.\d KiB", human[4]), human


def test_sizes_read_as_people_write_them() -> None:
    assert [human_bytes(n) for n in (None, 512, 1536, 5 * 2**20, 3 * 2**40)] == [
        "-",
        "512 B",
        "1.5 KiB",
        "5.0 MiB",
        "3072.0 GiB",
    ]
