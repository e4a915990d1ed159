"""Losing the leader of three masters in the middle of a runbook (real PostgreSQL, etcd,
masters and minions): the next leader resumes it on its journal, step by step. No step's job
runs twice (each step appends a line per minion to its own file), and the runbook completes.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from master.store.rows import unpack_value
from saline.lab.masters import MastersLab
from tests.integration.test_failover import all_back, fire, leader, masters_lab, rows
from tests.support import wait_for

STEPS = 3

RULES = """\
- name: ha-runbook
  on: test/ha/runbook
  cooldown: 0
  do: [{orchestrate: {runbook: ha/steps}}]
"""


def runbook(marks: Path) -> str:
    steps = "\n".join(
        f"""\
  - name: step {n}
    run:
      target: "*"
      function: cmd.run
      args: ["echo ran >> {marks}/step{n}; sleep 3"]
      kwargs: {{shell: true}}
      timeout: 30"""
        for n in range(1, STEPS + 1)
    )
    return f"name: ha/steps\nsteps:\n{steps}\n"


def write_runbook(directory: Path) -> None:
    (directory / "runbooks" / "ha").mkdir(parents=True)
    (directory / "marks").mkdir()
    (directory / "runbooks" / "ha" / "steps.yaml").write_text(runbook(directory / "marks"))


@pytest.fixture(scope="module")
def ha() -> Iterator[MastersLab]:
    with masters_lab(RULES, prepare=write_runbook) as lab:
        yield lab


def test_a_runbook_in_flight_resumes_on_the_next_leader_without_rerunning_a_step(
    ha: MastersLab,
) -> None:
    all_back(ha)
    marks = ha.directory / "marks"
    for old_mark in marks.iterdir():
        old_mark.unlink()
    old = leader(ha)
    assert old is not None
    standby = next(n for n in ha.state["masters"] if n != old)
    seq = fire(ha, standby, "test/ha/runbook")
    jobs = f"SELECT jid FROM jobs WHERE rule = 'ha-runbook' AND cause = {seq} ORDER BY created"
    journal = f"SELECT progress FROM reactions WHERE rule = 'ha-runbook' AND event_seq = {seq}"

    def journaled() -> int:
        found = rows(ha, journal)
        progress = unpack_value(bytes(found[0][0])) if found else {}
        return len((progress.get("0") or {}).get("jids") or [])

    wait_for(lambda: journaled() >= 2, 30, "the runbook's second step journaled and sent")
    ha.fault("master-kill", old)
    assert not (marks / f"step{STEPS}").exists(), "killed before the last step started"
    outcome = f"SELECT outcome FROM reactions WHERE rule = 'ha-runbook' AND event_seq = {seq}"
    wait_for(lambda: rows(ha, outcome)[0][0] is not None, 90, "the reaction to finish")
    [(result, progress)] = rows(ha, outcome.replace("outcome", "outcome, progress", 1))
    assert result == "ok", unpack_value(bytes(progress))
    detail = unpack_value(bytes(progress))["0"]["detail"]
    assert "journaled job(s) awaited, not resent" in detail, "resumed by the next leader"
    assert leader(ha) not in (None, old)
    sent = [jid for (jid,) in rows(ha, jobs)]
    assert len(sent) == STEPS, f"one job per step, none resent: {sent}"
    for n in range(1, STEPS + 1):  # every step ran once on each of the two minions
        assert (marks / f"step{n}").read_text().splitlines() == ["ran", "ran"], f"step {n}"
    for jid in sent:
        returned = rows(ha, f"SELECT minion FROM returns WHERE jid = '{jid}'")
        assert sorted(m for (m,) in returned) == ["be1", "fe1"], f"job {jid}'s returns"
    all_back(ha)
