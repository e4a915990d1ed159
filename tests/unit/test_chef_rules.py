"""saline's shipped Chef HA rules (reactors/rules/chef_ha.yaml) through the real rule engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reactors.engine import due, evaluate, finish
from reactors.model import Decision, Event, Verdict
from reactors.rules import OrchestrateAction, Rule, RunAction, load_rules
from reactors.runbook import find_runbook, load_runbook, render_steps
from reactors.shipped import SHIPPED_RULES, SHIPPED_RUNBOOKS
from reactors.state import ReactorState
from reactors.view import StaticView

RULES = load_rules([SHIPPED_RULES])
INVENTORY: dict[str, dict[str, Any]] = {
    "be1": {"role": "backend"},
    "be2": {"role": "backend"},
    "be3": {"role": "backend"},
    "fe1": {"role": "frontend"},
    "fe2": {"role": "frontend"},
}


def view(**observations: dict[str, dict[str, Any]]) -> StaticView:
    base: dict[str, dict[str, dict[str, Any]]] = {
        "be1": {"pg_replication": {"role": "leader", "state": "leader", "node": "127.0.1.1:5432"}},
        "be2": {"pg_replication": {"role": "follower", "state": "in_sync"}},
        "be3": {"pg_replication": {"role": "follower", "state": "in_sync"}},
    }
    for minion, by_beacon in observations.items():
        base.setdefault(minion, {}).update(by_beacon)
    return StaticView(INVENTORY, observations=base)


def rule(name: str) -> list[Rule]:
    return [r for r in RULES if r.name == name]


def out_of_sync(minion: str) -> Event:
    return Event(
        tag=f"saline/beacon/{minion}/pg_replication/out_of_sync",
        minion=minion,
        data={"role": "follower", "node": f"127.0.1.{minion[-1]}:5432", "state": "out_of_sync"},
    )


def only(decisions: list[Decision]) -> Decision:
    assert len(decisions) == 1, decisions
    return decisions[0]


def test_every_rule_names_a_shipped_runbook_that_renders() -> None:
    for r in RULES:
        for action in r.do:
            if isinstance(action, OrchestrateAction):
                runbook = load_runbook(find_runbook(action.runbook, [SHIPPED_RUNBOOKS]))
                example = {k: v or "be2" for k, v in runbook.vars.items()}
                example |= {"drifted": ["fe2"], "major": 3, "minor": 13}
                example |= {"a": "be1", "b": "be2", "a_node": "h1:5432", "b_node": "h2:5432"}
                assert render_steps(runbook, example)


def test_follower_out_of_sync_starts_the_ladder_against_the_leader() -> None:
    decision = only(
        evaluate(
            out_of_sync("be2"), rule("chef-pg-follower-out-of-sync"), view(), ReactorState(), 0
        )
    )
    assert decision.verdict is Verdict.FIRE, decision.reason
    action = decision.actions[0].action
    assert isinstance(action, OrchestrateAction)
    assert action.runbook == "chef/heal_follower"
    assert action.vars == {
        "node": "be2",
        "host": "127.0.1.2",
        "port": "5432",
        "leader": "be1",
        "leader_host": "127.0.1.1",
        "leader_port": "5432",
        "max_reply_age": 30,  # the event names no limits: the beacon's default
        "down": False,
        "paused": False,
    }
    judged = out_of_sync("be2")
    judged.data["limits"] = {"lag_bytes": 1024, "max_lag_seconds": 30, "max_reply_age": 4}
    [fired] = evaluate(judged, rule("chef-pg-follower-out-of-sync"), view(), ReactorState(), 0)
    ladder = fired.actions[0].action
    assert isinstance(ladder, OrchestrateAction)
    assert ladder.vars["max_reply_age"] == 4  # the ladder's probes judge as the beacon did


def test_no_known_leader_escalates_instead_of_guessing() -> None:
    no_leader = view(be1={"pg_replication": {"state": "down"}})
    decision = only(
        evaluate(
            out_of_sync("be2"), rule("chef-pg-follower-out-of-sync"), no_leader, ReactorState(), 0
        )
    )
    assert decision.verdict is Verdict.ESCALATE
    assert "cannot build actions" in decision.reason
    assert "no backend reports the PostgreSQL leader role" in decision.reason


@pytest.mark.parametrize("reported", [{"state": "down"}, {}], ids=["leader down", "unknown"])
def test_a_follower_out_of_sync_while_none_leads_is_told_after_the_grace(
    reported: dict[str, Any],
) -> None:
    """No backend leads now (a failover, or no leader reported): 30 s after a follower's
    event, if still none leads, a human is told."""
    no_leader = view(be1={"pg_replication": reported})
    rules = rule("chef-pg-no-leader")
    state = ReactorState()
    [held] = evaluate(out_of_sync("be2"), rules, no_leader, state, 0)
    assert held.reason.startswith("pending: acts in 30s if the condition still holds")
    [late] = due(state, rules, no_leader, 31.0)
    assert late.verdict is Verdict.ESCALATE and late.rule == "chef-pg-no-leader"
    assert "no PostgreSQL leader for 30s (be2, last seen as follower, is out_of_sync)" in (
        late.reason
    )


def test_a_leader_elected_meanwhile_clears_the_no_leader_grace() -> None:
    no_leader = view(be1={"pg_replication": {"state": "down"}})
    rules = rule("chef-pg-no-leader")
    state = ReactorState()
    evaluate(out_of_sync("be2"), rules, no_leader, state, 0)
    elected = view(
        be1={"pg_replication": {"state": "down"}},
        be3={"pg_replication": {"role": "leader", "state": "leader"}},
    )
    assert [d.reason for d in due(state, rules, elected, 31.0)] == ["condition false"]


def test_a_frontend_service_down_is_restarted_on_that_frontend() -> None:
    down = Event(
        tag="saline/beacon/fe2/chef_server_status/down",
        minion="fe2",
        data={"service": "opscode-erchef", "state": "down", "problems": ["x"]},
    )
    decision = only(evaluate(down, rule("chef-frontend-service-down"), view(), ReactorState(), 0))
    assert decision.verdict is Verdict.FIRE, decision.reason
    run = decision.actions[0].action
    assert isinstance(run, RunAction)
    assert (run.target, run.function, run.args) == (
        "fe2",
        "chef_server.restart",
        ["opscode-erchef"],
    )
    assert decision.key == "fe2/opscode-erchef"


def test_two_followers_are_never_healed_together() -> None:
    state = ReactorState()
    rules = rule("chef-pg-follower-out-of-sync") + rule("chef-pg-follower-down")
    first = only(evaluate(out_of_sync("be2"), rules[:1], view(), state, 0))
    assert first.verdict is Verdict.FIRE
    down = Event(
        tag="saline/beacon/be3/pg_replication/down",
        minion="be3",
        data={"node": "127.0.1.3:5432", "role": "follower", "state": "down"},
    )
    second = only(evaluate(down, rules[1:], view(), state, 1))
    assert second.verdict is Verdict.SKIP
    assert "in flight" in second.reason
    assert first.reaction_id is not None
    finish(state, first.reaction_id, 2, ok=True)
    third = only(evaluate(down, rules[1:], view(), state, 3))
    assert third.verdict is Verdict.FIRE, third.reason


def test_a_leader_that_goes_down_is_not_the_ladders_business() -> None:
    down = Event(
        tag="saline/beacon/be1/pg_replication/down",
        minion="be1",
        data={"node": "127.0.1.1:5432", "role": "leader", "state": "down"},
    )
    decision = only(evaluate(down, rule("chef-pg-follower-down"), view(), ReactorState(), 0))
    assert decision.verdict is Verdict.SKIP


def test_a_fix_that_does_not_hold_escalates() -> None:
    state = ReactorState()
    rules = rule("chef-pg-follower-out-of-sync")
    verdicts = []
    for t in (0.0, 30.0, 60.0, 90.0):
        decision = only(evaluate(out_of_sync("be2"), rules, view(), state, t))
        verdicts.append(decision.verdict)
        if decision.reaction_id:
            finish(state, decision.reaction_id, t + 1, ok=True)
    assert verdicts == [Verdict.FIRE, Verdict.FIRE, Verdict.FIRE, Verdict.ESCALATE]


def levels(fe1: Any, fe2: Any) -> StaticView:
    return view(fe1={"migration_level": {"level": fe1}}, fe2={"migration_level": {"level": fe2}})


@pytest.mark.parametrize(
    ("fe1", "fe2", "drifted", "reference"),
    [
        ([3, 13], [3, 12], ["fe2"], (3, 13)),
        ([3, 12], [4, 0], ["fe1"], (4, 0)),
        ([3, 13], None, ["fe2"], (3, 13)),
    ],
)
def test_migration_drift_copies_the_highest_level(
    fe1: Any, fe2: Any, drifted: list[str], reference: tuple[int, int]
) -> None:
    event = Event(tag="saline/beacon/fe2/migration_level/changed", minion="fe2")
    decision = only(
        evaluate(event, rule("chef-migration-level-drift"), levels(fe1, fe2), ReactorState(), 0)
    )
    assert decision.verdict is Verdict.FIRE, decision.reason
    action = decision.actions[0].action
    assert isinstance(action, OrchestrateAction)
    assert action.vars["drifted"] == drifted
    assert (action.vars["major"], action.vars["minor"]) == reference


def test_equal_migration_levels_do_nothing() -> None:
    event = Event(tag="saline/beacon/fe2/migration_level/present", minion="fe2")
    decision = only(
        evaluate(
            event, rule("chef-migration-level-drift"), levels([3, 13], [3, 13]), ReactorState(), 0
        )
    )
    assert decision.verdict is Verdict.SKIP
    assert decision.reason == "condition false"


def test_shipped_rules_load_from_the_package_path() -> None:
    assert Path(SHIPPED_RULES, "chef_ha.yaml").is_file()


def test_a_frontend_that_has_not_reported_is_not_drifted() -> None:
    only_fe1 = view(fe1={"migration_level": {"level": [3, 13]}})
    event = Event(tag="saline/beacon/fe1/migration_level/present", minion="fe1")
    decision = only(
        evaluate(event, rule("chef-migration-level-drift"), only_fe1, ReactorState(), 0)
    )
    assert decision.verdict is Verdict.SKIP


def offsets(**by_node: float) -> StaticView:
    return view(**{n: {"time_drift": {"offset": o}} for n, o in by_node.items()})


def test_clock_drift_across_backends_escalates_to_a_human() -> None:
    event = Event(tag="saline/beacon/be2/time_drift/drift", minion="be2")
    decision = only(
        evaluate(event, rule("chef-clock-drift"), offsets(be1=0.0, be2=-3.0), ReactorState(), 0)
    )
    assert decision.verdict is Verdict.ESCALATE, decision.reason  # told, never stepped
    assert decision.reason.startswith("escalated by the rule: clocks of the backends 3.0s apart")
    assert "saline never steps a database node's clock; fix the time source of be2" in (
        decision.reason
    )
    assert [a.action.kind for a in decision.actions] == ["escalate"]  # nothing touches a clock


def test_clocks_within_the_reference_limit_do_nothing() -> None:
    event = Event(tag="saline/beacon/be2/time_drift/ok", minion="be2")
    within = offsets(be1=0.2, be2=-1.0, be3=0.4)
    decision = only(evaluate(event, rule("chef-clock-drift"), within, ReactorState(), 0))
    assert decision.verdict is Verdict.SKIP


@pytest.mark.parametrize(
    ("path", "mode", "fires"),
    [
        ("/n/etc/chef-backend/secrets.json", "0644", True),
        ("/n/etc/chef-backend/secrets.json", "0640", False),
        ("/n/var/opt/chef-backend/leaderl/data/sys.config", "0640", True),
        ("/n/var/opt/chef-backend/leaderl/data/sys.config", "0600", False),
    ],
)
def test_secrets_with_a_wrong_mode_reapply_the_backend_state(
    path: str, mode: str, fires: bool
) -> None:
    event = Event(
        tag="saline/beacon/be2/chef_secrets/changed",
        minion="be2",
        data={"path": path, "mode": mode},
    )
    decision = only(evaluate(event, rule("chef-backend-secrets-mode"), view(), ReactorState(), 0))
    assert (decision.verdict is Verdict.FIRE) is fires, decision.reason


def digests(**by_node: str) -> StaticView:
    return view(**{n: {"config_drift": {"digest": d}} for n, d in by_node.items()})


@pytest.mark.parametrize(
    ("minion", "state", "digest", "fires"),
    [
        ("be3", "changed", "b", True),  # in the minority across the backends
        ("be1", "ok", "a", False),  # with the majority
        ("be2", "drifted", "a", True),  # off the formula's expected values
    ],
)
def test_config_drift_is_decided_across_backends(
    minion: str, state: str, digest: str, fires: bool
) -> None:
    event = Event(
        tag=f"saline/beacon/{minion}/config_drift/{state}",
        minion=minion,
        data={"state": state, "digest": digest},
    )
    cluster = digests(be1="a", be2="a", be3="b")
    decision = only(evaluate(event, rule("chef-backend-config-drift"), cluster, ReactorState(), 0))
    assert (decision.verdict is Verdict.FIRE) is fires, decision.reason


def test_paused_replay_is_passed_to_the_ladder() -> None:
    event = out_of_sync("be3")
    paused = event.model_copy(update={"data": {**event.data, "replay_paused": True}})
    decision = only(
        evaluate(paused, rule("chef-pg-follower-out-of-sync"), view(), ReactorState(), 0)
    )
    action = decision.actions[0].action
    assert isinstance(action, OrchestrateAction)
    assert action.vars["paused"] is True


def test_a_configured_reference_frontend_wins_over_the_highest_level() -> None:
    pinned = {**INVENTORY, "fe2": {"role": "frontend", "chef_migration_reference": True}}
    observed = levels([3, 13], [3, 12])
    cluster = StaticView(pinned, observations=observed.observations)
    event = Event(tag="saline/beacon/fe1/migration_level/changed", minion="fe1")
    decision = only(evaluate(event, rule("chef-migration-level-drift"), cluster, ReactorState(), 0))
    assert decision.verdict is Verdict.FIRE, decision.reason
    action = decision.actions[0].action
    assert isinstance(action, OrchestrateAction)
    assert action.vars["drifted"] == ["fe1"]
    assert (action.vars["major"], action.vars["minor"]) == (3, 12)


def test_no_valid_migration_level_anywhere_does_nothing() -> None:
    event = Event(tag="saline/beacon/fe1/migration_level/missing", minion="fe1")
    decision = only(
        evaluate(event, rule("chef-migration-level-drift"), levels(None, None), ReactorState(), 0)
    )
    assert (decision.verdict, decision.reason) == (Verdict.SKIP, "condition false")


def test_the_rules_decide_through_named_checks() -> None:
    """The Chef HA rules keep their logic in reactors/checks/chef.py, not in Jinja."""
    text = Path(SHIPPED_RULES, "chef_ha.yaml").read_text()
    for name in ("migration_drift", "pg_leader", "config_digest_in_minority", "clock_spread"):
        assert f"check.{name}(" in text
    assert "dictsort" not in text and "rejectattr" not in text


def test_two_leaders_start_the_fence_and_stop_the_follower_heals() -> None:
    split = view(be2={"pg_replication": {"role": "leader", "state": "leader", "node": "h2:5432"}})
    split.observations["be1"]["pg_replication"]["node"] = "h1:5432"
    event = Event(
        tag="saline/beacon/be2/pg_replication/leader",
        minion="be2",
        data={"role": "leader", "state": "leader", "node": "h2:5432"},
    )
    state = ReactorState()
    held = only(evaluate(event, rule("chef-pg-split-brain"), split, state, 0))
    assert held.reason == "pending: acts in 5s if the condition still holds (1 so far)"
    decision = only(due(state, rule("chef-pg-split-brain"), split, 5.0))
    assert decision.verdict is Verdict.FIRE, decision.reason
    action = decision.actions[0].action
    assert isinstance(action, OrchestrateAction) and action.runbook == "chef/fence_split_brain"
    assert action.vars == {"a": "be1", "b": "be2", "a_node": "h1:5432", "b_node": "h2:5432"}
    # one leader: nothing to fence
    alone = only(evaluate(event, rule("chef-pg-split-brain"), view(), ReactorState(), 0))
    assert alone.verdict is Verdict.SKIP and alone.reason == "condition false"
    # meanwhile a follower's heal cannot name the leader: it escalates, it does not guess
    heal = only(
        evaluate(out_of_sync("be3"), rule("chef-pg-follower-out-of-sync"), split, ReactorState(), 0)
    )
    assert heal.verdict is Verdict.ESCALATE
    assert "more than one backend says its PostgreSQL leads: be1, be2" in heal.reason
    # a failover: the new leader reports before the old one's beacon says it is down; by
    # the end of the grace it has, and nothing is fenced
    state = ReactorState()
    evaluate(event, rule("chef-pg-split-brain"), split, state, 0)
    split.observations["be1"]["pg_replication"] = {"role": "leader", "state": "down"}
    gone = only(due(state, rule("chef-pg-split-brain"), split, 5.0))
    assert gone.verdict is Verdict.SKIP and gone.reason == "condition false"
