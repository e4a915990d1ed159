"""Rehearse an incident: recorded events replayed through the reactor's rules, acting on
nothing (``saline reactor simulate``).

The replay runs the reactor's own engine (``reactors/engine.py``) on every recorded event in
seq order, on a simulated clock: each event is decided at its own time, trailing
(``once_after``) reactions are looked at every :data:`TICK` seconds of simulated time, as
the master's timer does. The cluster view starts from a snapshot (``saline reactor view``:
minions and grains, who is online, the latest beacon observations, and the reactor's
memory) and follows the recorded beacon and presence events.

A fired reaction holds its in-flight slot until it ends. When the recording holds the real
reactor's decision for the same event and rule and that reaction's end, the simulated one
ends at the same time with the same outcome; when the real one fired and had not ended
when the recording stops, the simulated one holds its slot to the end; otherwise it is
assumed to succeed after ``reaction_seconds``. Each decision is set beside the real one
when the recording has it, so a rule change can be rehearsed against last night's incident.
"""

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from master.observations import Observations
from master.reactor import TICK, as_event
from master.store.base import EventRecord
from reactors.engine import due, evaluate, finish
from reactors.model import Decision, RenderedAction, Verdict
from reactors.policy import Policy
from reactors.rules import (
    EscalateAction,
    FireAction,
    NotifyAction,
    OrchestrateAction,
    RunAction,
)
from reactors.state import ReactorState
from reactors.view import StaticView
from saline.errors import SalineError

__all__ = [
    "Simulated",
    "Simulation",
    "SimulationError",
    "Snapshot",
    "load_events",
    "load_snapshot",
]

#: simulated seconds a trailing reaction may still come after the last event
HORIZON = 3600.0
#: how a once_after rule's decision on an event it holds begins (reactors/engine.py)
PENDING = "pending: "


class SimulationError(SalineError):
    """An events file or snapshot cannot be read (names the file and line)."""


class Snapshot(BaseModel):
    """The cluster view a replay starts from (what ``saline reactor view`` prints)."""

    #: accepted minion id -> grains
    minions: dict[str, dict[str, Any]] = {}
    #: online minion ids; None: every accepted minion
    online: list[str] | None = None
    #: minion -> beacon -> latest observation
    observations: dict[str, dict[str, dict[str, Any]]] = {}
    #: the reactor's memory (throttles, in flight, flap history); None: a fresh reactor
    state: dict[str, Any] | None = None


def load_snapshot(path: Path) -> Snapshot:
    """:raises SimulationError: unreadable, not JSON, or not a snapshot (names the field)."""
    try:
        return Snapshot.model_validate_json(path.read_bytes())
    except OSError as e:
        raise SimulationError(f"{path}: cannot read the view snapshot: {e}") from e
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top)"
        raise SimulationError(f"{path}: {where}: {err['msg']}") from e


def load_events(path: Path) -> list[EventRecord]:
    """Events as ``saline events --out json`` writes them (one object per line), by seq.

    :raises SimulationError: ``FILE:LINE: what is wrong`` for the first bad line.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SimulationError(f"{path}: cannot read the events: {e}") from e
    events = [_event(path, number, line) for number, line in enumerate(lines, 1) if line.strip()]
    return sorted(events, key=lambda e: (e.seq is None, e.seq or 0, e.ts))


def _event(path: Path, number: int, line: str) -> EventRecord:
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as e:
        raise SimulationError(f"{path}:{number}: not JSON: {e.msg}") from e
    if not isinstance(doc, dict):
        raise SimulationError(f"{path}:{number}: an event is a JSON object")
    try:
        return EventRecord(
            tag=_typed(doc, "tag", str),
            data=_typed(doc, "data", dict, {}),
            minion=_typed(doc, "minion", str, None),
            ts=float(_typed(doc, "ts", (int, float))),
            seq=_typed(doc, "seq", int, None),
            cause=_typed(doc, "cause", int, None),
            depth=_typed(doc, "depth", int, 0),
            rule=_typed(doc, "rule", str, None),
        )
    except (KeyError, TypeError) as e:
        raise SimulationError(f"{path}:{number}: {e.args[0]}") from e


_REQUIRED = object()


def _typed(doc: dict[str, Any], name: str, kind: Any, default: Any = _REQUIRED) -> Any:
    value = doc.get(name, default)
    if value is _REQUIRED:
        raise KeyError(f"{name}: missing")
    if value is None and default is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{name}: expected {getattr(kind, '__name__', 'a number')}")
    return value


@dataclass(frozen=True)
class Real:
    """What the real reactor recorded about one (event, rule)."""

    verdict: str
    reason: str
    reaction: str | None


@dataclass
class Simulated:
    """One simulated decision, beside the real one when the recording has it."""

    decision: Decision
    #: the event decided on (None for a trailing reaction decided on the timer)
    seq: int | None
    real: Real | None = None
    #: how the simulated reaction ended: "ok" / "failed" (as recorded) or "assumed ok"
    ended: str | None = None

    @property
    def differs(self) -> bool:
        return self.real is not None and self.real.verdict != self.decision.verdict.value

    def as_dict(self, start: float) -> dict[str, Any]:
        d = self.decision
        return {
            "at": d.at,
            "offset": round(d.at - start, 3),
            "seq": self.seq,
            "event": d.event_tag,
            "rule": d.rule,
            "verdict": d.verdict.value,
            "reason": d.reason,
            "key": d.key,
            "actions": [describe(a) for a in d.actions],
            "real": None if self.real is None else vars(self.real),
            "differs": self.differs,
            "ended": self.ended,
        }


def describe(rendered: RenderedAction) -> str:
    """An action as one line: what it would have sent."""
    action = rendered.action
    if isinstance(action, RunAction):
        args = " ".join(json.dumps(a) for a in action.args)
        return f"run {action.function} on {action.target} ({action.tgt_type.value}) {args}".strip()
    if isinstance(action, OrchestrateAction):
        return f"orchestrate {action.runbook} vars={json.dumps(action.vars, sort_keys=True)}"
    if isinstance(action, FireAction):
        return f"fire {action.tag}"
    if isinstance(action, NotifyAction):
        return f"notify {action.target}: {action.message}"
    if isinstance(action, EscalateAction):
        return f"escalate: {action.reason}"
    states = ", ".join(action.states) or "highstate"
    return f"state {states} on {action.target} ({action.tgt_type.value})"


@dataclass
class _Recorded:
    """The real reactor's decisions and reaction ends, read from the recording."""

    #: (event id, rule, held) -> the real decision; a once_after rule decides twice on one
    #: event: skip ("pending: ...", held) when it comes, and on the timer when it is due
    decisions: dict[tuple[str, str, bool], Real] = field(default_factory=dict)
    #: reaction id -> (when it ended, whether it succeeded)
    ends: dict[str, tuple[float, bool]] = field(default_factory=dict)

    @classmethod
    def read(cls, events: Iterable[EventRecord]) -> "_Recorded":
        recorded = cls()
        for event in events:
            parts = event.tag.split("/")
            if len(parts) != 4 or parts[:2] != ["saline", "reactor"]:
                continue
            data = event.data
            if "verdict" in data and "event_id" in data:
                rid = data.get("reaction_id")
                real = Real(str(data["verdict"]), str(data.get("reason", "")), rid)
                held = real.reason.startswith(PENDING)
                recorded.decisions[(str(data["event_id"]), parts[2], held)] = real
            elif isinstance(data.get("reaction"), str) and "outcome" in data:
                recorded.ends[data["reaction"]] = (event.ts, data["outcome"] == "ok")
        return recorded


class Simulation:
    """One replay: ``rules`` over a view that starts as ``snapshot``; :meth:`run` replays."""

    def __init__(
        self,
        policy: Policy,
        snapshot: Snapshot | None = None,
        *,
        max_depth: int = 3,
        reaction_seconds: float = 30.0,
    ) -> None:
        snapshot = snapshot or Snapshot()
        self.policy = policy
        self.rules = policy.rules
        self.max_depth = max_depth
        self.reaction_seconds = reaction_seconds
        self.state = ReactorState.model_validate(snapshot.state or {})
        self.inventory = {m: dict(g) for m, g in snapshot.minions.items()}
        self.known_inventory = bool(snapshot.minions)
        self.online = None if snapshot.online is None else set(snapshot.online)
        self.observations = Observations()
        self.observations.by_minion = {m: dict(b) for m, b in snapshot.observations.items()}
        #: simulated reaction id -> (when it ends, ok, how that is known)
        self.ends: dict[str, tuple[float, bool, str]] = {}
        self.results: list[Simulated] = []
        self.fired: dict[str, Simulated] = {}
        self.start = self.clock = 0.0

    def view(self) -> StaticView:
        return StaticView(self.inventory, self.online, self.observations.by_minion)

    def run(self, events: list[EventRecord]) -> list[Simulated]:
        """Every decision the rules make on ``events`` (in seq order), in the order made."""
        recorded = _Recorded.read(events)
        if events:
            self.start = self.clock = events[0].ts
        for rid in self.state.in_flight:  # the snapshot's: they end when the recording says
            when, ok = recorded.ends.get(rid, (math.inf, True))
            self.ends[rid] = (when, ok, "")
        for record in events:
            self._advance(record.ts, recorded)
            self._observe(record)
            for rule in self.policy.index.matching(record.tag):
                [decision] = evaluate(
                    as_event(record),
                    [rule],
                    self.view(),
                    self.state,
                    record.ts,
                    max_chain_depth=self.max_depth,
                )
                self._decided(decision, record.seq, recorded)
        last = events[-1].ts if events else 0.0
        self._advance(last + HORIZON, recorded, settle=True)
        return self.results

    def _observe(self, record: EventRecord) -> None:
        self.observations.observe(record)
        if record.minion and not self.known_inventory:
            self.inventory.setdefault(record.minion, {})
        parts = record.tag.split("/")
        if self.online is not None and len(parts) == 4 and parts[:2] == ["saline", "minion"]:
            if parts[3] == "start":
                self.online.add(parts[2])
            elif parts[3] == "lost":
                self.online.discard(parts[2])

    def _decided(self, decision: Decision, seq: int | None, recorded: _Recorded) -> None:
        held = decision.reason.startswith(PENDING)
        real = recorded.decisions.get((decision.event_id, decision.rule, held))
        result = Simulated(decision, seq, real)
        self.results.append(result)
        if decision.verdict is not Verdict.FIRE or decision.reaction_id is None:
            return
        really_fired = real is not None and real.verdict == "fire"
        end = recorded.ends.get(real.reaction or "") if real is not None and really_fired else None
        if end is not None:
            self.ends[decision.reaction_id] = (end[0], end[1], "ok" if end[1] else "failed")
        elif really_fired:  # the real one was still running when the recording ended
            self.ends[decision.reaction_id] = (math.inf, True, "")
        else:
            self.ends[decision.reaction_id] = (decision.at + self.reaction_seconds, True, "")
        self.fired[decision.reaction_id] = result

    def _advance(self, to: float, recorded: _Recorded, settle: bool = False) -> None:
        """Move the clock to ``to``: reactions end and the timer ticks on the way. With
        ``settle``, stop once nothing is pending or in flight."""
        while True:
            tick = self._next_tick() if self.state.pending else None
            end = min((t for t, _, _ in self.ends.values()), default=None)
            upcoming = [t for t in (tick, end) if t is not None and t <= to]
            if not upcoming:
                break
            self.clock = max(self.clock, min(upcoming))
            for rid, (when, ok, how) in sorted(self.ends.items()):
                if when <= self.clock:
                    del self.ends[rid]
                    finish(self.state, rid, self.clock, ok)
                    if rid in self.fired:
                        self.fired[rid].ended = how or "assumed ok"
            if self.state.pending and tick is not None and self.clock >= tick:
                for decision in due(self.state, self.rules, self.view(), self.clock):
                    self._decided(decision, None, recorded)
            if settle and not self.state.pending and not self.ends:
                break
        if not settle:
            self.clock = max(self.clock, to)

    def _next_tick(self) -> float:
        """The timer's next tick after the clock: every TICK seconds from the first event."""
        return self.start + (math.floor((self.clock - self.start) / TICK) + 1) * TICK
