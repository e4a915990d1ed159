"""Events from minions: allowed namespaces, a rate limit per minion, and dedup of resends.

A minion may only fire under tags its config allows (by default its own beacon and
Chef HA namespaces; never ``saline/job/...``, ``saline/key/...`` or another minion's), at
most ``minion_event_rate`` per second with bursts of ``minion_event_burst``. Refused and
excess events are acknowledged (the minion must not resend them forever), dropped and
counted; the first drop of an episode fires one ``saline/minion/ID/rate_limited``.

Event data must be JSON-shaped (no bin, ext types or timestamps; at most
``DEFAULT_MAX_DEPTH`` levels) and at most ``max_event_bytes`` packed: anything else is
acknowledged, dropped, counted as ``bad_event`` and announced by one
``saline/minion/ID/refused`` per minion and ``REFUSED_EVENT_PERIOD``.
"""

import fnmatch
import time
from collections import OrderedDict
from typing import Any

from master.ratelimit import RateLimiter
from saline.values import value_problem

#: at most one ``saline/minion/ID/refused`` event per minion in this many seconds
REFUSED_EVENT_PERIOD = 60.0


class EventIntake:
    def __init__(
        self, patterns: list[str], rate: float, burst: float, max_event_bytes: int = 65536
    ) -> None:
        self.patterns = patterns
        self.rate = rate
        self.burst = burst
        self.max_event_bytes = max_event_bytes
        self._limiter = RateLimiter(rate, burst)
        #: minion -> when its last ``refused`` event was fired (one per flood)
        self._refused_at: dict[str, float] = {}
        #: (minion, eid) of recently stored events: a resend after a lost ack is dropped
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def allowed(self, minion_id: str, tag: str) -> bool:
        if ".." in tag or "//" in tag or tag.startswith("/"):
            return False
        if tag.startswith(
            "saline/master/"
        ):  # masters' requests to each other, whatever the patterns
            return False
        return any(fnmatch.fnmatchcase(tag, p.replace("{id}", minion_id)) for p in self.patterns)

    def data_problem(self, data: Any) -> str | None:
        """Why this event data may not be stored (shape, depth, size); None if it may."""
        return value_problem(data, self.max_event_bytes)

    def first_refusal(self, minion_id: str, now: float | None = None) -> bool:
        """True when a refusal of ``minion_id``'s event should be announced (once a period)."""
        now = time.monotonic() if now is None else now
        last = self._refused_at.get(minion_id)
        if last is not None and now - last < REFUSED_EVENT_PERIOD:
            return False
        self._refused_at[minion_id] = now
        return True

    def admit(self, minion_id: str, now: float | None = None) -> tuple[bool, bool]:
        """(admitted, first drop of an episode) for one more event from ``minion_id``."""
        return self._limiter.take(minion_id, now)

    def duplicate(self, minion_id: str, eid: str) -> bool:
        """True if this event id was stored already; else remember it."""
        key = (minion_id, eid)
        if key in self._seen:
            return True
        self._seen[key] = None
        if len(self._seen) > 100_000:
            self._seen.popitem(last=False)
        return False
