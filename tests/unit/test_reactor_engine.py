"""The pure engine: storms, provenance, the state's lifecycle, and helper entry points."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reactors.engine import approve, due, evaluate, finish, forget, reject
from reactors.model import Decision, Event, Verdict
from reactors.rules import FireAction, Rule, RunAction, load_rules
from reactors.state import ReactionNotFound, ReactorState
from reactors.view import StaticView

VIEW = StaticView(
    inventory={
        "be1": {"role": "backend"},
        "be2": {"role": "backend"},
        "be3": {"role": "backend"},
        "fe1": {"role": "frontend"},
    },
    observations={"be2": {"pg": {"lag": 900}}, "be3": {"pg": {"lag": 5}}},
)


def rules_from(tmp_path: Path, text: str) -> list[Rule]:
    (tmp_path / "rules.yaml").write_text(textwrap.dedent(text))
    return load_rules([tmp_path])


RESTART = """\
- name: restart-etcd
  on: chef/backend/*/etcd/down
  do:
    - run: {target: "{{ event.minion }}", function: service.start, args: [etcd]}
    - fire: {tag: "chef/backend/{{ event.minion }}/healing"}
"""


def stopped(minion: str = "be1", **data: object) -> Event:
    return Event(tag=f"chef/backend/{minion}/etcd/down", minion=minion, data=dict(data))


def verdicts(decisions: list[Decision]) -> list[str]:
    return [d.verdict.value for d in decisions]


def test_thousand_identical_events_in_ten_seconds_fire_once(tmp_path: Path) -> None:
    rules = rules_from(tmp_path, RESTART)
    state = ReactorState()
    seen: list[Decision] = []
    for i in range(1000):
        seen += evaluate(stopped(), rules, VIEW, state, now=i * 0.01)
    assert verdicts(seen).count("fire") == 1
    assert seen[0].verdict is Verdict.FIRE
    assert {d.reason for d in seen[1:]} == {
        f"duplicate in flight: reaction {seen[0].reaction_id} handles the same event"
    }
    assert len(state.in_flight) == 1


def test_thousand_events_with_once_after_fire_once_after_the_storm(tmp_path: Path) -> None:
    rules = rules_from(
        tmp_path, RESTART + "  throttle: {key: '{{ event.minion }}', once_after: 30s}\n"
    )
    state = ReactorState()
    fired: list[Decision] = []
    for i in range(1000):
        now = i * 0.01
        assert verdicts(evaluate(stopped(n=i), rules, VIEW, state, now)) == ["skip"]
        if i % 100 == 0:
            fired += due(state, rules, VIEW, now)
    for second in range(10, 60):
        fired += due(state, rules, VIEW, float(second))
    assert verdicts(fired) == ["fire"]
    assert fired[0].at == 40.0  # last event at 9.99s + 30s quiet
    run = fired[0].actions[0].action
    assert isinstance(run, RunAction) and run.target == "be1"


def test_a_grace_is_not_pushed_back_by_a_reasserted_fault(tmp_path: Path) -> None:
    """A beacon reasserts a bad state every 5 s: ``once_after: 30s`` never acts while the
    fault lasts; ``grace: 30s`` acts 30 s after the first event, on the latest one."""
    for mode, expected in (("once_after", []), ("grace", [30.0])):
        rules = rules_from(tmp_path, RESTART + f"  throttle: {{key: x, {mode}: 30s}}\n")
        state, fired = ReactorState(), []
        for tick in range(0, 61):
            now = float(tick)
            if tick % 5 == 0:
                (held,) = evaluate(stopped(n=tick), rules, VIEW, state, now)
                assert held.verdict is Verdict.SKIP and held.reason.startswith("pending: ")
            fired += due(state, rules, VIEW, now)
        assert [d.at for d in fired if d.verdict is Verdict.FIRE][:1] == expected, mode
    assert state.pending["restart-etcd"]["x"].first_seen == 35.0  # the next event's grace


def test_a_grace_lets_a_fault_that_cleared_be(tmp_path: Path) -> None:
    rules = rules_from(
        tmp_path,
        RESTART.replace("  do:", "  when: \"view.latest(event.minion, 'pg').lag > 100\"\n  do:")
        + "  throttle: {key: x, grace: 30s}\n",
    )
    state = ReactorState()
    (held,) = evaluate(stopped("be2"), rules, VIEW, state, 0.0)
    assert held.reason == "pending: acts in 30s if the condition still holds (1 so far)"
    healed = StaticView(inventory=VIEW.inventory, observations={"be2": {"pg": {"lag": 0}}})
    assert due(state, rules, healed, 29.0) == []
    assert [(d.verdict, d.reason) for d in due(state, rules, healed, 30.0)] == [
        (Verdict.SKIP, "condition false")
    ]


def test_a_held_reaction_refused_for_a_busy_group_waits_for_the_slot(tmp_path: Path) -> None:
    """Due while another reaction holds the group's one slot: told once, then held until the
    slot frees, not dropped (nothing would bring it back: the event may never come again)."""
    guarded = "  guard: {group: 'G@role:backend', max_concurrent: 1}\n"
    rules = rules_from(
        tmp_path,
        RESTART + guarded + RESTART.replace("restart-etcd", "held-one").replace("etcd/down", "x/y")
        + guarded + "  throttle: {key: k, grace: 5s}\n",
    )  # fmt: skip
    state = ReactorState()
    (busy,) = evaluate(stopped("be1"), rules, VIEW, state, 0.0)
    assert busy.verdict is Verdict.FIRE and busy.reaction_id is not None
    held = Event(tag="chef/backend/be2/x/y", minion="be2", data={})
    assert verdicts(evaluate(held, rules, VIEW, state, 1.0)) == ["skip"]
    [refused] = due(state, rules, VIEW, 6.0)
    assert refused.verdict is Verdict.SKIP and refused.reason.startswith("concurrency: 1 in flight")
    assert [due(state, rules, VIEW, t) for t in (7.0, 8.0, 30.0)] == [[], [], []]  # told once
    finish(state, busy.reaction_id, 31.0, ok=True)
    [fired] = due(state, rules, VIEW, 32.0)
    assert (fired.verdict, fired.rule) == (Verdict.FIRE, "held-one")
    assert state.pending == {}


def test_actions_carry_cause_depth_and_rule(tmp_path: Path) -> None:
    rules = rules_from(tmp_path, RESTART)
    event = stopped().model_copy(update={"depth": 2, "id": "ev-7"})
    (decision,) = evaluate(event, rules, VIEW, ReactorState(), now=0.0)
    assert [(a.cause, a.depth, a.rule) for a in decision.actions] == [
        ("ev-7", 3, "restart-etcd"),
        ("ev-7", 3, "restart-etcd"),
    ]
    assert isinstance(decision.actions[1].action, FireAction)


def test_max_chain_depth_is_a_parameter(tmp_path: Path) -> None:
    rules = rules_from(tmp_path, RESTART)
    event = stopped().model_copy(update={"depth": 2})
    (cut,) = evaluate(event, rules, VIEW, ReactorState(), 0.0, max_chain_depth=1)
    assert (cut.verdict, cut.reason) == (Verdict.ESCALATE, "chain depth 2 exceeds 1")
    (ok,) = evaluate(event, rules, VIEW, ReactorState(), 0.0, max_chain_depth=2)
    assert ok.verdict is Verdict.FIRE


def test_audit_event_is_loop_protected(tmp_path: Path) -> None:
    rules = rules_from(
        tmp_path,
        RESTART
        + "- name: on-escalation\n  on: saline/reactor/*/escalated\n"
        + "  do: [{fire: {tag: ops/page}}]\n",
    )
    state = ReactorState()
    deep = stopped().model_copy(update={"depth": 4, "id": "deep"})
    (decision,) = evaluate(deep, rules, VIEW, state, 0.0)
    audit = decision.audit_event()
    assert audit.tag == "saline/reactor/restart-etcd/escalated"
    assert (audit.depth, audit.cause, audit.rule) == (5, "deep", "restart-etcd")
    assert audit.data["reason"] == "chain depth 4 exceeds 3"
    # the paging rule sees the escalation but the chain is already too deep to act on it
    (page,) = evaluate(audit, rules, VIEW, state, 1.0)
    assert (page.rule, page.verdict) == ("on-escalation", Verdict.ESCALATE)


def test_skips_carry_no_reaction_id(tmp_path: Path) -> None:
    rules = rules_from(tmp_path, RESTART)
    state = ReactorState()
    first, second = (evaluate(stopped(n=n), rules, VIEW, state, float(n))[0] for n in (0, 1))
    assert first.reaction_id is not None and second.reaction_id is None
    assert second.reason == "cooldown: fired 1s ago, cooldown 1m"


def test_templated_target_of_a_masterless_event_escalates(tmp_path: Path) -> None:
    rules = rules_from(tmp_path, RESTART)
    event = Event(tag="chef/backend/x/etcd/down")
    (decision,) = evaluate(event, rules, VIEW, ReactorState(), 0.0)
    assert decision.verdict is Verdict.ESCALATE
    assert (
        decision.reason
        == "cannot build actions: do[0].run: target rendered to None, not minion id(s)"
    )


def test_literal_target_must_match_accepted_minions(tmp_path: Path) -> None:
    rules = rules_from(
        tmp_path,
        "- name: r\n  on: x\n  do: [{run: {target: 'G@role:db', tgt_type: compound,"
        " function: test.ping}}]\n",
    )
    (decision,) = evaluate(Event(tag="x"), rules, VIEW, ReactorState(), 0.0)
    assert decision.verdict is Verdict.ESCALATE
    assert (
        decision.reason
        == "cannot build actions: do[0].run: target 'G@role:db' matches no accepted minion"
    )


@pytest.mark.parametrize(
    ("target", "tgt_type", "touches"),
    [
        ("be*", "glob", ["be1", "be2", "be3"]),
        ("role:frontend", "grain", ["fe1"]),
        ("G@role:backend and not be2", "compound", ["be1", "be3"]),
        ("be3,be1", "list", ["be1", "be3"]),
    ],
)
def test_literal_targets_resolve_through_the_view(
    tmp_path: Path, target: str, tgt_type: str, touches: list[str]
) -> None:
    rules = rules_from(
        tmp_path,
        f"- name: r\n  on: x\n  do: [{{state: {{target: '{target}', tgt_type: {tgt_type}}}}}]\n",
    )
    (decision,) = evaluate(Event(tag="x"), rules, VIEW, ReactorState(), 0.0)
    assert (decision.verdict, decision.touches) == (Verdict.FIRE, touches)
    assert decision.actions[0].action.model_dump()["target"] == target  # passed on unchanged


def test_literal_list_target_refuses_unaccepted_ids(tmp_path: Path) -> None:
    rules = rules_from(
        tmp_path,
        "- name: r\n  on: x\n  do: [{run: {target: 'be1,ghost', tgt_type: list,"
        " function: test.ping}}]\n",
    )
    (decision,) = evaluate(Event(tag="x"), rules, VIEW, ReactorState(), 0.0)
    assert decision.reason == (
        "cannot build actions: do[0].run: target 'be1,ghost' names unaccepted minions ['ghost']"
    )


def test_rendered_values_are_validated_again(tmp_path: Path) -> None:
    rules = rules_from(
        tmp_path, "- name: r\n  on: x\n  do: [{fire: {tag: '{{ event.data.n }}'}}]\n"
    )
    (decision,) = evaluate(Event(tag="x", data={"n": 5}), rules, VIEW, ReactorState(), 0.0)
    assert decision.verdict is Verdict.ESCALATE
    assert decision.reason == (
        "cannot build actions: do[0].fire.tag: Input should be a valid string after rendering"
    )


def test_condition_may_query_the_view(tmp_path: Path) -> None:
    rules = rules_from(
        tmp_path,
        "- name: resync\n  on: chef/backend/*/pg/check\n"
        "  when: view.latest(event.minion, 'pg').lag > 600\n"
        "  do: [{run: {target: '{{ event.minion }}', function: pg.resync}}]\n",
    )
    state = ReactorState()
    lagging = Event(tag="chef/backend/be2/pg/check", minion="be2")
    fine = Event(tag="chef/backend/be3/pg/check", minion="be3")
    assert verdicts(evaluate(lagging, rules, VIEW, state, 0.0)) == ["fire"]
    assert [d.reason for d in evaluate(fine, rules, VIEW, state, 0.0)] == ["condition false"]


def test_throttle_key_render_failure_escalates(tmp_path: Path) -> None:
    rules = rules_from(tmp_path, RESTART + "  throttle: {key: '{{ event.data.name }}'}\n")
    (decision,) = evaluate(stopped(), rules, VIEW, ReactorState(), 0.0)
    assert decision.verdict is Verdict.ESCALATE
    assert decision.reason.startswith("cannot render throttle key: undefined")


def test_state_round_trips_through_json_mid_flight(tmp_path: Path) -> None:
    rules = rules_from(
        tmp_path,
        RESTART
        + "- name: approve-me\n  on: chef/backend/*/etcd/down\n  mode: approve\n"
        + "  do: [{run: {target: '{{ event.minion }}', function: test.ping}}]\n"
        + "- name: later\n  on: chef/backend/*/etcd/down\n"
        + "  throttle: {once_after: 10s}\n  do: [{fire: {tag: 'x/{{ event.data.v }}'}}]\n",
    )
    state = ReactorState()
    evaluate(stopped(v="{{ 1 }}"), rules, VIEW, state, 0.0)
    assert state.in_flight and state.awaiting and state.pending
    restored = ReactorState.model_validate_json(state.model_dump_json())
    assert restored == state
    (later,) = due(restored, rules, VIEW, 10.0)
    assert later.actions[0].action == FireAction(tag="x/{{ 1 }}")
    (held_id,) = restored.awaiting
    assert approve(restored, held_id, VIEW, 11.0).verdict is Verdict.FIRE


def test_finish_releases_the_slot_once(tmp_path: Path) -> None:
    rules = rules_from(tmp_path, RESTART + "  cooldown: 0\n")
    state = ReactorState()
    (first,) = evaluate(stopped(), rules, VIEW, state, 0.0)
    assert first.reaction_id is not None
    said = finish(state, first.reaction_id, 12.0, ok=False)
    assert said == f"reaction {first.reaction_id} of rule restart-etcd failed after 12s"
    assert state.in_flight == {}
    again = finish(state, first.reaction_id, 13.0, ok=True)
    assert again == f"reaction {first.reaction_id} is not in flight (already finished or unknown)"
    assert verdicts(evaluate(stopped(), rules, VIEW, state, 14.0)) == ["fire"]


def test_approve_and_reject_unknown_ids() -> None:
    state = ReactorState()
    with pytest.raises(ReactionNotFound):
        approve(state, "nope", VIEW, 0.0)
    assert reject(state, "nope") == "reaction nope is not awaiting approval"


def test_reject_drops_the_held_decision(tmp_path: Path) -> None:
    rules = rules_from(tmp_path, RESTART + "  mode: approve\n")
    state = ReactorState()
    (held,) = evaluate(stopped(), rules, VIEW, state, 0.0)
    assert held.verdict is Verdict.AWAIT_APPROVAL and held.reaction_id is not None
    assert (
        reject(state, held.reaction_id)
        == f"reaction {held.reaction_id} of rule restart-etcd rejected"
    )
    assert state.awaiting == {} and state.in_flight == {}


def test_approval_waits_while_paused(tmp_path: Path) -> None:
    rules = rules_from(tmp_path, RESTART + "  mode: approve\n")
    state = ReactorState()
    (held,) = evaluate(stopped(), rules, VIEW, state, 0.0)
    assert held.reaction_id is not None
    state.paused = True
    assert approve(state, held.reaction_id, VIEW, 1.0).reason == "approval held: paused"
    assert held.reaction_id in state.awaiting and not state.in_flight


def test_due_forgets_removed_rules_and_prunes_old_records(tmp_path: Path) -> None:
    rules = rules_from(
        tmp_path, RESTART + "  throttle: {key: '{{ event.minion }}', once_after: 5s}\n"
    )
    state = ReactorState()
    evaluate(stopped("be1"), rules, VIEW, state, 0.0)
    (fired,) = due(state, rules, VIEW, 5.0)
    assert fired.reaction_id is not None
    finish(state, fired.reaction_id, 6.0, ok=True)
    evaluate(stopped("be2"), rules, VIEW, state, 7.0)
    assert state.last_fired and state.firings and state.pending
    assert due(state, [], VIEW, 8.0) == []  # rules reloaded without it
    assert (state.pending, state.last_fired, state.firings) == ({}, {}, {})


def test_due_keeps_recent_records(tmp_path: Path) -> None:
    rules = rules_from(tmp_path, RESTART)
    state = ReactorState()
    evaluate(stopped(), rules, VIEW, state, 0.0)
    due(state, rules, VIEW, 59.0)
    assert state.last_fire("restart-etcd", "chef/backend/be1/etcd/down") == 0.0
    due(state, rules, VIEW, 601.0)  # past cooldown (60s) and flap window (10m)
    assert (state.last_fired, state.firings) == ({}, {})


def test_rules_that_do_not_match_the_tag_make_no_decision(tmp_path: Path) -> None:
    rules = rules_from(tmp_path, RESTART)
    assert evaluate(Event(tag="chef/backend/be1/etcd/up"), rules, VIEW, ReactorState(), 0.0) == []


def test_forget_lifts_cooldown_and_flap_history_of_one_key_only(tmp_path: Path) -> None:
    rules = rules_from(tmp_path, RESTART)
    state = ReactorState()
    for minion in ("be1", "be2"):
        (fired,) = evaluate(stopped(minion), rules, VIEW, state, 0.0)
        finish(state, str(fired.reaction_id), 1.0, ok=True)
    assert [d.reason for d in evaluate(stopped("be1"), rules, VIEW, state, 2.0)] == [
        "cooldown: fired 2s ago, cooldown 1m"
    ]
    assert forget(state, "restart-etcd", "chef/backend/be1/etcd/down") == 1
    assert verdicts(evaluate(stopped("be1"), rules, VIEW, state, 3.0)) == ["fire"]
    # the other key still remembers; an unknown rule forgets nothing
    assert verdicts(evaluate(stopped("be2"), rules, VIEW, state, 3.0)) == ["skip"]
    assert forget(state, "no-such-rule") == 0
    assert len(state.in_flight) == 1, "a reaction in flight keeps its slot"
    assert forget(state) == 2 and state.last_fired == {} and state.firings == {}
