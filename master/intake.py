"""Events from minions: allowed namespaces, a rate limit per minion, and dedup of resends.

A minion may only fire under tags its config allows (by default its own beacon and
Chef HA namespaces; never ``saline/job/...``, ``saline/key/...`` or another minion's), at
most ``minion_event_rate`` per second with bursts of ``minion_event_burst``. Refused and
excess events are acknowledged (the minion must not resend them forever), dropped and
counted; the first drop of an episode fires one ``saline/minion/ID/rate_limited``.
"""

import fnmatch
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    limited: bool = False


class EventIntake:
    def __init__(self, patterns: list[str], rate: float, burst: float) -> None:
        self.patterns = patterns
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}
        #: (minion, eid) of recently stored events: a resend after a lost ack is dropped
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def allowed(self, minion_id: str, tag: str) -> bool:
        if ".." in tag or "//" in tag or tag.startswith("/"):
            return False
        return any(fnmatch.fnmatchcase(tag, p.replace("{id}", minion_id)) for p in self.patterns)

    def admit(self, minion_id: str, now: float | None = None) -> tuple[bool, bool]:
        """(admitted, first drop of an episode) for one more event from ``minion_id``."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(minion_id)
        if bucket is None:
            bucket = self._buckets[minion_id] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            # an episode ends when the minion is well under its rate again, not at the
            # first token that trickles back in (one "rate_limited" event per flood)
            if bucket.tokens >= self.burst / 2:
                bucket.limited = False
            return True, False
        first = not bucket.limited
        bucket.limited = True
        return False, first

    def duplicate(self, minion_id: str, eid: str) -> bool:
        """True if this event id was stored already; else remember it."""
        key = (minion_id, eid)
        if key in self._seen:
            return True
        self._seen[key] = None
        if len(self._seen) > 100_000:
            self._seen.popitem(last=False)
        return False
