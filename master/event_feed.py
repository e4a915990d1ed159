"""The shared store's events in seq order, each handed out once: what the leader of several
masters decides on (every master stores the events of its own minions).

Sequence numbers are handed out when an insert starts and become visible when it commits,
so with several writers seq 10 can appear after seq 11 was read. The feed keeps a low
watermark (every seq at or below it was handed out, or was a gap given up) and the seqs
above it already handed out; a gap is waited for ``gap_wait`` seconds (far longer than one
insert's transaction), then taken as a rolled-back seq and passed. The watermark is what the
reactor persists: a new leader replays from it and asks the store which of those events are
already decided.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable

from master.bus import EventBus
from master.store.base import EventRecord, Store

#: seconds between looks at the store when no local event wakes the feed up
POLL = 0.1
#: seconds a missing seq is waited for before it is taken as never committed
GAP_WAIT = 5.0
#: most events read in one look
BATCH = 1000


class StoreFeed:
    def __init__(
        self,
        store: Store,
        bus: EventBus,
        poll: float = POLL,
        gap_wait: float = GAP_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.bus = bus
        self.poll = poll
        self.gap_wait = gap_wait
        self._clock = clock
        self.low = 0
        self._given: set[int] = set()
        #: missing seq -> when it was first seen missing
        self._gaps: dict[int, float] = {}
        #: this master's own events wake the feed at once; other masters' within ``poll``
        self._wake = bus.subscribe("*")

    def reset(self, low: int) -> None:
        """Start again after seq ``low`` (a new leader's replay from the stored watermark)."""
        self.low, self._given, self._gaps = low, set(), {}

    def close(self) -> None:
        self.bus.unsubscribe(self._wake)

    async def next(self) -> list[EventRecord]:
        """Events not yet handed out, oldest first; waits up to ``poll`` when there are none."""
        fresh = self.read()
        if fresh:
            return fresh
        queue = self._wake.queue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(queue.get(), self.poll)
        while not queue.empty():  # only a wake-up signal: the store has the events
            queue.get_nowait()
        return self.read()

    def read(self) -> list[EventRecord]:
        fresh: list[EventRecord] = []
        start = self.low
        while True:
            rows = self.store.events_since(start, BATCH)
            new = [r for r in rows if r.seq is not None and r.seq not in self._given]
            fresh += new
            self._given.update(r.seq for r in new if r.seq is not None)
            # a gap holding the watermark back must not hide newer events behind a full batch
            if new or len(rows) < BATCH:
                break
            start = rows[-1].seq or start
        self._advance()
        return fresh

    def _advance(self) -> None:
        now = self._clock()
        while self._given:
            nxt = self.low + 1
            if nxt in self._given:
                self._given.discard(nxt)
                self._gaps.pop(nxt, None)
                self.low = nxt
                continue
            first_seen = self._gaps.setdefault(nxt, now)
            if now - first_seen < self.gap_wait:
                return
            del self._gaps[nxt]  # never committed (a rolled-back insert): pass it
            self.low = nxt
