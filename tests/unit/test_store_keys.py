"""The shared minion keys of the store (``put_key``, ``delete_key``, ``keys_since``) on both
backends, and the migrations adding the ``minion_keys`` table (SQLite 6, PostgreSQL 4)."""

import sqlite3
from pathlib import Path

import psycopg2  # type: ignore[import-untyped]
import pytest

from master.store import pg_sql, schema
from master.store.base import JobRecord, KeyRow, Store
from master.store.postgres import PostgresStore
from master.store.sqlite import SqliteStore
from tests.unit.conftest import fresh_schema

PUB_A = "A" * 40
PUB_B = "B" * 40


@pytest.fixture
def store(any_store: Store) -> Store:
    """SQLite and PostgreSQL (tests/unit/conftest.py)."""
    return any_store


def test_an_empty_table_has_no_keys(store: Store) -> None:
    assert store.keys_since() == [] and store.keys_since(10) == []


def test_put_key_stores_the_row_with_a_version_and_a_time(store: Store) -> None:
    store.put_key(KeyRow("be1", "pending", PUB_A, {"role": "db", "n": 1}))
    (row,) = store.keys_since(0)
    assert (row.id, row.state, row.public, row.grains) == (
        "be1",
        "pending",
        PUB_A,
        {"role": "db", "n": 1},
    )
    assert row.version > 0 and row.changed > 0


def test_every_write_bumps_the_version_over_the_whole_table(store: Store) -> None:
    store.put_key(KeyRow("be1", "pending", PUB_A))
    store.put_key(KeyRow("be2", "pending", PUB_B))
    first = {r.id: r.version for r in store.keys_since(0)}
    assert first["be2"] > first["be1"]
    store.put_key(KeyRow("be1", "accepted", PUB_A, {"role": "db"}, version=1))  # ignored
    rows = store.keys_since(0)
    assert [r.id for r in rows] == ["be2", "be1"]  # ordered by version
    assert rows[1].state == "accepted" and rows[1].version > first["be2"]
    assert [r.id for r in store.keys_since(first["be2"])] == ["be1"]
    assert store.keys_since(rows[1].version) == []


def test_delete_key_leaves_a_tombstone_with_a_new_version(store: Store) -> None:
    store.put_key(KeyRow("be1", "accepted", PUB_A, {"role": "db"}))
    (before,) = store.keys_since(0)
    store.delete_key("be1")
    (tomb,) = store.keys_since(before.version)
    assert tomb.id == "be1" and tomb.state == "deleted" and tomb.version > before.version
    assert tomb.grains == {} and tomb.public == PUB_A
    store.delete_key("never-seen")
    (unknown,) = store.keys_since(tomb.version)
    assert (unknown.id, unknown.state, unknown.public) == ("never-seen", "deleted", "")
    store.put_key(KeyRow("be1", "pending", PUB_B))  # the id comes back
    (back,) = store.keys_since(unknown.version)
    assert back.state == "pending" and back.public == PUB_B


def test_two_postgres_connections_write_increasing_versions(pg_dsn: str) -> None:
    dsn = fresh_schema(pg_dsn)
    one, two = PostgresStore(dsn), PostgresStore(dsn)
    try:
        for i in range(5):
            (one if i % 2 else two).put_key(KeyRow(f"m{i}", "pending", PUB_A))
        rows = one.keys_since(0)
        assert [r.id for r in rows] == [f"m{i}" for i in range(5)]
        assert [r.version for r in rows] == sorted({r.version for r in rows})
    finally:
        one.close()
        two.close()


# -- migrations -----------------------------------------------------------------------------


def _job(jid: str) -> JobRecord:
    return JobRecord(jid, "test.ping", [], {}, "be1", "glob", ["be1"], [], "u", 1.0, 5.0)


def test_a_version_5_sqlite_store_migrates_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "master.db"
    old = SqliteStore(path)
    old.save_job(_job("j1"))
    old.close()
    with sqlite3.connect(path) as conn:  # what version 5 had: no minion_keys
        conn.execute("DROP TABLE minion_keys")
        conn.execute("PRAGMA user_version=5")
    migrated = SqliteStore(path)
    try:
        assert migrated.schema_version() == schema.SCHEMA_VERSION == 6
        assert migrated.get_job("j1") == _job("j1")
        assert migrated.keys_since() == []
        migrated.put_key(KeyRow("be1", "accepted", PUB_A))
        assert [r.id for r in migrated.keys_since()] == ["be1"]
    finally:
        migrated.close()


def test_a_version_3_postgres_store_migrates_keeping_its_rows(pg_dsn: str) -> None:
    dsn = fresh_schema(pg_dsn)
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:  # the schema as version 3 created it
        cur.execute(pg_sql.CREATE_VERSION_TABLE)
        cur.execute(pg_sql.INSERT_VERSION, (3,))
        for version in (1, 2, 3):
            for statement in pg_sql.MIGRATIONS[version]:
                cur.execute(statement)
    conn.close()
    store = PostgresStore(dsn)
    try:
        assert store.migrate() == store.schema_version() == pg_sql.SCHEMA_VERSION == 4
        store.put_key(KeyRow("be1", "pending", PUB_A))
        store.delete_key("be1")
        assert [(r.id, r.state) for r in store.keys_since()] == [("be1", "deleted")]
    finally:
        store.close()
