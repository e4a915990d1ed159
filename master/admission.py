"""Keys the master has never seen: how fast they may arrive, how many may wait, how loudly.

Anyone who can reach the port can make up a key, so unknown keys are the cheapest attack:

* their CURVE handshakes are rate-limited in total and per source address (the ZAP
  handler asks :meth:`KeyAdmission.handshake`); known keys are never limited;
* at most ``max_pending`` keys wait for an operator; beyond that new keys are refused
  and counted, not filed;
* each new pending key is logged and announced (``saline/key/ID/pending``) while they
  come at an enrolment's pace; a flood gets one log line and one ``saline/key/flood``
  event per episode instead of one per key.
"""

import time

from master.ratelimit import RateLimiter

#: new pending keys announced one by one: this many at once, then one per ANNOUNCE_EVERY s
ANNOUNCE_BURST = 20
ANNOUNCE_EVERY = 6.0
#: a flood is announced again only after this many seconds
FLOOD_QUIET = 60.0


class KeyAdmission:
    def __init__(
        self, rate: float, burst: float, per_address_rate: float, per_address_burst: float
    ) -> None:
        self._total = RateLimiter(rate, burst, max_keys=1)
        self._by_address = RateLimiter(per_address_rate, per_address_burst, max_keys=10_000)
        self._announce = RateLimiter(1 / ANNOUNCE_EVERY, ANNOUNCE_BURST, max_keys=1)
        self._flood_at: float | None = None

    def handshake(self, address: str) -> str | None:
        """Why an unknown key from ``address`` may not shake hands now; None if it may."""
        if not self._by_address.take(address)[0]:
            return f"new keys from {address} arrive too fast"
        if not self._total.take("*")[0]:
            return "new keys arrive too fast"
        return None

    def announce(self) -> bool:
        """True when this new pending key is to be announced on its own."""
        return self._announce.take("*")[0]

    def flood_started(self, now: float | None = None) -> bool:
        """True for the first sign of a flood (keys too fast, or the pending cap reached) in
        ``FLOOD_QUIET`` seconds: that one is logged and announced, the rest only counted."""
        now = time.monotonic() if now is None else now
        first = self._flood_at is None or now - self._flood_at >= FLOOD_QUIET
        if first:
            self._flood_at = now
        return first
