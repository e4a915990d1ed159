"""Losing the leader of three masters (real PostgreSQL, etcd, masters and minions): a
reaction in flight completes through the next leader without its job sent twice, an event
storm is stored and decided once per event, and a paused leader that wakes up acts no more.
"""

import contextlib
import shutil
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2  # type: ignore[import-untyped]
import pytest

from saline.lab.masters import MastersLab
from tests.support import wait_for

RULES = """\
- name: ha-fanout
  on: test/ha/fanout
  cooldown: 0
  do: [{run: {target: "*", function: test.sleep, args: [3]}}]
- name: ha-storm
  on: test/ha/storm/*
  cooldown: 0
  do: [{fire: {tag: "test/ha/answered"}}]
"""


@contextlib.contextmanager
def masters_lab(
    rules: str, minions: int = 2, prepare: Callable[[Path], None] | None = None
) -> Iterator[MastersLab]:
    """Three masters on a real PostgreSQL store and leader etcd, loading ``rules``;
    ``prepare`` is given the lab's directory before anything starts (runbooks, files)."""
    base = Path(tempfile.mkdtemp(prefix="saline-failover-"))
    base.chmod(0o711)  # the postgres user must reach the store's data directory
    lab = MastersLab(base / "lab")
    (lab.directory / "reactors").mkdir(parents=True)
    (lab.directory / "reactors" / "rules.yaml").write_text(textwrap.dedent(rules))
    if prepare is not None:
        prepare(lab.directory)
    lab.up(minions, masters=3, timeout=90)
    try:
        yield lab
    finally:
        lab.down()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def ha() -> Iterator[MastersLab]:
    with masters_lab(RULES) as lab:
        yield lab


def leader(lab: MastersLab) -> str | None:
    leading = [
        name
        for name in lab.state["masters"]
        if ((lab.ask(name) or {}).get("leadership") or {}).get("leading")
    ]
    return leading[0] if len(leading) == 1 else None


def rows(lab: MastersLab, query: str) -> list[tuple[Any, ...]]:
    dsn = Path(lab.state["store"]["dsn_file"]).read_text().strip()
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return list(cur.fetchall())
    finally:
        conn.close()


def fire(lab: MastersLab, via: str, tag: str) -> int:
    with lab.client(via, timeout=5) as master:
        seq: int = master.request("fire", tag=tag, data={})["seq"]
    return seq


def all_back(lab: MastersLab) -> None:
    """Every master running and answering, one of them leading."""
    running = lab.lab.running()  # not "does not answer": a busy master answers late
    for name in lab.state["masters"]:
        if not running.get(name, False):
            lab.fault("master-start", name)
    wait_for(lambda: all(lab.ask(n) for n in lab.state["masters"]), 30, "all masters up")
    wait_for(lambda: leader(lab), 30, "one leader")


def test_a_reaction_in_flight_completes_through_the_next_leader(ha: MastersLab) -> None:
    all_back(ha)
    old = leader(ha)
    assert old is not None
    standby = next(n for n in ha.state["masters"] if n != old)
    seq = fire(ha, standby, "test/ha/fanout")
    query = f"SELECT jid FROM jobs WHERE rule = 'ha-fanout' AND cause = {seq}"

    def journaled() -> bool:
        """The job's jid in the reaction's progress: from there on the job is sent, and a
        next leader awaits it (a job stored but not yet journaled was never sent: the next
        leader would start its own, rightly)."""
        jobs = rows(ha, query)
        if not jobs:
            return False
        named = (
            f"SELECT 1 FROM reactions WHERE rule = 'ha-fanout' AND event_seq = {seq} "
            f"AND position(convert_to('{jobs[0][0]}', 'UTF8') in progress) > 0"
        )
        return bool(rows(ha, named))

    wait_for(journaled, 15, "the reaction's job journaled (and so sent)")
    ha.fault("master-kill", old)
    outcome = f"SELECT outcome, epoch FROM reactions WHERE rule = 'ha-fanout' AND event_seq = {seq}"
    wait_for(lambda: rows(ha, outcome)[0][0] is not None, 40, "the reaction to finish")
    [(result, _)] = rows(ha, outcome)
    assert result == "ok"
    [(jid,)] = rows(ha, query)  # the new leader awaited the job: it did not send another
    returned = rows(ha, f"SELECT minion FROM returns WHERE jid = '{jid}'")
    assert sorted(m for (m,) in returned) == ["be1", "fe1"], "every minion's return stored"
    assert leader(ha) not in (None, old)
    all_back(ha)


def test_an_event_storm_across_a_failover_is_decided_once_per_event(ha: MastersLab) -> None:
    all_back(ha)
    old = leader(ha)
    assert old is not None
    standby = next(n for n in ha.state["masters"] if n != old)
    seqs = [fire(ha, standby, f"test/ha/storm/{n}") for n in range(100)]
    ha.fault("master-kill", old)
    seqs += [fire(ha, standby, f"test/ha/storm/{n}") for n in range(100, 200)]
    decided = "SELECT event_seq FROM reactions WHERE rule = 'ha-storm'"
    wait_for(
        lambda: {s for (s,) in rows(ha, decided)} >= set(seqs), 40, "every storm event decided"
    )
    got = [s for (s,) in rows(ha, decided) if s in set(seqs)]
    assert len(got) == len(set(got)) == 200, "an event was decided twice or not at all"
    stored = rows(ha, "SELECT count(*) FROM events WHERE tag LIKE 'test/ha/storm/%'")
    assert stored == [(200,)], "an event was stored twice or lost"
    all_back(ha)


def test_a_paused_leader_wakes_as_a_standby_and_acts_no_more(ha: MastersLab) -> None:
    all_back(ha)
    old = leader(ha)
    assert old is not None
    old_epoch = (ha.ask(old) or {})["leadership"]["epoch"]
    ha.fault("master-pause", old)
    paused_at = time.time()
    try:
        wait_for(lambda: leader(ha) not in (None, old), 20, "another master to lead")
    finally:
        ha.fault("master-resume", old)
    new = leader(ha)
    assert new is not None and new != old
    wait_for(
        lambda: ((ha.ask(old) or {}).get("leadership") or {}).get("leader") == new,
        10,
        "the woken master to know who leads now",
    )
    lead = (ha.ask(old) or {})["leadership"]
    assert not lead["leading"] and lead["epoch"] > old_epoch
    # nothing written with the old epoch after the pause: no decision, no job
    late = f"SELECT count(*) FROM reactions WHERE epoch = {old_epoch} AND created > {paused_at}"
    assert rows(ha, late) == [(0,)]
    seq = fire(ha, old, "test/ha/storm/after-pause")  # through the woken master
    decided = f"SELECT epoch FROM reactions WHERE event_seq = {seq}"
    wait_for(lambda: rows(ha, decided), 15, "the new leader to decide it")
    assert rows(ha, decided) == [(lead["epoch"],)]
    all_back(ha)
