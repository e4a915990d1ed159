"""Guards: one named check per way a reaction can be unsafe or unwanted.

Each check is pure with respect to the state (it only reads) and returns None to let the
reaction through or a sentence saying why not; the engine turns that sentence into the
decision's reason and does all recording.
"""

from __future__ import annotations

from collections.abc import Sequence

from reactors.model import Event
from reactors.rules import Rule
from reactors.state import ReactorState
from reactors.view import ClusterView
from saline.durations import format_duration

__all__ = [
    "chain_too_deep",
    "cooling_down",
    "duplicate_in_flight",
    "flap_suppressed",
    "flapping",
    "over_concurrency",
    "own_event",
    "paused",
    "quorum",
    "throttled",
]


def paused(state: ReactorState) -> str | None:
    """The operator paused the reactor."""
    return "paused" if state.paused else None


def own_event(rule: Rule, event: Event) -> str | None:
    """``ignore_own``: the event was produced by this rule's own action."""
    if rule.ignore_own and event.rule == rule.name:
        return f"own event: caused by an action of rule {rule.name} (ignore_own)"
    return None


def chain_too_deep(event: Event, max_chain_depth: int) -> str | None:
    """The event is too many reactions away from a real observation: a likely loop."""
    if event.depth > max_chain_depth:
        return f"chain depth {event.depth} exceeds {max_chain_depth}"
    return None


def flap_suppressed(state: ReactorState, rule: Rule, key: str, now: float) -> str | None:
    """The key was escalated as flapping and its flap window has not passed yet."""
    since = state.escalated.get(rule.name, {}).get(key)
    if since is None or rule.flap is None or now - since >= rule.flap.window:
        return None
    return (
        f"flapping: escalated {format_duration(now - since)} ago, not acting on key {key!r} "
        f"until the {format_duration(rule.flap.window)} window passes"
    )


def duplicate_in_flight(state: ReactorState, rule: Rule, key: str, digest: str) -> str | None:
    """An identical event (same tag and data) for this rule and key is already being handled."""
    for rid, reaction in state.in_flight.items():
        if reaction.rule == rule.name and reaction.key == key and reaction.digest == digest:
            return f"duplicate in flight: reaction {rid} handles the same event"
    return None


def throttled(state: ReactorState, rule: Rule, key: str, now: float) -> str | None:
    """``throttle.once_within``: fired for this key less than the window ago."""
    if rule.throttle is None or rule.throttle.once_within is None:
        return None
    last = state.last_fire(rule.name, key)
    if last is None or now - last >= rule.throttle.once_within:
        return None
    return (
        f"throttled: fired {format_duration(now - last)} ago, "
        f"once_within {format_duration(rule.throttle.once_within)}"
    )


def cooling_down(state: ReactorState, rule: Rule, key: str, now: float) -> str | None:
    """The rule's per-key cooldown (default 60s) has not passed since its last firing."""
    last = state.last_fire(rule.name, key)
    if last is None or now - last >= rule.cooldown:
        return None
    return (
        f"cooldown: fired {format_duration(now - last)} ago, "
        f"cooldown {format_duration(rule.cooldown)}"
    )


def flapping(state: ReactorState, rule: Rule, key: str, now: float) -> str | None:
    """Firing again would exceed ``flap.max`` firings for this key within ``flap.window``."""
    if rule.flap is None:
        return None
    recent = state.recent_firings(rule.name, key, now - rule.flap.window)
    if len(recent) < rule.flap.max:
        return None
    return (
        f"flapping: {len(recent)} firings for key {key!r} within "
        f"{format_duration(rule.flap.window)} already (max {rule.flap.max}); "
        "stopped acting, escalating"
    )


def over_concurrency(state: ReactorState, group: str | None, max_concurrent: int) -> str | None:
    """As many reactions as ``max_concurrent`` are in flight for rules guarding ``group``."""
    if group is None:
        return None
    running = len(state.in_flight_in(group))
    if running < max_concurrent:
        return None
    return f"concurrency: {running} in flight for {group}, max_concurrent {max_concurrent}"


def quorum(
    state: ReactorState, group: str, view: ClusterView, touches: Sequence[str]
) -> str | None:
    """The quorum guard for disruptive reactions on ``group``.

    Refuses when another disruptive reaction is in flight in the group, or when acting would
    leave fewer than a majority (n // 2 + 1) of the group's members healthy, healthy meaning
    online and not being disrupted by an in-flight reaction. Touching a member that is already
    unhealthy costs nothing (repairing the broken node is the point); when the actions name no
    member of the group (an orchestration, say), acting is assumed to cost one healthy member.
    """
    disrupted: set[str] = set()
    for rid, reaction in state.in_flight.items():
        if not reaction.disruptive:
            continue
        if reaction.group == group:
            return f"quorum: disruptive reaction {rid} ({reaction.rule}) in flight for {group}"
        disrupted.update(reaction.touches)  # overlapping groups: count their members out too
    members = view.members(group)
    need = len(members) // 2 + 1
    healthy = {m for m in members if view.online(m) and m not in disrupted}
    targeted = set(touches) & set(members)
    lost = len(targeted & healthy) if targeted else 1
    left = max(len(healthy) - lost, 0)
    if left >= need:
        return None
    return (
        f"quorum: {len(healthy)} of {len(members)} {group} members healthy, "
        f"acting would leave {left} < {need}"
    )
