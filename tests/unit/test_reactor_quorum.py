"""Property: across random event sequences, members failing and recovering, and reactions
finishing at random times, the quorum guard never lets two disruptive reactions overlap in a
group and never acts when that would leave fewer than a majority of the group healthy."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import NamedTuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reactors.engine import evaluate, finish
from reactors.model import Event, Verdict
from reactors.rules import Rule, load_rules
from reactors.state import ReactorState
from reactors.view import StaticView

GROUP = "G@role:backend"
RULES = f"""\
- name: rejoin
  on: q/*/rejoin
  do: [{{run: {{target: "{{{{ event.minion }}}}", function: chef_backend.rejoin}}}}]
  guard: {{group: "{GROUP}", max_concurrent: 5}}
  disruptive: true
  cooldown: 0
  flap: null
- name: resync
  on: q/*/resync
  do: [{{run: {{target: "{{{{ event.data.nodes }}}}", function: pg.resync}}}}]
  guard: {{group: "{GROUP}", max_concurrent: 5}}
  disruptive: true
  cooldown: 0
  flap: null
- name: failover
  on: q/*/failover
  do: [{{orchestrate: {{runbook: chef_ha/failover}}}}]
  guard: {{group: "{GROUP}", max_concurrent: 5}}
  disruptive: true
  cooldown: 0
  flap: null
- name: gentle
  on: q/*/rejoin
  do: [{{run: {{target: "{{{{ event.minion }}}}", function: test.ping}}}}]
  guard: {{group: "{GROUP}", max_concurrent: 5}}
  cooldown: 0
  flap: null
"""


class Op(NamedTuple):
    """One step: an event (of ``tag`` from member ``who``, naming ``nodes``), a member failing
    or recovering, or the ``who``-th in-flight reaction finishing (``ok`` or not)."""

    kind: str
    who: int = 0
    tag: str = "rejoin"
    nodes: tuple[int, ...] = (0,)
    ok: bool = True


member = st.integers(min_value=0, max_value=4)
op = st.one_of(
    st.builds(
        Op,
        kind=st.just("event"),
        who=member,
        tag=st.sampled_from(["rejoin", "resync", "failover"]),
        nodes=st.lists(member, min_size=1, max_size=3).map(tuple),
    ),
    st.builds(Op, kind=st.sampled_from(["fail", "recover"]), who=member),
    st.builds(Op, kind=st.just("finish"), who=st.integers(0, 10), ok=st.booleans()),
)


def check_sequence(size: int, ops: list[Op], rules_dir: Path) -> int:
    """Run ``ops`` on a group of ``size`` members; return how many disruptive reactions fired."""
    members = [f"be{i}" for i in range(size)]
    online = {*members, "fe1"}
    view = StaticView(
        inventory={**{m: {"role": "backend"} for m in members}, "fe1": {"role": "frontend"}},
        online_ids=online,
    )
    rules = load_rules([rules_dir])
    state = ReactorState()
    quorum = size // 2 + 1
    fired = 0
    for step, current in enumerate(ops):
        now = float(step)
        minion = members[current.who % size]
        if current.kind == "fail":
            online.discard(minion)
        elif current.kind == "recover":
            online.add(minion)
        elif current.kind == "finish" and state.in_flight:
            ids = sorted(state.in_flight)
            finish(state, ids[current.who % len(ids)], now, ok=current.ok)
        elif current.kind == "event":
            fired += check_event(rules, current, minion, members, view, state, now, quorum)
        in_group = [r for r in state.in_flight.values() if r.disruptive and r.group == GROUP]
        assert len(in_group) <= 1
    return fired


def check_event(
    rules: list[Rule],
    current: Op,
    minion: str,
    members: list[str],
    view: StaticView,
    state: ReactorState,
    now: float,
    quorum: int,
) -> int:
    data = {"nodes": sorted({members[n % len(members)] for n in current.nodes})}
    disrupting_before = [r for r in state.in_flight.values() if r.disruptive and r.group == GROUP]
    online_before = {m for m in members if view.online(m)}
    event = Event(tag=f"q/{minion}/{current.tag}", minion=minion, data=data)
    fired = 0
    for decision in evaluate(event, rules, view, state, now):
        if decision.verdict is not Verdict.FIRE or not decision.disruptive:
            continue
        fired += 1
        # never two disruptive reactions at once in one group
        assert disrupting_before == [], decision
        # never below quorum: the touched members (or, none named, some member) go down
        touched = set(decision.touches) & set(members)
        left = len(online_before - touched) if touched else len(online_before) - 1
        assert left >= quorum, (decision.reason, sorted(online_before), sorted(touched))
    return fired


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(size=st.sampled_from([3, 5]), ops=st.lists(op, max_size=60))
def test_quorum_guard_never_overlaps_or_breaks_quorum(
    size: int, ops: list[Op], tmp_path: Path
) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir(exist_ok=True)
    (rules_dir / "q.yaml").write_text(textwrap.dedent(RULES))
    check_sequence(size, ops, rules_dir)


def test_the_property_is_not_vacuous(tmp_path: Path) -> None:
    (tmp_path / "q.yaml").write_text(RULES)
    finish_all = [Op("finish")] * 4  # the non-disruptive "gentle" reactions are in flight too
    ops = [
        Op("event", who=0, tag="rejoin"),
        Op("event", who=1, tag="rejoin"),  # refused: be0 in flight
        *finish_all,
        Op("fail", who=1),
        Op("event", who=0, tag="resync", nodes=(1,)),  # be1 is down: repairing it is safe
        *finish_all,
        Op("fail", who=2),
        Op("event", who=0, tag="failover"),  # 1 of 3 healthy: refused
    ]
    assert check_sequence(3, ops, tmp_path) == 2
