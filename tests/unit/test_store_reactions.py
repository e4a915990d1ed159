"""The store keeps the reactor's trail and each job's reaction chain (schema 3), across
restarts and across the migration from the schemas before it."""

import sqlite3
from pathlib import Path

import pytest

from master.bus import EventBus
from master.inventory import Inventory
from master.jobs import JobManager, JobRequest
from master.presence import Presence
from master.store.base import ActionProgress, Chain, JobRecord, ReactionRecord, Store
from master.store.sqlite import SCHEMA_VERSION, SqliteStore, pack_value
from reactors.model import RenderedAction
from reactors.rules import OrchestrateAction, RunAction
from saline.keys import KeyRing, KeyState, generate_keypair

RUN = {"kind": "run", "target": "be1", "tgt_type": "glob", "function": "test.ping"}


@pytest.fixture
def store(any_store: Store) -> Store:
    """SQLite and PostgreSQL (tests/unit/conftest.py)."""
    return any_store


def _job(jid: str, chain: Chain | None = None) -> JobRecord:
    return JobRecord(
        jid, "test.ping", [], {}, "be1", "glob", ["be1"], [], "u", 1.0, 5.0, chain or Chain()
    )


def _reaction(rid: str, rule: str = "fix", created: float = 1.0, **kw: object) -> ReactionRecord:
    action = RenderedAction(action=RunAction(**RUN), cause="7", depth=2, rule=rule)  # type: ignore[arg-type]
    fields: dict[str, object] = {
        "id": rid,
        "event_seq": 7,
        "event_tag": "chef/backend/be1/pg/out_of_sync",
        "rule": rule,
        "verdict": "fire",
        "reason": "fired",
        "key": "be1",
        "actions": [action],
        "created": created,
        **kw,
    }
    return ReactionRecord(**fields)  # type: ignore[arg-type]


def test_a_job_keeps_its_chain(store: Store) -> None:
    store.save_job(_job("j1", Chain(cause=41, depth=2, rule="chef-pg")))
    store.save_job(_job("j2"))
    assert store.get_job("j1").chain == Chain(41, 2, "chef-pg")  # type: ignore[union-attr]
    assert store.get_job("j2").chain == Chain()  # type: ignore[union-attr]
    [newest, oldest] = store.list_jobs()
    assert (newest.job.chain, oldest.job.chain) == (Chain(), Chain(41, 2, "chef-pg"))


def test_a_restarted_master_knows_the_chain_of_an_earlier_job(tmp_path: Path) -> None:
    """Return and drift events of a job started before a restart carry its chain on."""
    keys = KeyRing(tmp_path / "pki")
    keys.add("be1", generate_keypair().public, KeyState.ACCEPTED)
    path = tmp_path / "master.db"

    def manager(store: SqliteStore) -> JobManager:
        inventory = Inventory(keys, Presence(30.0), store)
        return JobManager(store, EventBus(store), inventory, lambda m, f: True)

    first = SqliteStore(path)
    chain = Chain(cause=9, depth=1, rule="heal")
    request = JobRequest("be1", "glob", "test.ping", [], {}, 5.0, None, "reactor:heal", (), chain)
    jid = manager(first).start(request).record.jid
    [new_event] = first.events_since(0)
    assert (new_event.cause, new_event.depth, new_event.rule) == (9, 1, "heal")
    first.close()
    second = SqliteStore(path)
    try:
        again = manager(second)
        assert again.chain_of(jid) == chain
        assert again.targeted_fun(jid, "be1") == "test.ping"
        assert again.chain_of("no-such-job") == Chain()
    finally:
        second.close()


def test_reactions_round_trip_as_models(store: Store) -> None:
    row = _reaction("r1")
    row.progress[0] = ActionProgress("started", jid="20261202000000000001")
    store.save_reactions([row])
    back = store.get_reaction("r1")
    assert back == row
    assert isinstance(back.actions[0].action, RunAction)  # type: ignore[union-attr]
    assert back.depth == 2  # type: ignore[union-attr]
    assert store.get_reaction("r2") is None


def test_history_is_newest_first_and_filters_by_rule(store: Store) -> None:
    store.save_reactions([_reaction("a", created=1.0), _reaction("b", "other", created=2.0)])
    store.save_reactions([_reaction("c", created=3.0)])
    assert [r.id for r in store.reaction_history()] == ["c", "b", "a"]
    assert [r.id for r in store.reaction_history(rule="fix")] == ["c", "a"]
    assert [r.id for r in store.reaction_history(limit=1)] == ["c"]


def test_open_reactions_are_fired_or_approved_and_unfinished(store: Store) -> None:
    store.save_reactions(
        [
            _reaction("open", created=2.0),
            _reaction("approved", created=1.0, verdict="approved"),
            _reaction("done", outcome="ok", finished=3.0),
            _reaction("held", verdict="await_approval"),
        ]
    )
    assert [r.id for r in store.open_reactions()] == ["approved", "open"]


def test_a_batch_of_reactions_is_stored_whole_or_not_at_all(store: Store) -> None:
    bad = _reaction("bad")
    bad.progress[0] = ActionProgress("done", detail=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.save_reactions([_reaction("good"), bad])
    assert store.get_reaction("good") is None


def test_a_reaction_twice_in_one_batch_is_stored_as_its_last(store: Store) -> None:
    """A batch may carry a reaction's decision and, later, its progress (one row, the last
    write wins); the rows around it are stored too."""
    first = _reaction("r1")
    later = _reaction("r1", outcome="ok", finished=2.0)
    later.progress[0] = ActionProgress("done", jid="j1")
    store.save_reactions([first, _reaction("r2", rule="other"), later])
    stored = store.get_reaction("r1")
    assert stored is not None and stored.outcome == "ok" and stored.progress[0].jid == "j1"
    assert store.get_reaction("r2") is not None
    assert [r.id for r in store.reaction_history(rule="fix")] == ["r1"]


def test_reactor_state_round_trip(store: Store) -> None:
    assert store.load_reactor_state() is None
    store.save_reactor_state({"paused": True, "in_flight": {"r1": 1.0}})
    store.save_reactor_state({"paused": False, "in_flight": {}})
    assert store.load_reactor_state() == {"paused": False, "in_flight": {}}


_V2 = (
    """CREATE TABLE jobs (jid TEXT PRIMARY KEY, fun TEXT NOT NULL, args BLOB NOT NULL,
        kwargs BLOB NOT NULL, target TEXT NOT NULL, tgt_type TEXT NOT NULL,
        minions BLOB NOT NULL, missing BLOB NOT NULL, user TEXT NOT NULL,
        created REAL NOT NULL, timeout REAL NOT NULL)""",
    """CREATE TABLE returns (jid TEXT NOT NULL, minion TEXT NOT NULL, fun TEXT NOT NULL,
        success INTEGER NOT NULL, retcode INTEGER NOT NULL, ret BLOB NOT NULL,
        duration_ms REAL NOT NULL, received REAL NOT NULL, PRIMARY KEY (jid, minion))""",
    """CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, tag TEXT NOT NULL,
        data BLOB NOT NULL, minion TEXT, ts REAL NOT NULL, cause INTEGER,
        depth INTEGER NOT NULL DEFAULT 0, rule TEXT)""",
    "CREATE TABLE minions (id TEXT PRIMARY KEY, grains BLOB NOT NULL, last_seen REAL NOT NULL)",
    # the reactor's tables, created beside the schema by the reaction store of version 2
    """CREATE TABLE reactions (id TEXT PRIMARY KEY, event_seq INTEGER, event_tag TEXT NOT NULL,
        rule TEXT NOT NULL, verdict TEXT NOT NULL, reason TEXT NOT NULL, key TEXT NOT NULL,
        actions BLOB NOT NULL, progress BLOB NOT NULL, outcome TEXT, created REAL NOT NULL,
        finished REAL)""",
    """CREATE TABLE reactor_state (id INTEGER PRIMARY KEY CHECK (id = 1),
        state BLOB NOT NULL, updated REAL NOT NULL)""",
    "PRAGMA user_version=2",
)


def test_a_version_2_store_migrates_keeping_jobs_and_reactions(tmp_path: Path) -> None:
    path = tmp_path / "master.db"
    conn = sqlite3.connect(path)
    for statement in _V2:
        conn.execute(statement)
    empty = pack_value([])
    conn.execute(
        "INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            "j1",
            "test.ping",
            empty,
            pack_value({}),
            "*",
            "glob",
            pack_value(["be1"]),
            empty,
            "root",
            1.0,
            5.0,
        ),
    )
    orchestrate = {"kind": "orchestrate", "runbook": "chef/heal_follower", "vars": {"n": 1}}
    actions = [{"action": orchestrate, "cause": "3", "depth": 1, "rule": "fix"}]
    progress = {"0": {"state": "started"}}
    conn.execute(
        "INSERT INTO reactions VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            "r1",
            3,
            "t",
            "fix",
            "fire",
            "fired",
            "k",
            pack_value(actions),
            pack_value(progress),
            None,
            1.0,
            None,
        ),
    )
    conn.execute("INSERT INTO reactor_state VALUES (1, ?, 1.0)", (pack_value({"paused": True}),))
    conn.commit()
    conn.close()

    store = SqliteStore(path)
    try:
        assert store.get_job("j1").chain == Chain()  # type: ignore[union-attr]
        [row] = store.open_reactions()
        assert isinstance(row.actions[0].action, OrchestrateAction)
        assert row.actions[0].action.vars == {"n": 1}
        assert row.progress == {0: ActionProgress("started")}
        assert store.load_reactor_state() == {"paused": True}
        store.save_job(_job("j2", Chain(3, 1, "fix")))
        assert store.get_job("j2").chain == Chain(3, 1, "fix")  # type: ignore[union-attr]
    finally:
        store.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
