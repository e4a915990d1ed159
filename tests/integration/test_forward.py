"""The reactor's switches asked of a standby are done by the leader (real PostgreSQL, etcd,
three masters, minions): the request and the answer travel through the shared store."""

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from saline.lab.masters import MastersLab
from tests.integration.test_failover import all_back, fire, leader, masters_lab, rows
from tests.support import wait_for

RULES = """\
- name: fw-held
  on: test/fw/held
  mode: approve
  cooldown: 0
  do: [{fire: {tag: "test/fw/approved"}}]
"""


@pytest.fixture(scope="module")
def ha() -> Iterator[MastersLab]:
    with masters_lab(RULES, minions=1) as lab:
        yield lab


def cli(lab: MastersLab, master: str, *args: str) -> "subprocess.CompletedProcess[str]":
    """The real CLI on ``master``'s host (its own ``master.yaml``)."""
    env = {**os.environ, "SALINE_CONFIG": str(lab.state["masters"][master]["config"])}
    return subprocess.run(
        [sys.executable, "-m", "saline.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def paused_on(lab: MastersLab, master: str) -> bool:
    return bool(((lab.ask(master) or {}).get("reactor") or {}).get("paused"))


def test_pause_and_resume_on_a_standby_switch_the_leaders_reactor(ha: MastersLab) -> None:
    all_back(ha)
    lead = leader(ha)
    assert lead is not None
    standby = next(n for n in ha.state["masters"] if n != lead)
    paused = cli(ha, standby, "reactor", "pause")
    assert paused.returncode == 0, paused.stderr
    try:
        assert paused_on(ha, lead), "the leader's reactor is paused"
        assert paused_on(ha, standby), "the standby shows the state in use, the leader's"
    finally:
        resumed = cli(ha, standby, "reactor", "resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not paused_on(ha, lead)


def test_a_reaction_held_for_approval_is_approved_on_a_standby(ha: MastersLab) -> None:
    all_back(ha)
    lead = leader(ha)
    assert lead is not None
    standby = next(n for n in ha.state["masters"] if n != lead)
    seq = fire(ha, standby, "test/fw/held")
    held = f"SELECT id FROM reactions WHERE rule = 'fw-held' AND event_seq = {seq}"
    wait_for(lambda: rows(ha, held), 15, "the reaction held for approval")
    [(reaction,)] = rows(ha, held)
    listed = cli(ha, standby, "reactor", "list", "--out", "json")
    assert listed.returncode == 0 and reaction in listed.stdout, "the standby lists the held one"
    approved = cli(ha, standby, "reactor", "approve", reaction[:12])
    assert approved.returncode == 0, approved.stderr
    assert "fire" in approved.stdout.lower(), approved.stdout
    outcome = f"SELECT outcome, epoch FROM reactions WHERE id = '{reaction}'"
    wait_for(lambda: rows(ha, outcome)[0][0] is not None, 15, "the approved reaction to finish")
    assert rows(ha, outcome)[0][0] == "ok"
    fired = rows(ha, "SELECT count(*) FROM events WHERE tag = 'test/fw/approved'")
    assert fired == [(1,)], "the approved action ran once"
    again = cli(ha, standby, "reactor", "approve", reaction)
    assert again.returncode != 0, "approving twice is refused by the leader"


def test_an_operator_cannot_fire_a_masters_request(ha: MastersLab) -> None:
    """Only masters write ``saline/master/...`` (minions: see test_intake)."""
    all_back(ha)
    lead = leader(ha)
    assert lead is not None
    standby = next(n for n in ha.state["masters"] if n != lead)
    forged = cli(ha, standby, "fire", "saline/master/request/abc")
    assert forged.returncode != 0 and "reserved" in forged.stderr, forged.stderr


def test_events_followed_on_one_master_show_those_stored_by_another(ha: MastersLab) -> None:
    all_back(ha)
    first, second = sorted(ha.state["masters"])[:2]
    with ha.client(first, timeout=15) as master:
        master.send("events", tag="test/fw/seen/*", follow=True)
        assert master.receive()["type"] == "subscribed"
        seq = fire(ha, second, "test/fw/seen/one")
        event = master.receive()
    assert event["type"] == "event" and event["tag"] == "test/fw/seen/one"
    assert event["seq"] == seq
