"""Job ids that sort by time: a 20-digit UTC timestamp to the microsecond."""

import threading
import time
from datetime import UTC, datetime

_lock = threading.Lock()
_last_us = 0


def new_jid() -> str:
    """Return a new job id; lexicographic order equals creation order within one master.

    Two ids asked for in the same microsecond get consecutive microseconds, so ids never
    collide and never go backwards inside one process.
    """
    global _last_us
    with _lock:
        now_us = max(time.time_ns() // 1000, _last_us + 1)
        _last_us = now_us
    stamp = datetime.fromtimestamp(now_us // 1_000_000, tz=UTC)
    return f"{stamp:%Y%m%d%H%M%S}{now_us % 1_000_000:06d}"
