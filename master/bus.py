"""The minimal event bus: store every event, then hand it to live subscribers.

Subscribers are asyncio queues filtered by a tag glob. A subscriber that does not keep up
loses events (counted on the subscription), never the bus or the store.
"""

import asyncio
import fnmatch
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from master.store.base import EventRecord, Store

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Subscription:
    tag_glob: str
    queue: asyncio.Queue[EventRecord] = field(default_factory=lambda: asyncio.Queue(10_000))
    dropped: int = 0

    def offer(self, event: EventRecord) -> None:
        if not fnmatch.fnmatchcase(event.tag, self.tag_glob):
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1


class EventBus:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.subscriptions: set[Subscription] = set()

    def publish_many(self, events: list[tuple[str, dict[str, Any], str | None]]) -> None:
        """Store a batch of (tag, data, minion) in one transaction, then fan it out."""
        now = time.time()
        self.publish_records([EventRecord(t, d, m, now) for t, d, m in events])

    def publish_records(self, events: list[EventRecord]) -> list[EventRecord]:
        """Store ready-made records (ts, minion, chain fields set) in one transaction, then
        fan them out; returns them with ``seq`` set."""
        if not events:
            return []
        now = time.time()
        saved = self.store.save_events([e if e.ts else replace(e, ts=now) for e in events])
        for event in saved:
            for sub in list(self.subscriptions):
                try:
                    sub.offer(event)
                except Exception:  # one subscriber's fault is its own, never the bus's
                    sub.dropped += 1
                    log.exception("subscriber %r could not take event %s", sub.tag_glob, event.seq)
        return saved

    def publish(self, tag: str, data: dict[str, Any], minion: str | None = None) -> None:
        self.publish_many([(tag, data, minion)])

    def subscribe(self, tag_glob: str = "*") -> Subscription:
        sub = Subscription(tag_glob)
        self.subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscriptions.discard(sub)
