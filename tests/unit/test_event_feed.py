"""The store feed: every stored event handed out once, in seq order, gaps waited for."""

import asyncio

import psycopg2  # type: ignore[import-untyped]
import psycopg2.extras

from master.bus import EventBus
from master.event_feed import StoreFeed
from master.store import pg_sql
from master.store.base import EventRecord, Store
from master.store.postgres import PostgresStore
from master.store.rows import event_row
from tests.unit.conftest import fresh_schema


def event(tag: str) -> EventRecord:
    return EventRecord(tag, {"n": tag}, "be1", 1.0)


def tags(records: list[EventRecord]) -> list[str]:
    return [r.tag for r in records]


def test_each_event_once_in_order_and_a_reset_replays(any_store: Store) -> None:
    feed = StoreFeed(any_store, EventBus(any_store))
    any_store.save_events([event("a"), event("b")])
    assert tags(feed.read()) == ["a", "b"]
    assert feed.read() == []
    [c] = any_store.save_events([event("c")])
    assert tags(feed.read()) == ["c"] and feed.low == c.seq
    feed.reset(0)
    assert tags(feed.read()) == ["a", "b", "c"]


def test_a_local_event_wakes_the_feed_before_its_poll(any_store: Store) -> None:
    bus = EventBus(any_store)
    feed = StoreFeed(any_store, bus, poll=30.0)

    async def scenario() -> list[EventRecord]:
        waiter = asyncio.create_task(feed.next())
        await asyncio.sleep(0)  # let it start: it reads nothing and waits on its queue
        bus.publish("x/local", {})
        return await asyncio.wait_for(waiter, 5.0)

    assert tags(asyncio.run(scenario())) == ["x/local"]


def uncommitted_insert(conn: object, tag: str) -> None:
    """The store's own insert, in a transaction left open on ``conn``."""
    with conn.cursor() as cur:  # type: ignore[attr-defined]
        psycopg2.extras.execute_values(cur, pg_sql.INSERT_EVENTS, [event_row(event(tag))])


def test_a_seq_committed_late_is_not_lost_and_an_abandoned_one_is_passed(pg_dsn: str) -> None:
    dsn = fresh_schema(pg_dsn)
    store = PostgresStore(dsn)  # creates the schema
    clock = [0.0]
    feed = StoreFeed(store, EventBus(store), gap_wait=5.0, clock=lambda: clock[0])
    slow = psycopg2.connect(dsn)  # another master whose insert has not committed yet
    uncommitted_insert(slow, "late")
    store.save_events([event("early")])  # takes the next seq and commits first
    assert tags(feed.read()) == ["early"]
    held = feed.low
    slow.commit()
    assert tags(feed.read()) == ["late"], "the event committed late was lost"
    assert feed.low > held
    # a seq that never commits (rolled back) holds the watermark only for gap_wait
    aborted = psycopg2.connect(dsn)
    uncommitted_insert(aborted, "never")
    aborted.rollback()
    [after] = store.save_events([event("after")])
    assert tags(feed.read()) == ["after"]
    assert feed.low < (after.seq or 0), "passed the gap before waiting for it"
    clock[0] = 6.0
    assert feed.read() == [] and feed.low == after.seq
    for conn in (slow, aborted):
        conn.close()
    store.close()
