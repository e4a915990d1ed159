"""Events, beacons and the reactor through real master and minion processes."""

import json
import os
import re
import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from saline.keys import KeyRing, KeyState
from saline.lab.lab import Lab
from saline.protocol import Event
from tests.integration.peers import Dealer
from tests.support import events, online, saline, status, wait_for


def rules(lab: Lab, name: str, text: str) -> None:
    (lab.directory / "reactors" / f"{name}.yaml").write_text(textwrap.dedent(text))


def history(lab: Lab, rule: str | None = None) -> list[dict[str, Any]]:
    args = ["reactor", "history", "-n", "1000", "--out", "json"]
    proc = saline(lab, *args, *(["--rule", rule] if rule else []))
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    return rows


def reload(lab: Lab) -> None:
    proc = saline(lab, "reactor", "reload")
    assert proc.returncode == 0, proc.stderr


def fire(lab: Lab, tag: str, data: dict[str, Any]) -> None:
    with lab.client() as master:
        master.request("fire", tag=tag, data=data)


def jobs_of(lab: Lab, user: str) -> list[dict[str, Any]]:
    listed = json.loads(saline(lab, "jobs", "list", "-n", "1000", "--out", "json").stdout)
    return [j for j in listed if j["user"] == user]


@pytest.fixture
def beacon_lab(tmp_path: Path) -> Iterator[Lab]:
    """Three minions whose `demo` service is watched by a service beacon."""
    lab = Lab(tmp_path / "lab")
    (lab.directory / "reactors").mkdir(parents=True)
    rules(
        lab,
        "heal",
        """\
        - name: restart-stopped-demo
          on: saline/beacon/*/service/stopped
          when: "event.data.name == 'demo'"
          do:
            - run: {target: "{{ event.minion }}", function: service.start, args: [demo]}
          cooldown: 0
        """,
    )
    beacons = {"service": {"interval": 0.3, "services": ["demo"]}}
    lab.up(3, extra={"beacons": beacons})
    yield lab
    lab.down()


def demo_pid(lab: Lab, minion: str) -> int | None:
    pidfile = lab.directory / "minions" / minion / "cache" / "services" / "demo.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError):
        return None
    return pid if os.path.exists(f"/proc/{pid}") else None


def test_beacon_edge_reaches_a_rule_and_the_fix_runs(beacon_lab: Lab) -> None:
    lab = beacon_lab
    # the demo services start stopped: the beacon reports it, the rule starts them
    wait_for(lambda: all(demo_pid(lab, m) for m in ("be1", "be2", "fe1")), 30, "healed")
    # the beacon samples: break it only once the beacon has seen it running
    wait_for(lambda: events(lab, "saline/beacon/be1/service/running"), 15, "be1 seen running")
    first = demo_pid(lab, "be1")
    assert first is not None
    os.kill(first, signal.SIGKILL)  # break it by hand
    wait_for(lambda: demo_pid(lab, "be1") not in (None, first), 30, "be1 demo restarted")
    rows = [r for r in history(lab, "restart-stopped-demo") if r["verdict"] == "fire"]
    be1 = [r for r in rows if "/be1/" in r["event_tag"]]
    assert len(be1) >= 2, "one reaction at start, one after the kill"
    wait_for(lambda: history(lab, "restart-stopped-demo")[0]["outcome"] == "ok", 20, "ok")
    row = history(lab, "restart-stopped-demo")[0]
    assert row["event_tag"].startswith("saline/beacon/") and row["progress"]["0"]["jid"]
    tags = {e["tag"] for e in events(lab, "saline/reactor/restart-stopped-demo/*")}
    assert "saline/reactor/restart-stopped-demo/fired" in tags
    assert "saline/reactor/restart-stopped-demo/finished" in tags


def test_events_spooled_while_the_master_is_away(beacon_lab: Lab) -> None:
    lab = beacon_lab
    wait_for(lambda: demo_pid(lab, "fe1"), 30, "fe1 demo running")
    wait_for(lambda: events(lab, "saline/beacon/fe1/service/running"), 15, "fe1 seen running")
    master = lab.state["master"]
    os.kill(int(master["pid"]), signal.SIGKILL)
    pid = demo_pid(lab, "fe1")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    spool = lab.directory / "minions" / "fe1" / "cache" / "spool" / "events"
    wait_for(lambda: any(spool.glob("*.evt")), 15, "the stopped event spooled on fe1")
    lab.start_master()
    wait_for(lambda: demo_pid(lab, "fe1") not in (None, pid), 30, "healed after reconnect")
    wait_for(lambda: not any(spool.glob("*.evt")), 15, "spool drained")


def test_thousand_identical_events_one_remediation(lab: Lab) -> None:
    rules(
        lab,
        "flood",
        """\
        - name: flood-guard
          on: test/flood
          do:
            - run: {target: be1, function: test.ping}
          throttle: {key: "{{ event.data.node }}", once_within: 5m}
        """,
    )
    reload(lab)
    started = time.monotonic()
    with lab.client() as master:
        for _ in range(1000):
            master.request("fire", tag="test/flood", data={"node": "be1"})
    assert time.monotonic() - started < 10
    wait_for(lambda: len(history(lab, "flood-guard")) == 1000, 30, "1000 decisions recorded")
    verdicts = [r["verdict"] for r in history(lab, "flood-guard")]
    assert verdicts.count("fire") == 1
    assert verdicts.count("skip") == 999
    wait_for(lambda: len(jobs_of(lab, "reactor:flood-guard")) == 1, 15, "one job")


def test_dry_run_changes_nothing(lab: Lab, tmp_path: Path) -> None:
    marker = tmp_path / "touched"
    rules(
        lab,
        "dry",
        f"""\
        - name: dry-touch
          on: test/dry
          mode: dry_run
          do:
            - run: {{target: be1, function: file.write, args: ["{marker}", "x"]}}
        """,
    )
    reload(lab)
    fire(lab, "test/dry", {})
    wait_for(lambda: history(lab, "dry-touch"), 10, "decision recorded")
    [row] = history(lab, "dry-touch")
    assert row["verdict"] == "dry_run" and row["actions"], "the plan is recorded"
    assert not marker.exists()
    assert jobs_of(lab, "reactor:dry-touch") == []


def test_crafted_event_data_cannot_run_anything(lab: Lab, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    rules(
        lab,
        "inject",
        """\
        - name: echo-it
          on: test/inject
          do:
            - run: {target: "{{ event.data.node }}", function: cmd.run,
                    args: [["echo", "{{ event.data.msg }}"]]}
          cooldown: 0
        """,
    )
    reload(lab)
    evil = f"$(touch {pwned}); `touch {pwned}`; {{{{ 7*7 }}}} && touch {pwned}"
    fire(lab, "test/inject", {"node": "be1", "msg": evil})
    wait_for(lambda: jobs_of(lab, "reactor:echo-it"), 15, "the job ran")
    jid = jobs_of(lab, "reactor:echo-it")[0]["jid"]
    wait_for(
        lambda: json.loads(saline(lab, "jobs", "show", jid, "--out", "json").stdout)["returns"],
        15,
        "return stored",
    )
    shown = json.loads(saline(lab, "jobs", "show", jid, "--out", "json").stdout)
    assert shown["returns"]["be1"]["return"]["stdout"] == evil + "\n", "printed literally"
    assert not pwned.exists()
    # a target from event data never widens: `be1 or *` is no id, so the rule escalates
    fire(lab, "test/inject", {"node": "be1 or *", "msg": "hi"})
    wait_for(lambda: len(history(lab, "echo-it")) == 2, 10, "second decision")
    assert history(lab, "echo-it")[0]["verdict"] == "escalate"
    assert len(jobs_of(lab, "reactor:echo-it")) == 1


def test_once_after_acts_on_the_latest_event_and_names_it(lab: Lab) -> None:
    rules(
        lab,
        "trailing",
        """\
        - name: settle-down
          on: test/trailing
          throttle: {once_after: 1s}
          do:
            - run: {target: fe1, function: test.echo, args: ["{{ event.data.n }}"]}
        """,
    )
    reload(lab)
    fire(lab, "test/trailing", {"n": 1})
    fire(lab, "test/trailing", {"n": 2})
    [latest] = events(lab, "test/trailing")[-1:]
    wait_for(
        lambda: any(r["verdict"] == "fire" for r in history(lab, "settle-down")), 15, "the fire"
    )
    rows = history(lab, "settle-down")
    [fired] = [r for r in rows if r["verdict"] == "fire"]
    assert [r["reason"][:8] for r in rows if r["verdict"] == "skip"] == ["pending:"] * 2
    # the reaction and its job name the event it acted on, the latest one
    assert fired["event_seq"] == latest["seq"] and fired["event_tag"] == "test/trailing"
    wait_for(lambda: history(lab, "settle-down")[0]["outcome"], 15, "the reaction to end")
    [job] = jobs_of(lab, "reactor:settle-down")
    shown = json.loads(saline(lab, "jobs", "show", job["jid"], "--out", "json").stdout)
    assert shown["job"]["args"] == [2] and shown["returns"]["fe1"]["return"] == 2, (
        shown
    )  # the latest event's data
    [ret] = [e for e in events(lab, "saline/job/*/ret/fe1") if e["rule"] == "settle-down"]
    assert ret["cause"] == latest["seq"]


def test_flapping_escalates(lab: Lab) -> None:
    rules(
        lab,
        "flap",
        """\
        - name: flappy
          on: test/flap
          do:
            - run: {target: fe1, function: test.ping}
          cooldown: 0
          flap: {max: 2, window: 10m}
        """,
    )
    reload(lab)
    for n in range(4):
        fire(lab, "test/flap", {})
        wait_for(lambda n=n: len(history(lab, "flappy")) == n + 1, 10, "decided")
        wait_for(lambda: all(r["outcome"] for r in history(lab, "flappy")), 15, "finished")
    verdicts = [r["verdict"] for r in reversed(history(lab, "flappy"))]
    assert verdicts[:2] == ["fire", "fire"] and "escalate" in verdicts[2:]
    [escalated, *_] = events(lab, "saline/reactor/flappy/escalated")
    # it says what the last fix found, so the human it reaches need not dig for it
    reason = escalated["data"]["reason"]
    assert reason.startswith("flapping: 2 firings for key 'test/flap'"), reason
    assert re.search(r"; the last fix \(ok\): job \d+ \(test\.ping\): 1 succeeded$", reason)


def test_forget_lets_a_flapping_rule_act_again(lab: Lab) -> None:
    rules(
        lab,
        "forget",
        """\
        - name: forgetful
          on: test/forget
          do:
            - run: {target: fe1, function: test.ping}
          cooldown: 0
          flap: {max: 1, window: 10m}
        """,
    )
    reload(lab)
    for n in range(2):
        fire(lab, "test/forget", {})
        wait_for(lambda n=n: len(history(lab, "forgetful")) == n + 1, 10, "decided")
        wait_for(lambda: all(r["outcome"] for r in history(lab, "forgetful")), 15, "finished")
    assert history(lab, "forgetful")[0]["verdict"] == "escalate"
    proc = saline(lab, "reactor", "forget", "--rule", "forgetful")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "forgot the history of 1 rule key(s) for rule 'forgetful'"
    fire(lab, "test/forget", {})
    wait_for(lambda: len(history(lab, "forgetful")) == 3, 10, "decided after forgetting")
    assert history(lab, "forgetful")[0]["verdict"] == "fire"
    denied = saline(lab, "reactor", "forget", "--rule", "x" * 200)
    assert denied.returncode != 0 and "rule" in denied.stderr, denied.stderr


def test_pause_resume_and_approval(lab: Lab) -> None:
    rules(
        lab,
        "approve",
        """\
        - name: needs-ok
          on: test/approve
          mode: approve
          do:
            - run: {target: fe2, function: test.ping}
          cooldown: 0
        """,
    )
    reload(lab)
    assert saline(lab, "reactor", "pause").returncode == 0
    fire(lab, "test/approve", {})
    wait_for(lambda: history(lab, "needs-ok"), 10, "decided while paused")
    assert history(lab, "needs-ok")[0]["reason"] == "paused"
    assert saline(lab, "reactor", "resume").returncode == 0
    fire(lab, "test/approve", {})
    wait_for(lambda: len(history(lab, "needs-ok")) == 2, 10, "held")
    held = history(lab, "needs-ok")[0]
    assert held["verdict"] == "await_approval" and jobs_of(lab, "reactor:needs-ok") == []
    # the 12 characters `reactor history` prints are enough
    proc = saline(lab, "reactor", "approve", held["id"][:12])
    assert proc.returncode == 0 and proc.stdout.startswith("fire"), proc.stdout + proc.stderr
    wait_for(lambda: jobs_of(lab, "reactor:needs-ok"), 15, "approved job ran")
    fire(lab, "test/approve", {})
    wait_for(lambda: len(history(lab, "needs-ok")) == 3, 10, "held again")
    again = history(lab, "needs-ok")[0]
    assert again["verdict"] == "await_approval"
    proc = saline(lab, "reactor", "reject", again["id"][:12])
    assert proc.returncode == 0, proc.stderr
    assert (
        again["id"]
        not in json.loads(saline(lab, "status", "--out", "json").stdout)["reactor"][
            "awaiting_approval"
        ]
    )


def test_bad_rule_file_keeps_the_old_rules(lab: Lab) -> None:
    rules(lab, "kept", "- name: kept-rule\n  on: test/kept\n  do: [{fire: {tag: test/k}}]\n")
    reload(lab)

    def loaded() -> list[str]:
        listed = json.loads(saline(lab, "reactor", "list", "--out", "json").stdout)
        return sorted(r["name"] for r in listed["rules"])

    before = loaded()
    assert "kept-rule" in before
    rules(lab, "zz-broken", "- name: broken\n  on: x\n  do: [{run: {target: be1}}]\n")
    proc = saline(lab, "reactor", "reload")
    assert proc.returncode == 1 and "zz-broken.yaml:3" in proc.stderr
    assert f"kept the {len(before)} loaded rules" in proc.stderr, proc.stderr
    assert loaded() == before  # the operator's rule among them, the broken one not
    (lab.directory / "reactors" / "zz-broken.yaml").unlink()
    (lab.directory / "reactors" / "kept.yaml").unlink()
    reload(lab)


def test_minion_event_namespaces_and_rate_limit(lab: Lab) -> None:
    public, secret = zmq.curve_keypair()
    KeyRing(lab.directory / "master" / "pki").add("noisy", public.decode(), KeyState.ACCEPTED)
    wait_for(lambda: "noisy" in status(lab)["keys"]["accepted"], 10, "the master knows the key")
    ctx: zmq.Context[Any] = zmq.Context()
    dealer = Dealer(ctx, lab, public, secret).connect()
    try:
        before = status(lab)["refusals"]
        for n, tag in enumerate(
            ["saline/job/123/new", "saline/key/x/pending", "chef/backend/be1/x"]
        ):
            dealer.send(Event(id="noisy", eid=f"bad-{n}", tag=tag))
        wait_for(
            lambda: status(lab)["refusals"].get("event_tag", 0) >= before.get("event_tag", 0) + 3,
            10,
            "forbidden tags refused",
        )
        assert not events(lab, "saline/job/123/*") and not events(lab, "chef/backend/be1/*")
        for n in range(800):
            dealer.send(Event(id="noisy", eid=f"{n:06d}", tag="minion/noisy/tick"))
        wait_for(lambda: status(lab)["refusals"].get("event_rate", 0) > 0, 10, "rate limited")
        assert len(events(lab, "saline/minion/noisy/rate_limited")) == 1
        stored = events(lab, "minion/noisy/tick")
        assert 0 < len(stored) < 800
        assert {e["minion"] for e in stored} == {"noisy"}, "the master stamps the sender"
    finally:
        dealer.close()
        ctx.destroy(linger=0)
        KeyRing(lab.directory / "master" / "pki").delete("noisy")
    assert online(lab) >= {"be1", "fe1"}


def test_master_killed_mid_reaction_completes_once(fresh_lab: Lab) -> None:
    lab = fresh_lab
    rules(
        lab,
        "slow",
        """\
        - name: slow-fix
          on: test/slow
          do:
            - run: {target: be1, function: test.sleep, args: [2]}
            - fire: {tag: test/slow-done}
        """,
    )
    reload(lab)
    fire(lab, "test/slow", {})
    wait_for(
        lambda: history(lab, "slow-fix") and history(lab, "slow-fix")[0]["progress"].get("0"),
        10,
        "the first action started",
    )
    os.kill(int(lab.state["master"]["pid"]), signal.SIGKILL)
    lab.start_master()
    wait_for(lambda: "be1" in online(lab), 20, "master back")
    wait_for(lambda: history(lab, "slow-fix")[0]["outcome"] == "ok", 30, "completed")
    assert len(jobs_of(lab, "reactor:slow-fix")) == 1, "the job was not sent twice"
    assert len(events(lab, "test/slow-done")) == 1, "the rest ran exactly once"


def test_status_shows_the_cluster_view(beacon_lab: Lab) -> None:
    lab = beacon_lab
    wait_for(lambda: status(lab)["observations"].get("be2", {}).get("service"), 20, "seen")
    report = status(lab)
    assert report["observations"]["be2"]["service"] in ("running", "stopped")
    assert report["reactor"]["paused"] is False
    proc = saline(lab, "status")
    assert proc.returncode == 0 and "be2: service=" in proc.stdout


def test_orchestrate_batches_and_stops_at_the_first_failed_batch(lab: Lab, tmp_path: Path) -> None:
    log = tmp_path / "order"
    script = f"echo $SALINE_MINION_ID >> {log}; test $SALINE_MINION_ID != {{{{ vars.fail_on }}}}"
    book = lab.directory / "runbooks" / "rollout.yaml"
    book.parent.mkdir(exist_ok=True)
    book.write_text(
        textwrap.dedent(
            f"""\
            name: rollout
            vars: {{fail_on: none}}
            steps:
              - name: one at a time
                run:
                  target: "*"
                  function: cmd.run
                  args: ['{script}']
                  kwargs: {{shell: true}}
                batch: 1
              - name: after
                run: {{target: be1, function: test.ping}}
            """
        )
    )
    proc = saline(lab, "orchestrate", "rollout")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert log.read_text().split() == ["be1", "be2", "fe1", "fe2"], "sorted, one at a time"
    log.unlink()
    proc = saline(lab, "orchestrate", "rollout", "--var", "fail_on=be2", "--out", "json")
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert log.read_text().split() == ["be1", "be2"], "no batch after the failed one"
    assert result["stopped_at"] == "one at a time" and result["not_started"] == ["after"]
    proc = saline(lab, "orchestrate", "rollout", "--test")
    assert proc.returncode == 0 and not log.read_text().split()[2:], "test mode runs nothing"


def test_master_side_check_across_minions(lab: Lab) -> None:
    """A rule over the cluster view: frontends disagreeing is decided on the master."""
    rules(
        lab,
        "crossnode",
        """\
        - name: frontends-disagree
          on: saline/beacon/*/miglevel/*
          when: >-
            view.values('G@role:frontend', 'miglevel', 'sha256').values()
            | unique | list | length > 1
          do:
            - fire: {tag: chef/frontend/migration_level/drift, data: {seen: "{{ event.tag }}"}}
          cooldown: 0
        """,
    )
    reload(lab)
    fire(lab, "saline/beacon/fe1/miglevel/ok", {"key": "level", "sha256": "aaa"})
    fire(lab, "saline/beacon/fe2/miglevel/ok", {"key": "level", "sha256": "aaa"})
    wait_for(lambda: len(history(lab, "frontends-disagree")) == 2, 10, "decided")
    assert all(r["verdict"] == "skip" for r in history(lab, "frontends-disagree"))
    fire(lab, "saline/beacon/fe2/miglevel/ok", {"key": "level", "sha256": "bbb"})
    wait_for(lambda: events(lab, "chef/frontend/migration_level/drift"), 10, "drift fired")
    [drift] = events(lab, "chef/frontend/migration_level/drift")
    assert drift["data"] == {"seen": "saline/beacon/fe2/miglevel/ok"}
    assert drift["depth"] == 1 and drift["rule"] == "frontends-disagree", "the chain is stamped"
