"""``saline reactor simulate`` against what a real lab master's reactor really decided: the
events of a small incident recorded with ``saline events``, the view taken with ``saline
reactor view`` before it, replayed offline; then the same incident rehearsed with a changed
rule."""

import json
import textwrap
import time
from pathlib import Path
from typing import Any

from saline.lab.lab import Lab
from tests.integration.test_reactor import fire, history, reload, rules
from tests.support import saline, wait_for

RULE = """\
- name: sim-heal
  on: test/sim/*/broken
  throttle: {key: "{{ event.data.node }}", once_within: 2s}
  cooldown: 1s
  do:
    - run: {target: "{{ event.data.node }}", function: test.sleep, args: [1]}
"""


def _decisions(lab: Lab, *args: str) -> dict[str, Any]:
    proc = saline(lab, "reactor", "simulate", *args, "--out", "json")
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def test_a_replay_decides_as_the_reactor_did_and_rehearses_a_change(
    lab: Lab, tmp_path: Path
) -> None:
    rules(lab, "sim", RULE)
    reload(lab)
    proc = saline(lab, "reactor", "view")
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)
    assert view["minions"]["be1"]["role"] == "backend" and "be1" in view["online"]
    (tmp_path / "view.json").write_text(proc.stdout)

    def fired() -> list[dict[str, Any]]:
        return [r for r in history(lab, "sim-heal") if r["verdict"] == "fire"]

    def settled(count: int) -> bool:
        done = fired()
        return len(done) == count and all(r["outcome"] for r in done)

    fire(lab, "test/sim/be1/broken", {"node": "be1"})  # fires
    fire(lab, "test/sim/be1/broken", {"node": "be1"})  # in flight or throttled: skipped
    fire(lab, "test/sim/be2/broken", {"node": "be2"})  # another key: fires
    wait_for(lambda: settled(2), 30, "both reactions ended")
    # the reactor's throttle runs on its clock: the third comes once the 2 s have passed
    deadline = max(r["created"] for r in fired()) + 2.5
    wait_for(lambda: time.time() > deadline, 10, "the throttle window passed")
    fire(lab, "test/sim/be1/broken", {"node": "be1"})
    wait_for(lambda: settled(3), 30, "the third reaction ended")

    proc = saline(lab, "events", "--since", str(view["seq"]), "--no-follow", "--out", "json")
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "events.jsonl").write_text(proc.stdout)

    replay = _decisions(lab, str(tmp_path / "events.jsonl"), "--view", str(tmp_path / "view.json"))
    ours = [d for d in replay["decisions"] if d["rule"] == "sim-heal"]
    assert [d["verdict"] for d in ours] == ["fire", "skip", "fire", "fire"], ours
    assert all(d["real"] is not None and not d["differs"] for d in ours), ours
    assert ours[0]["actions"] == ["run test.sleep on be1 (list) 1"]
    assert ours[0]["ended"] == "ok"  # ended when and as the real reaction did

    # rehearse: the same night with a throttle of an hour fires once per node
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "sim.yaml").write_text(
        textwrap.dedent(RULE).replace("once_within: 2s", "once_within: 1h")
    )
    rehearsed = _decisions(
        lab,
        str(tmp_path / "events.jsonl"),
        "--view",
        str(tmp_path / "view.json"),
        "--rules",
        str(changed),
    )
    again = [d for d in rehearsed["decisions"] if d["rule"] == "sim-heal"]
    assert [d["verdict"] for d in again] == ["fire", "skip", "fire", "skip"]
    assert again[3]["differs"] and again[3]["real"]["verdict"] == "fire"
    assert "once_within 1h" in again[3]["reason"]
    human = saline(
        lab,
        "reactor",
        "simulate",
        str(tmp_path / "events.jsonl"),
        "--rules",
        str(changed),
        "--view",
        str(tmp_path / "view.json"),
    )
    assert human.returncode == 0, human.stderr
    assert human.stdout.splitlines()[0].endswith("4 compared with the recording, 1 differ")
    assert "DIFFERS: the reactor decided fire" in human.stdout

    # acting on nothing: no job was started by the replays
    assert len(fired()) == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tag": "x"}\n')
    proc = saline(lab, "reactor", "simulate", str(bad))
    assert proc.returncode == 1 and "bad.jsonl:1: ts: missing" in proc.stderr
