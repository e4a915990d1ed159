"""Minion keys mirrored through the store (``master/keysync.py``) on both backends: two
masters' rings (two pki_dirs) sharing one real store."""

import logging
from pathlib import Path

import psycopg2  # type: ignore[import-untyped]
import pytest

from master.keysync import KeySync
from master.store.base import Store
from master.store.postgres import PostgresStore
from saline.keys import KeyRing, KeyState, generate_keypair
from tests.support import wait_for
from tests.unit.conftest import fresh_schema


def _pub() -> str:
    return generate_keypair().public


def _states(ring: KeyRing) -> dict[str, KeyState]:
    return {e.id: e.state for e in ring.entries()}


@pytest.fixture
def store(any_store: Store) -> Store:
    """SQLite and PostgreSQL (tests/unit/conftest.py)."""
    return any_store


def _ring(tmp_path: Path, name: str) -> KeyRing:
    return KeyRing(tmp_path / name / "pki")


def test_the_first_sync_pushes_every_local_key(store: Store, tmp_path: Path) -> None:
    ring = _ring(tmp_path, "m1")
    keys = {"be1": _pub(), "be2": _pub(), "be3": _pub()}
    ring.add("be1", keys["be1"], KeyState.ACCEPTED)
    ring.add("be2", keys["be2"], KeyState.PENDING)
    ring.add("be3", keys["be3"], KeyState.REJECTED)
    ring.set_trusted_grains("be1", {"role": "db"})
    assert KeySync(ring, store).sync()
    rows = {r.id: r for r in store.keys_since(0)}
    assert {i: (r.state, r.public) for i, r in rows.items()} == {
        "be1": ("accepted", keys["be1"]),
        "be2": ("pending", keys["be2"]),
        "be3": ("rejected", keys["be3"]),
    }
    assert rows["be1"].grains == {"role": "db"} and rows["be2"].grains == {}


def test_accept_reject_and_delete_propagate(store: Store, tmp_path: Path) -> None:
    one, two = _ring(tmp_path, "m1"), _ring(tmp_path, "m2")
    a, b = KeySync(one, store), KeySync(two, store)
    public = _pub()
    two.submit("be1", public)  # the minion said hello to m2
    assert b.sync() and a.sync()
    assert _states(one) == {"be1": KeyState.PENDING}
    one.accept("be1")  # the operator accepts on m1
    assert a.sync() and b.sync()
    assert _states(two) == {"be1": KeyState.ACCEPTED}
    entry = two.get("be1", KeyState.ACCEPTED)
    assert entry is not None and entry.public == public
    assert two.lookup_key(public) == entry  # what the ZAP handler asks
    two.reject("be1")
    assert b.sync() and a.sync()
    assert _states(one) == {"be1": KeyState.REJECTED}
    one.delete("be1")
    assert a.sync() and b.sync()
    assert _states(two) == {} and two.lookup_key(public) is None
    assert [r.state for r in store.keys_since(0)] == ["deleted"]
    # the minion says hello again: pending everywhere, then accepted everywhere
    two.submit("be1", public)
    assert b.sync() and a.sync()
    assert _states(one) == {"be1": KeyState.PENDING}
    one.accept("be1")
    assert a.sync() and b.sync() and a.sync()
    assert _states(one) == _states(two) == {"be1": KeyState.ACCEPTED}


def test_a_change_made_by_another_process_is_pushed(store: Store, tmp_path: Path) -> None:
    """``saline key accept`` edits the files; the master's ring (another object) follows."""
    one, two = _ring(tmp_path, "m1"), _ring(tmp_path, "m2")
    a, b = KeySync(one, store), KeySync(two, store)
    one.add("be1", _pub(), KeyState.PENDING)
    assert a.sync() and b.sync()
    cli = KeyRing(one.pki_dir)
    cli.accept("be1")
    cli.set_trusted_grains("be1", {"role": "web"})
    wait_for(lambda: a.sync() and b.sync() and _states(two) == {"be1": KeyState.ACCEPTED})
    assert two.trusted_grains("be1") == {"role": "web"}


def test_trusted_grains_propagate_and_replace(store: Store, tmp_path: Path) -> None:
    one, two = _ring(tmp_path, "m1"), _ring(tmp_path, "m2")
    a, b = KeySync(one, store), KeySync(two, store)
    one.add("be1", _pub(), KeyState.ACCEPTED)
    one.set_trusted_grains("be1", {"role": "db", "dc": "x"})
    assert a.sync() and b.sync()
    assert two.trusted_grains("be1") == {"role": "db", "dc": "x"}
    (one.pki_dir / "minions_grains" / "be1").unlink()
    one.set_trusted_grains("be1", {"role": "web"})
    assert a.sync() and b.sync()
    assert two.trusted_grains("be1") == {"role": "web"}  # replaced, not merged
    assert _states(two) == {"be1": KeyState.ACCEPTED}


def test_local_keys_absent_from_a_non_empty_table_are_pushed(store: Store, tmp_path: Path) -> None:
    one, fresh = _ring(tmp_path, "m1"), _ring(tmp_path, "m2")
    one.add("be1", _pub(), KeyState.ACCEPTED)
    assert KeySync(one, store).sync()
    fresh.add("be2", _pub(), KeyState.ACCEPTED)
    assert KeySync(fresh, store).sync()
    assert _states(fresh) == {"be1": KeyState.ACCEPTED, "be2": KeyState.ACCEPTED}
    assert {r.id: r.state for r in store.keys_since(0)} == {"be1": "accepted", "be2": "accepted"}


def test_a_tombstone_beats_a_stale_local_copy(store: Store, tmp_path: Path) -> None:
    one, two = _ring(tmp_path, "m1"), _ring(tmp_path, "m2")
    a = KeySync(one, store)
    public = _pub()
    one.add("be1", public, KeyState.ACCEPTED)
    one.add("be2", _pub(), KeyState.ACCEPTED)
    assert a.sync() and KeySync(two, store).sync()
    assert _states(two) == {"be1": KeyState.ACCEPTED, "be2": KeyState.ACCEPTED}
    # m2 stops; be1 is deleted on m1 meanwhile; m2 starts again (a new mirror, cursor 0)
    one.delete("be1")
    assert a.sync()
    assert KeySync(two, store).sync()
    assert _states(two) == {"be2": KeyState.ACCEPTED} and two.lookup_key(public) is None
    assert {r.id: r.state for r in store.keys_since(0)} == {"be1": "deleted", "be2": "accepted"}


def test_a_key_presented_again_after_its_delete_stays_pending(store: Store, tmp_path: Path) -> None:
    """Deleted here, then the minion says hello again: its own tombstone read back must
    not delete the new pending key, which is newer (tests/integration/test_keys.py)."""
    one, two = _ring(tmp_path, "m1"), _ring(tmp_path, "m2")
    a, b = KeySync(one, store), KeySync(two, store)
    public = _pub()
    one.add("fe1", public, KeyState.ACCEPTED)
    assert a.sync() and b.sync()
    one.delete("fe1")  # saline key delete fe1
    assert a.sync() and b.sync()
    assert _states(two) == {}, "the delete reached m2"
    one.submit("fe1", public)  # its next hello lands in pending on m1
    for _ in range(3):
        assert a.sync() and b.sync()
    assert _states(one) == {"fe1": KeyState.PENDING}
    assert _states(two) == {"fe1": KeyState.PENDING}, "and on m2"
    assert [r.state for r in store.keys_since(0) if r.id == "fe1"][-1] == "pending"


def test_the_store_wins_a_conflict(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    one, two = _ring(tmp_path, "m1"), _ring(tmp_path, "m2")
    a, b = KeySync(one, store), KeySync(two, store)
    one.add("be1", _pub(), KeyState.PENDING)
    assert a.sync() and b.sync()
    one.accept("be1")
    two.reject("be1")  # both before either synced
    assert a.sync()
    with caplog.at_level(logging.WARNING, logger="master.keysync"):
        assert b.sync()
    assert "be1 changed here and in the store" in caplog.text
    assert _states(two) == {"be1": KeyState.ACCEPTED}
    assert a.sync() and b.sync()
    assert _states(one) == _states(two) == {"be1": KeyState.ACCEPTED}
    assert [r.state for r in store.keys_since(0)] == ["accepted"]


def _kill_connections(dsn: str) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'saline-master'"
        )
    conn.close()


def test_a_store_down_does_not_raise_and_is_retried(
    pg_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = fresh_schema(pg_dsn)
    store = PostgresStore(dsn)
    try:
        ring = _ring(tmp_path, "m1")
        sync = KeySync(ring, store)
        ring.add("be1", _pub(), KeyState.ACCEPTED)
        assert sync.sync()
        ring.add("be2", _pub(), KeyState.PENDING)
        store._dsn = "host=127.0.0.1 port=1 connect_timeout=1"  # the server is away
        _kill_connections(dsn)
        done = sync.synced
        with caplog.at_level(logging.WARNING, logger="master.keysync"):
            sync.sync()  # does not raise
            sync.sync()
        assert sync.synced == done  # neither tick completed
        assert len([r for r in caplog.records if r.name == "master.keysync"]) == 1  # once
        assert ring.get("be2", KeyState.PENDING) is not None  # the ring is untouched
        store._dsn = dsn  # the server is back
        sync.sync()
        assert sync.synced == done + 1
        assert {r.id for r in store.keys_since(0)} == {"be1", "be2"}
    finally:
        store.close()
