"""Counters of what the master refused or dropped, by reason; shown by ``saline status``."""

import logging
from collections import Counter

log = logging.getLogger(__name__)


class Refusals:
    """Every refused frame, handshake or request is counted here, never silently dropped.

    One exception, by design: a frame beyond twice ``max_frame_bytes`` makes libzmq drop the
    connection before the master sees a byte of it (the memory guard); that is not counted.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def count(self, reason: str, detail: str = "") -> None:
        self.counts[reason] += 1
        # the first few of each reason are logged; after that only counted (no log flood)
        if self.counts[reason] <= 5:
            log.warning("refused (%s): %s", reason, detail or reason)

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)
