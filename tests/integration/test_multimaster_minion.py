"""One minion, two masters: real master processes (each its own directory, SQLite store and
pki_dir holding the same master keypair) and one real minion with ``master: [m1, m2]``."""

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saline.errors import ClientError
from saline.keys import ensure_dir, read_keypair, write_keypair
from saline.lab.lab import Lab, free_port
from saline.lab.processes import alive, saline_argv, spawn
from tests.support import events, online, run_json, wait_for

MINION = "be1"


class Pair:
    """Two labs' masters sharing one keypair and one accepted minion key; m1's lab runs the
    minion, configured with both masters (m1 first: the preferred one)."""

    def __init__(self, directory: Path) -> None:
        self.m1 = Lab(directory / "m1")
        self.m2 = Lab(directory / "m2")
        self.ports = (free_port(), free_port())
        self.flag = directory / "flag"  # the file beacon watches it: an event on demand

    @property
    def minion_dir(self) -> Path:
        return self.m1.directory / "minions" / MINION

    @property
    def minion_log(self) -> Path:
        return self.m1.directory / "logs" / f"{MINION}.log"

    @property
    def spool(self) -> Path:
        return self.minion_dir / "cache" / "spool"

    def up(self) -> None:
        port1, port2 = self.ports
        minion = {
            "master": [f"127.0.0.1:{port1}", f"127.0.0.1:{port2}"],
            "beacons": {"file": {"interval": 0.2, "paths": [str(self.flag)]}},
        }
        self.m1.write_layout(1, port1, minion)
        # the second master: the same master keypair, the same minion key accepted, no
        # minion of its own (the one minion is m1's)
        m1_pki, m2_pki = self.m1.directory / "master" / "pki", self.m2.directory / "master" / "pki"
        write_keypair(ensure_dir(m2_pki), "master", read_keypair(m1_pki, "master"))
        minion_pki = self.minion_dir / "pki"
        m2_minion_pki = ensure_dir(self.m2.directory / "minions" / MINION / "pki")
        write_keypair(m2_minion_pki, "minion", read_keypair(minion_pki, "minion"))
        self.m2.write_layout(1, port2, None)
        self.m2.state["minions"] = {}
        self.m2.save()
        self.m1.start_master()
        self.m2.start_master()
        config = self.m1.state["minions"][MINION]["config"]
        pid = spawn(saline_argv(Path(config), "minion"), self.m1.directory / "logs" / "be1.out")
        self.m1.state["minions"][MINION].update({"pid": pid, "marker": config})
        self.m1.save()
        self.m1.wait_online([MINION], 30)
        self.m2.wait_online([MINION], 30)

    def kill_master(self, lab: Lab) -> None:
        info = lab.state["master"]
        os.kill(int(info["pid"]), signal.SIGKILL)
        wait_for(lambda: not alive(int(info["pid"]), info["marker"]), 10, "master killed")

    def down(self) -> None:
        for lab in (self.m1, self.m2):
            if lab.state_file.exists():
                lab.down()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    the_pair = Pair(tmp_path_factory.mktemp("multimaster"))
    try:
        the_pair.up()
        yield the_pair
    finally:
        the_pair.down()


def _job_returns(lab: Lab, jid: str) -> dict[str, Any]:
    try:
        with lab.client() as master:
            returns: dict[str, Any] = master.request("job_show", jid=jid)["returns"]
            return returns
    except ClientError:
        return {}


def test_the_minion_is_online_on_both_masters(pair: Pair) -> None:
    assert MINION in online(pair.m1)
    assert MINION in online(pair.m2)
    log = pair.minion_log.read_text()
    for port in pair.ports:  # each link's readiness is logged with its master's address
        assert f"master 127.0.0.1:{port}: link ready, accepted as {MINION}" in log


@pytest.mark.parametrize("which", ["m1", "m2"])
def test_a_job_through_either_master_returns(pair: Pair, which: str) -> None:
    lab = getattr(pair, which)
    code, doc = run_json(lab, MINION, "test.echo", f"via {which}")
    assert code == 0, doc
    assert doc["returns"][MINION]["return"] == f"via {which}"
    assert doc["missing"] == []


def test_master_one_killed_events_and_jobs_go_through_master_two(pair: Pair) -> None:
    m1, m2 = pair.m1, pair.m2
    pair.kill_master(m1)
    wait_for(
        lambda: f"master 127.0.0.1:{pair.ports[0]}: link lost" in pair.minion_log.read_text(),
        10,
        "the minion to notice master 1 is gone",
    )
    # an event the minion fires now reaches master 2, the preferred master being away
    pair.flag.write_text("up\n")
    tag = f"saline/beacon/{MINION}/file/present"
    wait_for(lambda: events(m2, tag), 15, "the beacon's event stored on master 2")
    code, doc = run_json(m2, MINION, "test.ping")
    assert code == 0 and doc["returns"][MINION]["return"] is True
    wait_for(lambda: not any((pair.spool / "events").glob("*.evt")), 10, "event spool drained")
    # master 1 back: the same minion process is online on both again (it was never restarted)
    pid = int(m1.state["minions"][MINION]["pid"])
    m1.start_master()
    wait_for(lambda: MINION in online(m1), 20, "the minion back on master 1")
    assert alive(pid, m1.state["minions"][MINION]["marker"])


def test_a_stopped_master_is_noticed_and_passed_over(pair: Pair) -> None:
    m1, m2 = pair.m1, pair.m2
    wait_for(lambda: MINION in online(m1) and MINION in online(m2), 20, "both links up")
    lost = f"master 127.0.0.1:{pair.ports[0]}: link lost"
    ready = f"master 127.0.0.1:{pair.ports[0]}: link ready"
    losses, readies = (pair.minion_log.read_text().count(s) for s in (lost, ready))
    pid = int(m1.state["master"]["pid"])
    os.kill(pid, signal.SIGSTOP)  # no RST: only the ZMTP heartbeat timeout tells
    try:
        wait_for(
            lambda: pair.minion_log.read_text().count(lost) > losses,
            15,
            "the minion to give up on the stopped master 1",
        )
        pair.flag.write_text("changed\n")
        tag = f"saline/beacon/{MINION}/file/changed"
        wait_for(lambda: events(m2, tag), 15, "the beacon's event stored on master 2")
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: pair.minion_log.read_text().count(ready) > readies, 20, "master 1 ready again")


def test_a_return_made_while_both_masters_are_down_reaches_its_master(pair: Pair) -> None:
    m1, m2 = pair.m1, pair.m2
    wait_for(lambda: MINION in online(m1) and MINION in online(m2), 20, "both links up")
    with m2.client(timeout=30) as master:
        master.send("run", target=MINION, tgt_type="glob", fun="test.sleep", args=[2], timeout=20)
        job = master.receive()
        assert job["type"] == "job" and job["minions"] == [MINION]
        jid = job["jid"]
    wait_for(lambda: f"job {jid} from" in pair.minion_log.read_text(), 10, "the job running")
    pair.kill_master(m2)
    pair.kill_master(m1)
    spooled = pair.spool / f"{jid}.ret"
    wait_for(spooled.exists, 15, "the return spooled while no master is up")
    # master 2 (the job's, whose store has the job) back first: the return goes there
    m2.start_master()
    wait_for(lambda: MINION in _job_returns(m2, jid), 20, "the return stored on master 2")
    ret = _job_returns(m2, jid)[MINION]
    assert ret["success"] and ret["return"] is True
    wait_for(lambda: not spooled.exists(), 10, "the return acknowledged and unspooled")
    m1.start_master()
    wait_for(lambda: MINION in online(m1), 20, "the minion back on master 1")
