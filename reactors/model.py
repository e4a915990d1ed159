"""The reactor's data: events in, decisions out.

Loop protection rides on every event: ``depth`` (0 for beacon, minion and operator events),
``cause`` (the id of the event whose reaction produced it) and ``rule`` (the rule whose action
produced it). Actions of a decision carry ``cause=event.id``, ``depth=event.depth + 1`` and
``rule=rule.name``; the master stamps them on whatever the action emits. Like ``minion``, these
three are set by the master, never taken from a minion's payload: a minion claiming
``rule: X`` would otherwise make rule X ignore it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from reactors.rules import Action

__all__ = ["Decision", "Event", "RenderedAction", "Verdict"]


class Verdict(StrEnum):
    """What the engine decided for one (event, rule) pair."""

    FIRE = "fire"  #: dispatch the actions now
    SKIP = "skip"  #: do nothing; the reason says why
    ESCALATE = "escalate"  #: do nothing and tell a human (loop, flapping, unbuildable action)
    DRY_RUN = "dry_run"  #: would fire; the actions are the unapplied plan
    AWAIT_APPROVAL = "await_approval"  #: would fire once an operator approves
    #: deciding raised (a bug in a rule, a guard or a template); nothing ran, the error is kept
    FAILED = "failed"


#: suffix of the ``saline/reactor/RULE/...`` audit event for each verdict
AUDIT_SUFFIX: Final = {
    Verdict.FIRE: "fired",
    Verdict.SKIP: "skipped",
    Verdict.ESCALATE: "escalated",
    Verdict.DRY_RUN: "dry_run",
    Verdict.AWAIT_APPROVAL: "awaiting_approval",
    Verdict.FAILED: "failed",
}


class Event(BaseModel):
    """An event as the reactor sees it; ``minion`` is the authenticated sender (or None)."""

    model_config = ConfigDict(frozen=True)

    #: unique id, the ``cause`` of anything a reaction to this event produces
    id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1)
    tag: str
    data: dict[str, Any] = {}
    minion: str | None = None
    ts: float = 0.0
    #: 0 for beacon, minion and operator events; cause's depth + 1 for reaction output
    depth: int = Field(default=0, ge=0)
    cause: str | None = None
    #: name of the rule whose action caused this event, or None
    rule: str | None = None

    def digest(self) -> str:
        """Hash of tag and data: identical events (whatever their id) share it."""
        canonical = json.dumps([self.tag, self.data], sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def context(self) -> dict[str, Any]:
        """What expressions see as ``event`` (a fresh dict: templates get values, not the model)."""
        return self.model_dump(mode="json")


class RenderedAction(BaseModel):
    """One action with its templates rendered, and the provenance its output must carry."""

    model_config = ConfigDict(frozen=True)

    action: Action
    #: id of the event that caused this reaction
    cause: str
    #: depth for events this action produces (event depth + 1)
    depth: int
    #: the rule that produced it
    rule: str


class Decision(BaseModel):
    """The engine's answer for one rule whose tag glob matched one event.

    ``reason`` is a sentence for the audit trail. ``reaction_id`` is set for fire, dry_run and
    await_approval; ``actions`` are present whenever they were rendered (also when a guard then
    skipped them: the audit shows what would have run). ``touches`` are the minion ids the
    actions target.
    """

    verdict: Verdict
    reason: str
    rule: str
    event_id: str
    event_tag: str
    event_depth: int = 0
    #: the engine clock when decided
    at: float
    key: str | None = None
    group: str | None = None
    disruptive: bool = False
    reaction_id: str | None = None
    actions: list[RenderedAction] = []
    touches: list[str] = []

    def audit_event(self) -> Event:
        """The ``saline/reactor/RULE/fired|skipped|escalated|...`` event recording this decision.

        It carries this rule as its ``rule`` and ``depth + 1``, so reacting to audit events is
        subject to the same loop protection as any other reaction output.
        """
        return Event(
            tag=f"saline/reactor/{self.rule}/{AUDIT_SUFFIX[self.verdict]}",
            data=self.model_dump(mode="json", exclude={"actions"}),
            ts=self.at,
            depth=self.event_depth + 1,
            cause=self.event_id,
            rule=self.rule,
        )
