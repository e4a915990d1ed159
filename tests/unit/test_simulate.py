"""``saline reactor simulate``'s replay (master/simulate.py): recorded events through the
reactor's engine on a simulated clock, acting on nothing."""

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from master.simulate import Simulation, SimulationError, Snapshot, load_events, load_snapshot
from master.store.base import EventRecord
from reactors.policy import Policy, load_policy

T0 = 1_700_000_000.0

RULES = """\
- name: heal
  on: chef/pg/*/out_of_sync
  throttle: {key: "{{ event.minion }}", once_within: 5s}
  cooldown: 20s
  do:
    - run: {target: "{{ event.minion }}", function: cmd.run, args: [reclone]}
- name: settle
  on: chef/es/*/yellow
  throttle: {key: "{{ event.minion }}", once_after: 3s}
  do:
    - fire: {tag: chef/es/settled}
- name: backends
  on: chef/drift
  do:
    - run: {target: "G@role:backend", tgt_type: compound, function: test.ping}
"""


def policy(tmp_path: Path, text: str = RULES) -> Policy:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "r.yaml").write_text(textwrap.dedent(text))
    return load_policy([rules], [])


class Recording:
    """Events as the master stores them, with the real reactor's audit events."""

    def __init__(self) -> None:
        self.events: list[EventRecord] = []

    def add(self, at: float, tag: str, minion: str | None = None, **data: Any) -> int:
        seq = len(self.events) + 1
        self.events.append(EventRecord(tag, data, minion, T0 + at, seq))
        return seq

    def decided(
        self, at: float, rule: str, seq: int, verdict: str, reaction: str | None = None
    ) -> None:
        suffix = {"fire": "fired", "skip": "skipped", "escalate": "escalated"}[verdict]
        data = {"verdict": verdict, "reason": "real", "event_id": str(seq), "rule": rule}
        data["reaction_id"] = reaction
        tag = f"saline/reactor/{rule}/{suffix}"
        seq_now = len(self.events) + 1
        self.events.append(EventRecord(tag, data, None, T0 + at, seq_now, seq, 1, rule))

    def ended(self, at: float, rule: str, reaction: str, outcome: str = "ok") -> None:
        what = "finished" if outcome == "ok" else "failed"
        data = {"reaction": reaction, "outcome": outcome, "reason": "done"}
        tag = f"saline/reactor/{rule}/{what}"
        self.events.append(EventRecord(tag, data, None, T0 + at, len(self.events) + 1))


def verdicts(results: list[Any], rule: str) -> list[tuple[float, str]]:
    return [
        (round(r.decision.at - T0, 1), r.decision.verdict.value)
        for r in results
        if r.decision.rule == rule
    ]


def test_throttle_and_cooldown_on_the_simulated_clock(tmp_path: Path) -> None:
    rec = Recording()
    for at in (0, 2, 8, 25):
        rec.add(at, "chef/pg/be2/out_of_sync", "be2")
    results = Simulation(policy(tmp_path), reaction_seconds=1).run(rec.events)
    # fired at 0 (ends at 1 s, assumed); 2: within once_within 5s; 8: in the 20 s cooldown
    # after 0; 25: both have passed
    assert verdicts(results, "heal") == [(0, "fire"), (2, "skip"), (8, "skip"), (25, "fire")]
    assert results[1].decision.reason == "throttled: fired 2s ago, once_within 5s"
    assert results[2].decision.reason == "cooldown: fired 8s ago, cooldown 20s"
    assert results[0].ended == "assumed ok"
    fired = results[0].as_dict(T0)
    assert fired["actions"] == ['run cmd.run on be2 (list) "reclone"']
    assert fired["offset"] == 0 and fired["seq"] == 1 and fired["real"] is None


def test_a_reaction_ends_when_the_recording_says_and_is_compared(tmp_path: Path) -> None:
    rules = RULES.replace("cooldown: 20s", "cooldown: 1s")
    rec = Recording()
    first = rec.add(0, "chef/pg/be2/out_of_sync", "be2")
    rec.decided(0, "heal", first, "fire", reaction="r1")
    second = rec.add(7, "chef/pg/be2/out_of_sync", "be2")  # the reaction still runs
    rec.decided(7, "heal", second, "fire", reaction="r2")  # the real reactor fired: differs
    rec.ended(9, "heal", "r1", "failed")
    third = rec.add(10, "chef/pg/be2/out_of_sync", "be2")
    rec.decided(10, "heal", third, "fire", reaction="r3")
    results = Simulation(policy(tmp_path, rules), reaction_seconds=60).run(rec.events)
    heal = [r for r in results if r.decision.rule == "heal"]
    assert [(r.decision.verdict.value, r.differs) for r in heal] == [
        ("fire", False),
        ("skip", True),  # in flight until 9 s, as the recording says
        ("fire", False),
    ]
    assert "in flight" in heal[1].decision.reason
    assert heal[0].ended == "failed"  # the recorded outcome
    assert heal[2].ended is None  # r3 was still running when the recording ended
    assert heal[1].real is not None and heal[1].real.verdict == "fire"


def test_a_reaction_without_a_real_one_is_assumed_to_end(tmp_path: Path) -> None:
    rules = RULES.replace("cooldown: 20s", "cooldown: 1s")
    rec = Recording()
    rec.add(0, "chef/pg/be2/out_of_sync", "be2")
    rec.add(7, "chef/pg/be2/out_of_sync", "be2")
    rec.add(20, "chef/pg/be2/out_of_sync", "be2")
    results = Simulation(policy(tmp_path, rules), reaction_seconds=15).run(rec.events)
    assert verdicts(results, "heal") == [(0, "fire"), (7, "skip"), (20, "fire")]
    assert [r.ended for r in results] == ["assumed ok", None, "assumed ok"]


def test_once_after_acts_on_the_timer_after_the_quiet_period(tmp_path: Path) -> None:
    rec = Recording()
    for at in (0, 1, 2):
        rec.add(at, "chef/es/be1/yellow", "be1")
    rec.add(30, "chef/other", None)
    results = Simulation(policy(tmp_path)).run(rec.events)
    settle = [r for r in results if r.decision.rule == "settle"]
    assert [r.decision.verdict.value for r in settle] == ["skip", "skip", "skip", "fire"]
    trailing = settle[-1]
    assert trailing.seq is None and trailing.decision.event_id == "3"  # the latest event
    assert 5.0 <= trailing.decision.at - T0 <= 6.0  # 3 s after the last, on a 1 s tick
    assert trailing.as_dict(T0)["actions"] == ["fire chef/es/settled"]


def test_the_view_snapshot_gives_grains_and_the_reactor_memory(tmp_path: Path) -> None:
    rec = Recording()
    rec.add(0, "chef/drift", None)
    rec.add(1, "chef/pg/be2/out_of_sync", "be2")
    minions = {"be1": {"role": "backend"}, "be2": {"role": "backend"}, "fe1": {}}
    state = {"last_fired": {"heal": {"be2": T0 - 3}}}  # the reactor fired for be2 3 s before
    snapshot = Snapshot(minions=minions, state=state)
    results = Simulation(policy(tmp_path), snapshot).run(rec.events)
    [drift] = [r for r in results if r.decision.rule == "backends"]
    assert drift.decision.verdict.value == "fire"
    assert drift.decision.touches == ["be1", "be2"]
    [heal] = [r for r in results if r.decision.rule == "heal"]
    assert heal.decision.verdict.value == "skip", heal.decision.reason
    # without the snapshot the group matches nobody: nothing to act on
    [bare] = [
        r for r in Simulation(policy(tmp_path)).run(rec.events) if r.decision.rule == "backends"
    ]
    assert bare.decision.verdict.value == "escalate"


def test_events_files_are_read_and_bad_lines_named(tmp_path: Path) -> None:
    good = {"seq": 2, "tag": "a/b", "data": {}, "minion": "be1", "ts": T0, "depth": 0}
    path = tmp_path / "events.jsonl"
    lines = [json.dumps({**good, "seq": 5, "tag": "later"}), "", json.dumps(good)]
    path.write_text("\n".join(lines) + "\n")
    assert [e.tag for e in load_events(path)] == ["a/b", "later"]  # by seq
    for bad, said in [
        ("{oops", r"events\.jsonl:1: not JSON"),
        ("[1]", r"events\.jsonl:1: an event is a JSON object"),
        (json.dumps({**good, "tag": 3}), r"events\.jsonl:1: tag: expected str"),
        (json.dumps({k: v for k, v in good.items() if k != "ts"}), r":1: ts: missing"),
    ]:
        path.write_text(bad + "\n")
        with pytest.raises(SimulationError, match=said):
            load_events(path)
    view = tmp_path / "view.json"
    view.write_text('{"minions": {"be1": "backend"}}')
    with pytest.raises(SimulationError, match=r"view\.json: minions\.be1: "):
        load_snapshot(view)


def test_a_reaction_in_flight_in_the_snapshot_ends_when_the_recording_says(
    tmp_path: Path,
) -> None:
    guarded = '  guard: {group: "G@role:backend", max_concurrent: 1}\n  cooldown: 1s'
    rules = RULES.replace("  cooldown: 20s", guarded)
    group = "G@role:backend"
    running = {"rule": "heal", "key": "be3", "group": group, "started": T0 - 20, "digest": "d"}
    minions = {"be2": {"role": "backend"}, "be3": {"role": "backend"}}
    snapshot = Snapshot(minions=minions, state={"in_flight": {"old": running}})
    rec = Recording()
    rec.add(0, "chef/pg/be2/out_of_sync", "be2")  # the old reaction still runs
    rec.ended(5, "heal", "old")
    rec.add(6, "chef/pg/be2/out_of_sync", "be2")
    results = Simulation(policy(tmp_path, rules), snapshot).run(rec.events)
    assert verdicts(results, "heal") == [(0, "skip"), (6, "fire")]
    assert "max_concurrent" in results[0].decision.reason, results[0].decision.reason
