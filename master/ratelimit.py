"""Token buckets by key, with floods told apart from their first drop.

A key (a minion id, a source address, or ``"*"`` for a total) may take ``rate`` tokens a
second with bursts of ``burst``. A flood is an *episode*: it starts at the first refusal
and ends only when the key is well under its rate again (half its burst back), so whoever
announces floods announces each one once, not once per refused message.
"""

import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    limited: bool = False


class RateLimiter:
    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str, now: float | None = None, cost: float = 1.0) -> tuple[bool, bool]:
        """(admitted, first refusal of an episode) for one more message under ``key``
        (``cost`` tokens of it: a limiter in bytes takes the message's size)."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)  # the least recently seen key starts over
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            self._buckets.move_to_end(key)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            if bucket.tokens >= self.burst / 2:
                bucket.limited = False
            return True, False
        first = not bucket.limited
        bucket.limited = True
        return False, first
