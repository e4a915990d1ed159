"""Tests of master.store.sqlite.SqliteStore against the contract of master.store.base."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, cast

import psycopg2  # type: ignore[import-untyped]
import pytest

from master.store.base import EventRecord, JobRecord, MinionRecord, ReturnRecord, Store
from master.store.sqlite import SCHEMA_VERSION, SqliteStore

REPO_ROOT = Path(__file__).resolve().parents[2]


def make_job(jid: str, **overrides: Any) -> JobRecord:
    fields: dict[str, Any] = {
        "jid": jid,
        "fun": "state.apply",
        "args": ["chef.server", {"test": True}],
        "kwargs": {"pillar": {"nested": [1, 2.5, None, "x"]}, "queue": False},
        "target": "chef-*",
        "tgt_type": "glob",
        "minions": ["chef-1", "chef-2", "chef-3"],
        "missing": ["chef-3"],
        "user": "root",
        "created": 1_700_000_000.25,
        "timeout": 30.0,
    }
    fields.update(overrides)
    return JobRecord(**fields)


def make_ret(jid: str, minion: str, *, success: bool = True, ret: Any = "ok") -> ReturnRecord:
    return ReturnRecord(
        jid=jid,
        minion=minion,
        fun="test.ping",
        success=success,
        retcode=0 if success else 1,
        ret=ret,
        duration_ms=12.5,
        received=1_700_000_001.5,
    )


def make_event(tag: str, minion: str | None = "chef-1", **data: Any) -> EventRecord:
    return EventRecord(tag=tag, data=data, minion=minion, ts=1_700_000_002.0)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "master.db"


@pytest.fixture
def store(any_store: Store) -> Store:
    """Each test of the contract runs on SQLite and on PostgreSQL (tests/unit/conftest.py)."""
    return any_store


# -- jobs ---------------------------------------------------------------------------------


def test_job_round_trip(store: Store) -> None:
    job = make_job("20240101120000000001")
    store.save_job(job)
    assert store.get_job(job.jid) == job
    assert store.get_job("20240101120000000002") is None


def test_save_job_again_replaces(store: Store) -> None:
    store.save_job(make_job("20240101120000000001", missing=["chef-3"]))
    store.save_job(make_job("20240101120000000001", missing=[]))
    job = store.get_job("20240101120000000001")
    assert job is not None and job.missing == []
    assert len(store.list_jobs()) == 1


def test_list_jobs_newest_first_with_counts(store: Store) -> None:
    jids = [f"2024010112000000000{i}" for i in range(1, 6)]
    # Saved out of order: the order must come from the jid, not the insertion order.
    for jid in [jids[2], jids[0], jids[4], jids[1], jids[3]]:
        store.save_job(make_job(jid))
    store.save_returns(
        [
            make_ret(jids[4], "chef-1"),
            make_ret(jids[4], "chef-2", success=False),
            make_ret(jids[4], "chef-3"),
            make_ret(jids[1], "chef-1", success=False),
            make_ret("20990101000000000000", "chef-1"),  # return of an unknown job
        ]
    )

    summaries = store.list_jobs()
    assert [s.job.jid for s in summaries] == list(reversed(jids))
    counts = {s.job.jid: (s.returned, s.succeeded) for s in summaries}
    assert counts == {
        jids[4]: (3, 2),
        jids[3]: (0, 0),
        jids[2]: (0, 0),
        jids[1]: (1, 0),
        jids[0]: (0, 0),
    }
    assert summaries[0].job == make_job(jids[4])

    assert [s.job.jid for s in store.list_jobs(limit=2)] == [jids[4], jids[3]]


# -- returns ------------------------------------------------------------------------------


def test_returns_round_trip(store: Store) -> None:
    ok = make_ret("j1", "chef-1", ret={"result": True, "changes": {}})
    failed = make_ret("j1", "chef-2", success=False, ret="boom")
    other_job = make_ret("j2", "chef-1")
    assert store.save_returns([ok, failed, other_job]) == [True, True, True]
    assert store.job_returns("j1") == {"chef-1": ok, "chef-2": failed}
    assert store.job_returns("j2") == {"chef-1": other_job}
    assert store.job_returns("nope") == {}


def test_save_returns_dedup_across_batches(store: Store) -> None:
    first = make_ret("j1", "chef-1", ret="first")
    assert store.save_returns([first, make_ret("j1", "chef-2")]) == [True, True]
    # Same (jid, minion) again, with a different payload: ignored, the first one stays.
    result = store.save_returns(
        [make_ret("j1", "chef-1", ret="second"), make_ret("j1", "chef-3"), make_ret("j2", "chef-1")]
    )
    assert result == [False, True, True]
    returns = store.job_returns("j1")
    assert returns["chef-1"] == first
    assert sorted(returns) == ["chef-1", "chef-2", "chef-3"]


def test_save_returns_dedup_inside_batch(store: Store) -> None:
    batch = [
        make_ret("j1", "chef-1", ret="first"),
        make_ret("j1", "chef-2"),
        make_ret("j1", "chef-1", ret="second", success=False),
        make_ret("j1", "chef-1", ret="third"),
    ]
    assert store.save_returns(batch) == [True, True, False, False]
    assert store.job_returns("j1")["chef-1"] == batch[0]


def test_save_returns_empty_batch(store: Store) -> None:
    assert store.save_returns([]) == []
    assert store.save_events([]) == []


def test_save_returns_failed_batch_stores_nothing(store: Store) -> None:
    good = make_ret("j1", "chef-1")
    # A minion id sqlite cannot bind fails the second INSERT, after the first one ran.
    bad = make_ret("j1", cast(Any, object()))
    with pytest.raises((sqlite3.Error, psycopg2.Error)):
        store.save_returns([good, bad])
    assert store.job_returns("j1") == {}
    # The store is still usable and the rolled-back row counts as new.
    assert store.save_returns([good]) == [True]


def test_save_returns_unserialisable_value_raises(store: Store) -> None:
    with pytest.raises(TypeError):
        store.save_returns([make_ret("j1", "chef-1"), make_ret("j1", "chef-2", ret={1, 2})])
    assert store.job_returns("j1") == {}


def test_large_return_round_trips(store: Store) -> None:
    big = "x" * (10 * 1024 * 1024)
    big_bytes = os.urandom(10 * 1024 * 1024)
    store.save_returns(
        [make_ret("j1", "chef-1", ret={"stdout": big}), make_ret("j1", "chef-2", ret=big_bytes)]
    )
    returns = store.job_returns("j1")
    assert returns["chef-1"].ret == {"stdout": big}
    assert returns["chef-2"].ret == big_bytes


def test_bytes_and_odd_values_round_trip(store: Store) -> None:
    ret = {
        "raw": b"\x00\xff\xfebinary",
        "text": "caf\u00e9 \u2603",
        "nested": [b"", {"k": b"v"}, None, True, -(2**63), 2**64 - 1, 1.5],
        3: "int key",
    }
    store.save_returns([make_ret("j1", "chef-1", ret=ret)])
    got = store.job_returns("j1")["chef-1"].ret
    assert got == ret
    assert isinstance(got["raw"], bytes)
    assert isinstance(got["text"], str)


# -- events -------------------------------------------------------------------------------


def test_events_seq_increasing(store: Store) -> None:
    first = store.save_events([make_event("a", n=1), make_event("b", minion=None, n=2)])
    # A seq set by the caller is ignored: the store assigns it.
    second = store.save_events([dataclasses.replace(make_event("c", n=3), seq=999)])
    saved = first + second
    seqs = [e.seq for e in saved if e.seq is not None]
    assert len(seqs) == 3
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert 999 not in seqs
    assert saved[0] == EventRecord(
        tag="a", data={"n": 1}, minion="chef-1", ts=1_700_000_002.0, seq=seqs[0]
    )
    # The returned records are what the store holds.
    assert store.events_since(0) == saved
    assert saved[1].minion is None


def test_events_since_paging(store: Store) -> None:
    saved = store.save_events([make_event(f"salt/job/{i}", i=i) for i in range(25)])
    collected: list[EventRecord] = []
    cursor = 0
    pages = 0
    while True:
        page = store.events_since(cursor, limit=10)
        if not page:
            break
        assert len(page) <= 10
        collected.extend(page)
        last = page[-1].seq
        assert last is not None
        cursor = last
        pages += 1
    assert pages == 3
    assert collected == saved
    assert [e.data["i"] for e in collected] == list(range(25))
    assert store.events_since(saved[-1].seq or 0) == []
    assert store.events_since(saved[9].seq or 0, limit=2) == saved[10:12]


# -- minions ------------------------------------------------------------------------------


def test_minion_upsert_and_forget(store: Store) -> None:
    assert store.minions() == {}
    store.save_minion(MinionRecord("chef-1", {"os": "Ubuntu", "roles": ["fe"]}, 10.0))
    store.save_minion(MinionRecord("chef-2"))
    store.save_minion(MinionRecord("chef-1", {"os": "Ubuntu", "roles": ["be"]}, 20.0))
    assert store.minions() == {
        "chef-1": MinionRecord("chef-1", {"os": "Ubuntu", "roles": ["be"]}, 20.0),
        "chef-2": MinionRecord("chef-2", {}, 0.0),
    }
    store.forget_minion("chef-1")
    store.forget_minion("never-seen")  # no error
    assert list(store.minions()) == ["chef-2"]


# -- persistence, durability, files -------------------------------------------------------


def test_data_survives_close_and_reopen(db_path: Path) -> None:
    s = SqliteStore(db_path)
    job = make_job("20240101120000000001")
    s.save_job(job)
    ret = make_ret(job.jid, "chef-1", ret=b"bytes")
    s.save_returns([ret])
    events = s.save_events([make_event("a"), make_event("b")])
    s.save_minion(MinionRecord("chef-1", {"os": "Ubuntu"}, 5.0))
    s.close()
    s.close()  # idempotent

    s = SqliteStore(db_path)
    try:
        assert s.get_job(job.jid) == job
        assert s.job_returns(job.jid) == {"chef-1": ret}
        assert s.save_returns([ret]) == [False]
        assert s.events_since(0) == events
        # seq keeps increasing after a reopen.
        (more,) = s.save_events([make_event("c")])
        assert more.seq is not None and events[-1].seq is not None
        assert more.seq > events[-1].seq
        assert s.minions() == {"chef-1": MinionRecord("chef-1", {"os": "Ubuntu"}, 5.0)}
    finally:
        s.close()


def test_returns_survive_sigkill(db_path: Path) -> None:
    """save_returns is durable against kill -9 of the process right after it returned."""
    child = textwrap.dedent(
        """
        import os, signal, sys
        from pathlib import Path
        from master.store.base import ReturnRecord
        from master.store.sqlite import SqliteStore

        store = SqliteStore(Path(sys.argv[1]))
        batch = [
            ReturnRecord("j1", f"chef-{i}", "test.ping", True, 0, {"i": i}, 1.0, 2.0)
            for i in range(50)
        ]
        result = store.save_returns(batch)
        sys.stdout.write(repr(result.count(True)) + "\\n")
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", child, str(db_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.strip() == "50"
    # The child never closed or checkpointed: the data can only be in the WAL.
    wal = db_path.with_name(db_path.name + "-wal")
    assert wal.exists() and wal.stat().st_size > 0

    s = SqliteStore(db_path)
    try:
        returns = s.job_returns("j1")
        assert sorted(returns) == sorted(f"chef-{i}" for i in range(50))
        assert all(returns[f"chef-{i}"].ret == {"i": i} for i in range(50))
    finally:
        s.close()


def test_file_modes(db_path: Path) -> None:
    assert not db_path.parent.exists()
    s = SqliteStore(db_path)
    try:
        s.save_returns([make_ret("j1", "chef-1")])  # makes sure the WAL file exists
        assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
        wal = db_path.with_name(db_path.name + "-wal")
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600
    finally:
        s.close()


def test_existing_file_mode_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "master.db"
    path.touch()
    path.chmod(0o644)
    SqliteStore(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_wal_mode_and_schema_version(db_path: Path) -> None:
    SqliteStore(db_path).close()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"jobs", "returns", "events", "minions"} <= tables
    finally:
        conn.close()


def test_newer_schema_version_is_refused(db_path: Path) -> None:
    SqliteStore(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="schema version"):
        SqliteStore(db_path)


def test_second_store_sees_committed_data(db_path: Path) -> None:
    store = SqliteStore(db_path)
    reader = SqliteStore(db_path)
    try:
        assert reader.job_returns("j1") == {}
        store.save_returns([make_ret("j1", "chef-1")])
        assert list(reader.job_returns("j1")) == ["chef-1"]
    finally:
        reader.close()
        store.close()
