"""What only the PostgreSQL store has: its versioned schema, globs as regular expressions,
and a server that goes away (on a real PostgreSQL; the shared contract is test_store.py)."""

import psycopg2  # type: ignore[import-untyped]
import pytest

from master.store.base import JobFilter, JobRecord
from master.store.postgres import SCHEMA_VERSION, PostgresStore, StoreUnavailable, glob_regex
from tests.unit.conftest import fresh_schema


@pytest.mark.parametrize(
    ("glob", "matches", "misses"),
    [
        ("state.*", ["state.apply", "state."], ["xstate.apply", "State.apply"]),
        ("be?", ["be1", "beX"], ["be", "be12"]),
        ("fe[12]", ["fe1", "fe2"], ["fe3"]),
        ("fe[^12]", ["fe3"], ["fe1"]),
        ("fe[!12]", ["fe3"], ["fe2"]),
        ("G@role:backend", ["G@role:backend"], ["G@role:backends"]),
        ("a.b(c)+$", ["a.b(c)+$"], ["aXb(c)+$", "a.bcc"]),
        ("[", ["["], ["x"]),
    ],
)
def test_globs_become_anchored_regular_expressions(
    pg_dsn: str, glob: str, matches: list[str], misses: list[str]
) -> None:
    conn = psycopg2.connect(pg_dsn)
    try:
        with conn.cursor() as cur:
            for text, expected in [(m, True) for m in matches] + [(m, False) for m in misses]:
                cur.execute("SELECT %s ~ %s", (text, glob_regex(glob)))
                assert cur.fetchone()[0] is expected, (glob, text)
    finally:
        conn.close()


def test_two_masters_open_one_schema_and_the_second_finds_it_migrated(pg_dsn: str) -> None:
    dsn = fresh_schema(pg_dsn)
    first = PostgresStore(dsn)
    second = PostgresStore(dsn)
    try:
        assert second.migrate() == SCHEMA_VERSION
        job = JobRecord("j1", "test.ping", [], {}, "*", "glob", ["m"], [], "u", 1.0, 5.0)
        first.save_job(job)
        assert second.get_job("j1") == job
        listed = second.list_jobs(filters=JobFilter(fun="test.*", user="u"))
        assert [s.job.jid for s in listed] == ["j1"]
    finally:
        first.close()
        second.close()


def test_a_newer_schema_is_refused(pg_dsn: str) -> None:
    dsn = fresh_schema(pg_dsn)
    PostgresStore(dsn).close()
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("UPDATE saline_schema SET version = %s", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this code"):
        PostgresStore(dsn)


def test_an_unreachable_server_says_so_without_the_password() -> None:
    dsn = "host=127.0.0.1 port=1 user=saline password=hunter2-secret dbname=x"
    with pytest.raises(StoreUnavailable, match="PostgreSQL store unavailable") as caught:
        PostgresStore(dsn, connect_timeout=1)
    assert "hunter2" not in str(caught.value)


def test_a_broken_connection_is_opened_again(pg_dsn: str) -> None:
    store = PostgresStore(fresh_schema(pg_dsn))
    try:
        victim = store._conn.get_backend_pid()
        conn = psycopg2.connect(pg_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (victim,))
        conn.close()
        with pytest.raises(StoreUnavailable):
            store.events_since(0)  # the call that finds it broken says so
        assert store.events_since(0) == []  # the next one connects again
    finally:
        store.close()
