"""Which minions are connected, from their heartbeats; emits start/lost transitions."""

import time
from dataclasses import dataclass


@dataclass
class Session:
    #: ROUTER routing id of the minion's current connection
    route: bytes
    last_seen: float


class Presence:
    """Sessions of accepted minions. A minion silent longer than ``timeout`` is lost."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.sessions: dict[str, Session] = {}

    def online(self, minion_id: str) -> bool:
        session = self.sessions.get(minion_id)
        return session is not None and time.monotonic() - session.last_seen <= self.timeout

    def start(self, minion_id: str, route: bytes) -> bool:
        """Open or refresh a session; True when the minion was not online before."""
        was_online = self.online(minion_id)
        self.sessions[minion_id] = Session(route, time.monotonic())
        return not was_online

    def seen(self, minion_id: str, route: bytes) -> bool:
        """Refresh a known session; False when there is none (the minion must say hello)."""
        session = self.sessions.get(minion_id)
        if session is None:
            return False
        session.route = route
        session.last_seen = time.monotonic()
        return True

    def route(self, minion_id: str) -> bytes | None:
        session = self.sessions.get(minion_id)
        return session.route if session is not None else None

    def drop(self, minion_id: str) -> bool:
        """End a session (bye, unroutable, key deleted); True when it was online."""
        was_online = self.online(minion_id)
        self.sessions.pop(minion_id, None)
        return was_online

    def expire(self) -> list[str]:
        """Remove and return sessions silent for longer than the timeout."""
        now = time.monotonic()
        lost = [m for m, s in self.sessions.items() if now - s.last_seen > self.timeout]
        for minion_id in lost:
            del self.sessions[minion_id]
        return lost

    def online_ids(self) -> list[str]:
        return sorted(m for m in self.sessions if self.online(m))
