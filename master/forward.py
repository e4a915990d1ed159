"""A standby's reactor switches, done by the leader: with several masters only the leader's
reactor state is in use, so ``reactor pause|resume|approve|reject|forget`` asked of a
standby travel to the leader as an event through the shared store, and its replies come
back the same way. Events are ordered, durable and written by masters only (no minion may
fire under ``saline/master/``); the leader runs the request through the same table of
operations as its own socket, so the answer is the one it would give there.

A request carries a deadline: the standby waits that long, and a leader that reads it
later (a hand-over's replay) drops it instead of acting on a question nobody waits for.
"""

import logging
import time
import uuid
from typing import Any

from master.bus import EventBus
from master.event_feed import StoreFeed
from master.store.base import EventRecord, Store

log = logging.getLogger(__name__)

#: ``saline/master/request/RID`` from a standby; ``saline/master/answer/RID`` from the leader
REQUEST = "saline/master/request/"
ANSWER = "saline/master/answer/"
#: seconds a standby waits for the leader's answer
WAIT = 10.0


class NoAnswer(Exception):
    """The leader did not answer in time (it may still act: its answer says so later)."""


async def ask(
    store: Store,
    bus: EventBus,
    *,
    asker: str,
    op: str,
    request: dict[str, Any],
    user: str,
    role: str,
    wait: float = WAIT,
) -> list[dict[str, Any]]:
    """Put ``request`` to the leader; answer its replies (each a reply's wire map).

    :raises NoAnswer: nothing came back within ``wait`` seconds.
    """
    rid = uuid.uuid4().hex
    data = {
        "op": op,
        "request": request,
        "user": user,
        "role": role,
        "from": asker,
        "expires": time.time() + wait,
    }
    feed = StoreFeed(store, bus)
    try:
        [sent] = bus.publish_records([EventRecord(REQUEST + rid, data, None, 0)])
        feed.reset((sent.seq or 1) - 1)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for event in await feed.next():  # waits up to the feed's poll when nothing came
                if event.tag == ANSWER + rid:
                    replies = event.data.get("replies")
                    return replies if isinstance(replies, list) else []
    finally:
        feed.close()
    raise NoAnswer(f"the leader did not answer {op} within {wait:g} s (it may still act)")


def request_id(record: EventRecord) -> str | None:
    """The request id of a standby's request event, None for any other event."""
    if not record.tag.startswith(REQUEST) or record.minion is not None:
        return None
    rid = record.tag[len(REQUEST) :]
    return rid if rid.isalnum() else None


def answer(bus: EventBus, rid: str, by: str, replies: list[dict[str, Any]]) -> None:
    bus.publish_records([EventRecord(ANSWER + rid, {"replies": replies, "by": by}, None, 0)])
