"""The reactor's memory between events: throttles, in-flight reactions, flaps, pending work.

:class:`ReactorState` is plain JSON-serialisable data (``model_dump_json`` /
``model_validate_json``) so the master can persist it after every decision and restore it after
a restart; only :mod:`reactors.engine` changes it. Nested ``rule -> key -> ...`` dicts keep keys
JSON strings whatever characters a rendered key holds.
"""

from __future__ import annotations

from pydantic import BaseModel

from reactors.model import Decision, Event
from saline.errors import SalineError

__all__ = ["Awaiting", "InFlight", "Pending", "ReactionNotFound", "ReactorState"]


class ReactionNotFound(SalineError, KeyError):
    """No reaction with that id is awaiting approval."""


class InFlight(BaseModel):
    """A fired reaction whose outcome the master has not reported yet (see ``finish``)."""

    rule: str
    key: str
    #: the rule's guard group, or None
    group: str | None = None
    #: minion ids the actions target
    touches: list[str] = []
    disruptive: bool = False
    started: float
    #: tag+data hash of the causing event (duplicate detection)
    digest: str


class Pending(BaseModel):
    """A ``once_after`` (``grace``) reaction waiting for a quiet period (its grace to end);
    acts on the latest event."""

    event: Event
    first_seen: float
    last_seen: float
    count: int = 1
    #: due, but another reaction holds its group: looked at again on every tick until the
    #: slot frees (the refusal was told once)
    waiting: bool = False


class Awaiting(BaseModel):
    """A decision in ``approve`` mode held until an operator approves or rejects it."""

    decision: Decision
    #: the rule's max_concurrent when decided, re-checked on approval
    max_concurrent: int | None = None
    #: tag+data hash of the causing event, carried in flight once approved
    digest: str = ""


class ReactorState(BaseModel):
    """Everything the guards remember. Mutated only by the engine's functions (and the
    ``cursor``, by the master's reactor)."""

    #: the store's events up to this seq were decided (a leader of several masters replays
    #: after it when it takes over); None until the first such leader
    cursor: int | None = None
    #: operator switch: while set, every matching event is skipped with reason "paused"
    paused: bool = False
    #: rule -> key -> time of the last firing (throttle and cooldown)
    last_fired: dict[str, dict[str, float]] = {}
    #: rule -> key -> firing times still inside the flap window
    firings: dict[str, dict[str, list[float]]] = {}
    #: rule -> key -> time the key was escalated as flapping
    escalated: dict[str, dict[str, float]] = {}
    #: reaction id -> in-flight reaction
    in_flight: dict[str, InFlight] = {}
    #: rule -> key -> pending once_after reaction
    pending: dict[str, dict[str, Pending]] = {}
    #: reaction id -> decision awaiting approval
    awaiting: dict[str, Awaiting] = {}

    def last_fire(self, rule: str, key: str) -> float | None:
        """When ``rule`` last fired for ``key``, or None."""
        return self.last_fired.get(rule, {}).get(key)

    def recent_firings(self, rule: str, key: str, since: float) -> list[float]:
        """Firing times of (rule, key) at or after ``since``."""
        return [t for t in self.firings.get(rule, {}).get(key, []) if t >= since]

    def record_firing(self, rule: str, key: str, now: float, window: float | None) -> None:
        """Note a firing for throttle, cooldown and (when ``window`` is set) flap counting."""
        self.last_fired.setdefault(rule, {})[key] = now
        if window is not None:
            kept = self.recent_firings(rule, key, now - window)
            self.firings.setdefault(rule, {})[key] = [*kept, now]

    def in_flight_in(self, group: str) -> dict[str, InFlight]:
        """In-flight reactions whose rule guards ``group``."""
        return {rid: r for rid, r in self.in_flight.items() if r.group == group}
