"""The pure rule engine: events and cluster view in, decisions out; actions run elsewhere.

Contract: nothing here does I/O, sleeps or reads a clock; time is the ``now`` argument. The one
side effect is on the :class:`ReactorState` passed in (throttles, in-flight slots, flap history,
pending and awaiting reactions), which the caller persists after each call.

Order of checks for one (event, rule) whose tag glob matched, each a named method returning a
decision or None: paused, own event, chain depth, condition, key, flap suppression, duplicate
in flight, then either once_after / grace (defer to :func:`due`) or once_within and cooldown; then
building the actions (render, validate targets), concurrency, quorum, flap count, and the mode.
"""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from reactors import guards
from reactors.checks import CheckNamespace
from reactors.expressions import (
    ExpressionError,
    evaluate_condition,
    is_template,
    render_text,
    render_value,
)
from reactors.model import Decision, Event, RenderedAction, Verdict
from reactors.rules import (
    COMPOUND_FORM,
    Action,
    EscalateAction,
    Rule,
    RunAction,
    StateAction,
    Throttle,
)
from reactors.state import Awaiting, InFlight, Pending, ReactionNotFound, ReactorState
from reactors.view import ClusterView, ViewProxy
from saline.durations import format_duration
from saline.errors import SalineError, TargetError
from saline.targeting import TargetType

__all__ = ["approve", "due", "evaluate", "finish", "forget", "reject"]


class _BuildError(Exception):
    """An action could not be built for this event (escalated, never raised out)."""


class _Reaction:
    """One rule considered for one event; each method is one step of the decision."""

    def __init__(
        self, rule: Rule, event: Event, view: ClusterView, state: ReactorState, now: float
    ) -> None:
        self.rule, self.event, self.view, self.state, self.now = rule, event, view, state, now
        self.key = event.tag
        self.context: dict[str, Any] = {
            "event": event.context(),
            "view": ViewProxy(view),
            "check": CheckNamespace(view),
        }
        self.actions: list[RenderedAction] = []
        self.touches: list[str] = []
        #: refused only because another reaction holds its group's slot (it will end)
        self.busy = False

    def decision(self, verdict: Verdict, reason: str, reaction_id: str | None = None) -> Decision:
        return Decision(
            verdict=verdict,
            reason=reason,
            rule=self.rule.name,
            event_id=self.event.id,
            event_tag=self.event.tag,
            event_depth=self.event.depth,
            at=self.now,
            key=self.key,
            group=self.rule.guard.group if self.rule.guard else None,
            disruptive=self.rule.disruptive,
            reaction_id=reaction_id,
            actions=self.actions,
            touches=self.touches,
        )

    @staticmethod
    def first(*steps: Callable[[], Decision | None]) -> Decision | None:
        for step in steps:
            decided = step()
            if decided is not None:
                return decided
        return None

    # --- steps on arrival of the event ---------------------------------------------------------

    def on_event(self, max_chain_depth: int) -> Decision:
        decided = self.first(
            self.check_paused,
            self.check_own_event,
            lambda: self.check_chain_depth(max_chain_depth),
            self.check_condition,
            self.compute_key,
            self.check_flap_suppressed,
            self.check_duplicate,
        )
        if decided is not None:
            return decided
        if self.rule.throttle is not None and self.rule.throttle.deferred is not None:
            return self.defer(self.rule.throttle)
        return self.first(self.check_throttle, self.check_cooldown) or self.act()

    def check_paused(self) -> Decision | None:
        reason = guards.paused(self.state)
        return self.decision(Verdict.SKIP, reason) if reason else None

    def check_own_event(self) -> Decision | None:
        reason = guards.own_event(self.rule, self.event)
        return self.decision(Verdict.SKIP, reason) if reason else None

    def check_chain_depth(self, max_chain_depth: int) -> Decision | None:
        reason = guards.chain_too_deep(self.event, max_chain_depth)
        return self.decision(Verdict.ESCALATE, reason) if reason else None

    def check_condition(self) -> Decision | None:
        if self.rule.when is None:
            return None
        try:
            met = evaluate_condition(self.rule.when, self.context)
        except ExpressionError as e:
            return self.decision(Verdict.SKIP, f"condition error: {e}")
        return None if met else self.decision(Verdict.SKIP, "condition false")

    def compute_key(self) -> Decision | None:
        template = self.rule.throttle.key if self.rule.throttle else None
        if template is None:
            return None  # default key: the event tag
        try:
            self.key = render_text(template, self.context)
        except ExpressionError as e:
            return self.decision(Verdict.ESCALATE, f"cannot render throttle key: {e}")
        return None

    def check_flap_suppressed(self) -> Decision | None:
        reason = guards.flap_suppressed(self.state, self.rule, self.key, self.now)
        return self.decision(Verdict.SKIP, reason) if reason else None

    def check_duplicate(self) -> Decision | None:
        reason = guards.duplicate_in_flight(self.state, self.rule, self.key, self.event.digest())
        return self.decision(Verdict.SKIP, reason) if reason else None

    def check_throttle(self) -> Decision | None:
        reason = guards.throttled(self.state, self.rule, self.key, self.now)
        return self.decision(Verdict.SKIP, reason) if reason else None

    def check_cooldown(self) -> Decision | None:
        reason = guards.cooling_down(self.state, self.rule, self.key, self.now)
        return self.decision(Verdict.SKIP, reason) if reason else None

    def defer(self, throttle: Throttle) -> Decision:
        """once_after / grace: remember the latest event; :func:`due` acts when it ends."""
        keyed = self.state.pending.setdefault(self.rule.name, {})
        held = keyed.get(self.key)
        if held is None:
            held = Pending(event=self.event, first_seen=self.now, last_seen=self.now)
        else:
            held = held.model_copy(
                update={"event": self.event, "last_seen": self.now, "count": held.count + 1}
            )
        keyed[self.key] = held
        if throttle.grace is not None:
            left = held.first_seen + throttle.grace - self.now
            said = f"acts in {format_duration(max(left, 0.0))} if the condition still holds"
        else:
            quiet = format_duration(throttle.once_after or 0.0)
            said = f"acts once no matching event came for {quiet}"
        return self.decision(Verdict.SKIP, f"pending: {said} ({held.count} so far)")

    # --- steps before acting (shared by evaluate and due) --------------------------------------

    def act(self) -> Decision:
        if self.rule.escalates:  # tells a human, touches nothing: no slot, no quorum to keep
            return self.first(self.build_actions) or self.escalate()
        group = self.rule.guard.group if self.rule.guard else None
        limit = self.rule.guard.max_concurrent if self.rule.guard else 1
        return (
            self.first(
                self.build_actions,
                lambda: self.check_concurrency(group, limit),
                self.check_quorum,
                self.check_flapping,
            )
            or self.commit()
        )

    def build_actions(self) -> Decision | None:
        try:
            for index, action in enumerate(self.rule.do):
                self.actions.append(self.render(index, action))
        except _BuildError as e:
            return self.decision(Verdict.ESCALATE, f"cannot build actions: {e}")
        return None

    def render(self, index: int, action: Action) -> RenderedAction:
        where = f"do[{index}].{action.kind}"
        raw = action.model_dump(mode="json")
        try:
            values = render_value(raw, self.context, where)
            if isinstance(action, RunAction | StateAction):
                values.update(self.resolve_target(action, values["target"]))
            built: Action = type(action).model_validate(values)
        except (ExpressionError, TargetError) as e:
            raise _BuildError(f"{where}: {e}") from e
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(map(str, err["loc"]))
            raise _BuildError(f"{where}.{field}: {err['msg']} after rendering") from e
        return RenderedAction(
            action=built, cause=self.event.id, depth=self.event.depth + 1, rule=self.rule.name
        )

    def resolve_target(self, action: RunAction | StateAction, rendered: Any) -> dict[str, str]:
        """Check the target hits only accepted minions; templated targets become literal ids."""
        accepted = self.view.accepted()
        if is_template(action.target):
            # Rendered from event data: a literal id (or list of ids), never a pattern, so
            # "be1 or *" or "be1,be2" in event data cannot widen the match.
            ids = [rendered] if isinstance(rendered, str) else rendered
            if not isinstance(ids, list) or not ids:
                raise TargetError(f"target rendered to {rendered!r}, not minion id(s)")
            for mid in ids:
                if not isinstance(mid, str) or mid not in accepted or "," in mid:
                    raise TargetError(f"target {mid!r} is not an accepted minion id")
            matched = list(dict.fromkeys(ids))
            result = {"target": ",".join(matched), "tgt_type": TargetType.LIST.value}
        else:
            if action.tgt_type is TargetType.LIST:
                matched = [i.strip() for i in action.target.split(",") if i.strip()]
            else:
                matched = self.view.members(COMPOUND_FORM[action.tgt_type](action.target))
            stray = sorted(set(matched) - accepted)
            if stray:
                raise TargetError(f"target {action.target!r} names unaccepted minions {stray}")
            result = {}
        if not matched:
            raise TargetError(f"target {action.target!r} matches no accepted minion")
        self.touches = sorted(set(self.touches) | set(matched))
        return result

    def check_concurrency(self, group: str | None, limit: int) -> Decision | None:
        reason = guards.over_concurrency(self.state, group, limit)
        self.busy = reason is not None
        return self.decision(Verdict.SKIP, reason) if reason else None

    def check_quorum(self) -> Decision | None:
        if not self.rule.disruptive or self.rule.guard is None:
            return None
        try:
            reason = guards.quorum(self.state, self.rule.guard.group, self.view, self.touches)
        except SalineError as e:
            return self.decision(Verdict.ESCALATE, f"quorum: cannot read group: {e}")
        # a disruptive reaction in flight ends; too few healthy members is no wait
        self.busy = reason is not None and reason.startswith("quorum: disruptive reaction")
        return self.decision(Verdict.SKIP, reason) if reason else None

    def check_flapping(self) -> Decision | None:
        reason = guards.flapping(self.state, self.rule, self.key, self.now)
        if reason is None:
            return None
        self.state.escalated.setdefault(self.rule.name, {})[self.key] = self.now
        return self.decision(Verdict.ESCALATE, reason)

    def escalate(self) -> Decision:
        """An escalate rule's answer: recorded as a firing (its throttle and cooldown hold
        it back next time), decided as ``escalate`` with the rule's rendered reason."""
        window = self.rule.flap.window if self.rule.flap else None
        self.state.record_firing(self.rule.name, self.key, self.now, window)
        reasons = [a.action.reason for a in self.actions if isinstance(a.action, EscalateAction)]
        if self.rule.mode == "dry_run":
            said = f"dry run: would escalate: {'; '.join(reasons)}"
            return self.decision(Verdict.DRY_RUN, said, uuid.uuid4().hex)
        return self.decision(Verdict.ESCALATE, f"escalated by the rule: {'; '.join(reasons)}")

    def commit(self) -> Decision:
        """Every guard passed: record the firing and answer according to the rule's mode."""
        rid = uuid.uuid4().hex
        window = self.rule.flap.window if self.rule.flap else None
        self.state.record_firing(self.rule.name, self.key, self.now, window)
        where = ", ".join(self.touches) or "the master"
        plan = f"{len(self.actions)} action(s) on {where}"
        if self.rule.mode == "dry_run":
            return self.decision(Verdict.DRY_RUN, f"dry run: would run {plan}", rid)
        if self.rule.mode == "approve":
            held = self.decision(Verdict.AWAIT_APPROVAL, f"awaiting approval to run {plan}", rid)
            limit = self.rule.guard.max_concurrent if self.rule.guard else None
            self.state.awaiting[rid] = Awaiting(
                decision=held, max_concurrent=limit, digest=self.event.digest()
            )
            return held
        fired = self.decision(Verdict.FIRE, f"fired: {plan}", rid)
        self.state.in_flight[rid] = _in_flight(fired, self.event.digest())
        return fired


def _in_flight(decision: Decision, digest: str) -> InFlight:
    return InFlight(
        rule=decision.rule,
        key=decision.key or "",
        group=decision.group,
        touches=decision.touches,
        disruptive=decision.disruptive,
        started=decision.at,
        digest=digest,
    )


def evaluate(
    event: Event,
    rules: Sequence[Rule],
    view: ClusterView,
    state: ReactorState,
    now: float,
    *,
    max_chain_depth: int = 3,
) -> list[Decision]:
    """Decide what each rule whose ``on`` glob matches ``event.tag`` does about ``event``.

    :returns: one decision per matching rule, in rule order (none for non-matching rules).
    Mutates ``state`` (the only side effect): firings, in-flight and pending reactions.
    """
    return [
        _Reaction(rule, event, view, state, now).on_event(max_chain_depth)
        for rule in rules
        if fnmatch.fnmatchcase(event.tag, rule.on)
    ]


def _held_until(rule: Rule, held: Pending) -> float:
    """When a held reaction is ready: ``grace`` after its first event, ``once_after`` after
    its latest."""
    throttle = rule.throttle
    if throttle is not None and throttle.grace is not None:
        return held.first_seen + throttle.grace
    quiet = throttle.once_after if throttle is not None else None
    return held.last_seen + (quiet or 0.0)


def due(
    state: ReactorState, rules: Sequence[Rule], view: ClusterView, now: float
) -> list[Decision]:
    """Act on ``once_after`` / ``grace`` reactions whose quiet period or grace (and cooldown)
    has passed.

    The master calls this on a timer. Each ready pending reaction is decided with its latest
    event through the same guards as :func:`evaluate` (paused, the condition again, against
    the view as it is now, flapping, duplicate, targets, concurrency, quorum, flap count,
    mode) and then forgotten, unless it was refused only because another reaction holds its
    group's slot: that refusal is told once and it stays held, looked at again on every call
    until the slot frees (a held split brain must not be lost to a heal in flight). Also
    drops throttle and flap
    records old enough to no longer matter, so the state stays bounded.
    """
    by_name = {rule.name: rule for rule in rules}
    decisions: list[Decision] = []
    for name in sorted(state.pending):
        keyed = state.pending[name]
        rule = by_name.get(name)
        for key in sorted(keyed):
            held = keyed[key]
            if rule is None:
                del keyed[key]  # rule removed by a reload: nothing left to act for
                continue
            last = state.last_fire(name, key)
            ready = max(_held_until(rule, held), (last or -rule.cooldown) + rule.cooldown)
            if now < ready:
                continue
            del keyed[key]
            reaction = _Reaction(rule, held.event, view, state, now)
            reaction.key = key
            decided = (
                reaction.first(
                    reaction.check_paused,
                    reaction.check_condition,  # against the view now: a fault gone by is let be
                    reaction.check_flap_suppressed,
                    reaction.check_duplicate,
                )
                or reaction.act()
            )
            if reaction.busy:  # another reaction holds the group: wait for it, told once
                keyed[key] = held.model_copy(update={"waiting": True})
                if held.waiting:
                    continue
            decisions.append(decided)
        if not keyed:
            del state.pending[name]
    _prune(state, by_name, now)
    return decisions


def _prune(state: ReactorState, rules: dict[str, Rule], now: float) -> None:
    for name in list(state.last_fired):
        rule = rules.get(name)
        keep = 0.0 if rule is None else max(rule.cooldown, _within(rule))
        fresh = {k: t for k, t in state.last_fired[name].items() if now - t < keep}
        _store(state.last_fired, name, fresh)
    for name in list(state.firings):
        rule = rules.get(name)
        window = rule.flap.window if rule and rule.flap else 0.0
        kept = {k: [t for t in ts if now - t < window] for k, ts in state.firings[name].items()}
        _store(state.firings, name, {k: ts for k, ts in kept.items() if ts})
    for name in list(state.escalated):
        rule = rules.get(name)
        window = rule.flap.window if rule and rule.flap else 0.0
        esc = {k: t for k, t in state.escalated[name].items() if now - t < window}
        _store(state.escalated, name, esc)


def _within(rule: Rule) -> float:
    return (rule.throttle.once_within or 0.0) if rule.throttle else 0.0


def _store(table: dict[str, Any], name: str, value: dict[str, Any]) -> None:
    if value:
        table[name] = value
    else:
        del table[name]


def finish(state: ReactorState, reaction_id: str, now: float, ok: bool) -> str:
    """Release the in-flight slot of a reaction whose actions completed (or failed).

    :returns: a sentence for the audit trail; unknown ids are reported, not raised (a return
        can arrive twice after a master restart).
    """
    reaction = state.in_flight.pop(reaction_id, None)
    if reaction is None:
        return f"reaction {reaction_id} is not in flight (already finished or unknown)"
    outcome = "succeeded" if ok else "failed"
    took = format_duration(max(now - reaction.started, 0.0))
    return f"reaction {reaction_id} of rule {reaction.rule} {outcome} after {took}"


def approve(state: ReactorState, reaction_id: str, view: ClusterView, now: float) -> Decision:
    """Approve a decision held in ``approve`` mode and, if still safe, fire it.

    Concurrency and quorum are checked again against the current view, since the cluster may
    have changed while the decision waited. If they refuse, the decision stays awaiting and a
    skip decision says why; otherwise it moves in flight and a fire decision is returned.

    :raises ReactionNotFound: if no decision with that id is awaiting approval.
    """
    held = state.awaiting.get(reaction_id)
    if held is None:
        raise ReactionNotFound(f"no reaction {reaction_id} is awaiting approval")
    decision = held.decision
    reason = guards.paused(state) or guards.over_concurrency(
        state, decision.group, held.max_concurrent or 1
    )
    if reason is None and decision.disruptive and decision.group is not None:
        reason = guards.quorum(state, decision.group, view, decision.touches)
    if reason is not None:
        return decision.model_copy(
            update={"verdict": Verdict.SKIP, "reason": f"approval held: {reason}", "at": now}
        )
    del state.awaiting[reaction_id]
    fired = decision.model_copy(
        update={"verdict": Verdict.FIRE, "reason": "approved: fired", "at": now}
    )
    state.in_flight[reaction_id] = _in_flight(fired, held.digest)
    return fired


def reject(state: ReactorState, reaction_id: str) -> str:
    """Drop a decision awaiting approval; returns a sentence for the audit trail."""
    held = state.awaiting.pop(reaction_id, None)
    if held is None:
        return f"reaction {reaction_id} is not awaiting approval"
    return f"reaction {reaction_id} of rule {held.decision.rule} rejected"


def forget(state: ReactorState, rule: str | None = None, key: str | None = None) -> int:
    """Forget throttles, cooldowns and flap history of ``rule``/``key`` (None: every one).

    For the operator who fixed a node by hand and wants the next fault answered at once, and
    for a flapping key lifted out of suppression. Reactions in flight, pending or awaiting
    approval are kept: their guards still hold. :returns: how many (rule, key) were forgotten.
    """
    forgotten: set[tuple[str, str]] = set()
    for table in (state.last_fired, state.firings, state.escalated):
        for name in [n for n in table if rule is None or n == rule]:
            keys = table[name]
            for k in [k for k in keys if key is None or k == key]:
                del keys[k]
                forgotten.add((name, k))
            if not keys:
                del table[name]
    return len(forgotten)
