"""Every state a beacon reports as bad is declared, and every bad state of the Chef HA
formula's beacons is answered by a shipped rule that acts or escalates: none is observed
and left alone."""

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest

from minion.beacons.base import Beacon
from minion.beacons.registry import BEACONS
from reactors.engine import due, evaluate
from reactors.model import Event, Verdict
from reactors.policy import load_policy
from reactors.shipped import SHIPPED_RULES, SHIPPED_RUNBOOKS
from reactors.state import ReactorState
from reactors.view import StaticView
from saline.lab.chefha.cluster import ChefLab

ANSWERS = (Verdict.FIRE, Verdict.ESCALATE, Verdict.AWAIT_APPROVAL)


def literal_states(beacon: type[Beacon]) -> dict[str, bool]:
    """State -> bad for every ``Observation(key, "STATE", bad=True|False)`` in the module."""
    tree = ast.parse(Path(inspect.getfile(beacon)).read_text())
    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Observation"):
            continue
        state = node.args[1] if len(node.args) > 1 else None
        bad = next((k.value for k in node.keywords if k.arg == "bad"), None)
        if isinstance(state, ast.Constant) and isinstance(bad, ast.Constant):
            found[state.value] = bad.value
    return found


@pytest.mark.parametrize("name", sorted(BEACONS))
def test_every_literal_bad_state_is_declared(name: str) -> None:
    beacon = BEACONS[name]
    states = literal_states(beacon)
    undeclared = sorted(s for s, bad in states.items() if bad and s not in beacon.bad_states)
    assert undeclared == [], f"{name}: bad states not in bad_states: {undeclared}"
    good = sorted(s for s, bad in states.items() if not bad and s in beacon.bad_states)
    assert good == [], f"{name}: declared bad but reported good: {good}"
    assert beacon.bad_states, name


# --- the Chef HA formula ------------------------------------------------------------------------


def lab_beacons() -> dict[str, type[Beacon]]:
    """Instance name -> beacon class, as the Chef HA lab configures every node."""
    node = {
        "address": "127.0.1.1",
        "root": "/n",
        "ctl": "/n/ctl",
        "services": {
            "postgresql": {"port": 5432, "data_dir": "/n/pg"},
            "etcd": {"client_url": "http://127.0.1.1:2379"},
            "elasticsearch": {"port": 9200},
            "ntp": {"port": 123},
        },
    }
    data = {
        "subnet": "127.0.1",
        "nodes": {"be1": {**node, "role": "backend"}, "fe1": {**node, "role": "frontend"}},
    }
    lab = ChefLab(Path("/nonexistent"))
    instances: dict[str, type[Beacon]] = {}
    for minion in ("be1", "fe1"):
        for instance, spec in lab._minion_config(data, minion)["beacons"].items():
            instances[instance] = BEACONS[spec.get("beacon", instance)]
    return instances


#: one representative event per (beacon instance, bad state): what the state means in the
#: cluster (the data its rule reads), on be2 (a follower) or fe2
BAD: dict[tuple[str, str], dict[str, Any]] = {
    ("pg_replication", "out_of_sync"): {"role": "follower", "node": "127.0.1.2:5432"},
    ("pg_replication", "down"): {"role": "follower", "node": "127.0.1.2:5432", "error": "x"},
    ("etcd_member", "degraded"): {},
    ("etcd_member", "no_quorum"): {},
    ("elasticsearch_health", "yellow"): {"url": "http://127.0.1.2:9200"},
    ("elasticsearch_health", "red"): {"url": "http://127.0.1.2:9200"},
    ("elasticsearch_health", "down"): {"url": "http://127.0.1.2:9200", "error": "refused"},
    ("chef_backend_status", "degraded"): {
        "service": "leaderl",
        "problems": ["leaderl: waiting 1"],
    },
    ("chef_secrets", "absent"): {"path": "/n/etc/chef-backend/secrets.json"},
    ("chef_secrets", "error"): {"path": "/n/etc/chef-backend/secrets.json"},
    ("chef_secrets", "changed"): {"path": "/n/etc/chef-backend/secrets.json", "mode": "0644"},
    ("time_drift", "drift"): {"offset": -3.0},
    ("time_drift", "unreachable"): {"error": "timed out"},
    ("config_drift", "drifted"): {"path": "/n/etc/chef-backend/chef-backend.rb"},
    ("config_drift", "missing"): {"path": "/n/etc/chef-backend/chef-backend.rb"},
    ("config_drift", "unparsable"): {"path": "/n/etc/chef-backend/chef-backend.rb"},
    ("config_drift", "changed"): {"path": "/n/etc/chef-backend/chef-backend.rb", "digest": "b"},
    ("chef_server_status", "down"): {
        "service": "opscode-erchef",
        "state": "down",
        "pid": None,
        "seconds": 3,
        "normally_up": True,
        "problems": ["opscode-erchef: down for 3s, normally up"],
    },
    ("chef_server_status", "unreadable"): {
        "service": "chef-server-ctl",
        "error": "timed out",
        "problems": ["timed out"],
    },
    ("migration_level", "invalid"): {"level": None, "error": "not JSON"},
    ("migration_level", "missing"): {"level": None},
    ("migration_level", "changed"): {"level": [3, 9]},
}

#: the beacons a lab frontend runs (the others run on backends)
FRONTEND_BEACONS = ("migration_level", "chef_server_status")

INVENTORY = {
    **{b: {"role": "backend"} for b in ("be1", "be2", "be3")},
    **{f: {"role": "frontend"} for f in ("fe1", "fe2")},
}


def cluster_view(instance: str, state: str, data: dict[str, Any]) -> StaticView:
    """The cluster as it is when ``instance`` reports ``state`` on its node: be1 leads, the
    clocks of be1 and be3 are right, the other backends' settings digest is ``a``, fe1 is at
    the reference migration level."""
    minion = "fe2" if instance in FRONTEND_BEACONS else "be2"
    observations: dict[str, dict[str, dict[str, Any]]] = {
        "be1": {
            "pg_replication": {"role": "leader", "state": "leader", "node": "127.0.1.1:5432"},
            "time_drift": {"offset": 0.0, "state": "ok"},
            "config_drift": {"digest": "a", "state": "ok"},
        },
        "be2": {"pg_replication": {"role": "follower", "state": "in_sync"}},
        "be3": {
            "pg_replication": {"role": "follower", "state": "in_sync"},
            "time_drift": {"offset": 0.0, "state": "ok"},
            "config_drift": {"digest": "a", "state": "ok"},
        },
        "fe1": {"migration_level": {"level": [3, 13], "state": "present"}},
    }
    seen = {**data, "state": state}
    by_beacon = observations.setdefault(minion, {})
    by_beacon[instance] = seen
    if "service" in data:
        by_beacon[f"{instance}:{data['service']}"] = seen
    if (instance, state) == ("pg_replication", "down"):  # no other backend took the lead
        observations["be1"]["pg_replication"] = {"role": "leader", "state": "down"}
    return StaticView(INVENTORY, observations=observations)


def test_the_table_covers_every_bad_state_of_the_labs_beacons() -> None:
    wanted = {(i, s) for i, beacon in lab_beacons().items() for s in beacon.bad_states}
    assert set(BAD) == wanted


@pytest.mark.parametrize(
    ("instance", "state"), sorted(BAD), ids=[f"{i}/{s}" for i, s in sorted(BAD)]
)
def test_every_bad_state_is_answered_by_a_shipped_rule(instance: str, state: str) -> None:
    policy = load_policy([SHIPPED_RULES], [SHIPPED_RUNBOOKS])
    minion = "fe2" if instance in FRONTEND_BEACONS else "be2"
    data = {**BAD[(instance, state)], "state": state, "key": "k", "beacon": instance}
    event = Event(
        id="1", tag=f"saline/beacon/{minion}/{instance}/{state}", minion=minion, data=data
    )
    view, reactor = cluster_view(instance, state, data), ReactorState()
    rules = policy.index.matching(event.tag)
    decisions = evaluate(event, rules, view, reactor, 1000.0)
    decisions += due(reactor, rules, view, 1000.0 + 31)  # after a rule's grace period
    answered = [d for d in decisions if d.verdict in ANSWERS]
    said = [(d.rule, d.verdict.value, d.reason) for d in decisions]
    assert answered, f"{instance}/{state} is observed and left alone: {said}"


def test_a_leader_down_is_leaderls_until_the_grace_ends() -> None:
    """A leader down is escalated only when no backend leads 30 s later."""
    policy = load_policy([SHIPPED_RULES], [SHIPPED_RUNBOOKS])
    data = {"role": "leader", "node": "127.0.1.1:5432", "error": "refused", "state": "down"}
    event = Event(id="1", tag="saline/beacon/be1/pg_replication/down", minion="be1", data=data)
    view = cluster_view("pg_replication", "down", data)
    view.observations["be1"]["pg_replication"] = data
    reactor = ReactorState()
    rules = policy.index.matching(event.tag)
    first = evaluate(event, rules, view, reactor, 0.0)
    assert all(d.verdict is Verdict.SKIP for d in first), first
    view.observations["be2"]["pg_replication"] = {"role": "leader", "state": "leader"}
    assert due(reactor, rules, view, 31.0)[0].reason == "condition false"  # be2 leads now
    view.observations["be2"]["pg_replication"] = {"role": "follower", "state": "in_sync"}
    evaluate(event, rules, view, reactor, 40.0)  # later: be1 down again, nobody took over
    assert due(reactor, rules, view, 60.0) == []  # within the grace
    [late] = due(reactor, rules, view, 71.0)
    assert late.verdict is Verdict.ESCALATE and late.rule == "chef-pg-no-leader"
    assert "no PostgreSQL leader for 30s (be1, last seen as leader, is down" in late.reason
