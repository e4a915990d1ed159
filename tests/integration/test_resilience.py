"""Nothing is lost: master killed with -9 mid-job, minions surviving hostile functions."""

import os
import signal
import time
from collections import Counter
from pathlib import Path

from saline.errors import ClientError
from saline.lab.lab import Lab
from saline.lab.processes import alive, saline_argv, spawn
from tests.support import events, online, run_json, saline, wait_for


def _job_returns(lab: Lab, jid: str) -> dict[str, dict[str, object]]:
    try:
        with lab.client() as master:
            returns: dict[str, dict[str, object]] = master.request("job_show", jid=jid)["returns"]
            return returns
    except ClientError:
        return {}


def _got_job(lab: Lab, minion_id: str, jid: str) -> bool:
    return f"job {jid}" in (lab.directory / "logs" / f"{minion_id}.log").read_text()


def test_master_kill9_loses_no_return_and_duplicates_none(fresh_lab: Lab) -> None:
    lab = fresh_lab
    minions = {"be1", "be2", "fe1"}
    with lab.client(timeout=30) as master:
        master.send("run", target="*", tgt_type="glob", fun="test.sleep", args=[1.5], timeout=20)
        job = master.receive()
        assert job["type"] == "job" and set(job["minions"]) == minions
        assert master.receive()["type"] == "sent"
        jid = job["jid"]
        # every minion is running the job: kill the master before any return lands
        wait_for(lambda: all(_got_job(lab, m, jid) for m in minions), 10, "job on every minion")
        os.kill(int(lab.state["master"]["pid"]), signal.SIGKILL)
    # the minions finish while no master listens; their returns wait in the spools
    spools = [lab.directory / "minions" / m / "cache" / "spool" / f"{jid}.ret" for m in minions]
    wait_for(lambda: all(p.exists() for p in spools), 15, "returns spooled on every minion")
    lab.start_master()
    wait_for(lambda: online(lab) == minions, 20, "minions back after master restart")
    wait_for(lambda: set(_job_returns(lab, jid)) == minions, 20, "every return stored")
    returns = _job_returns(lab, jid)
    assert all(r["success"] and r["return"] is True for r in returns.values())
    # acknowledged returns leave the spool; each return was published exactly once
    wait_for(lambda: not any(p.exists() for p in spools), 15, "spools drained by acks")
    ret_events = Counter(e["tag"] for e in events(lab, f"saline/job/{jid}/ret/*"))
    assert ret_events == Counter({f"saline/job/{jid}/ret/{m}": 1 for m in minions})


def test_master_restart_keeps_serving_new_jobs(fresh_lab: Lab) -> None:
    lab = fresh_lab
    os.kill(int(lab.state["master"]["pid"]), signal.SIGKILL)
    lab.start_master()
    wait_for(lambda: online(lab) == {"be1", "be2", "fe1"}, 20, "minions reconnect")
    code, doc = run_json(lab, "*", "test.ping")
    assert code == 0 and len(doc["returns"]) == 3


def test_minion_survives_raise_hang_and_huge_output(fresh_lab: Lab) -> None:
    lab = fresh_lab
    pid_before = int(lab.state["minions"]["be1"]["pid"])

    code, doc = run_json(lab, "be1", "test.sleep", "not-a-number")
    ret = doc["returns"]["be1"]
    assert code == 11 and ret["success"] is False
    assert ret["return"]["error"] == "execution_error"

    code, doc = run_json(lab, "be1", "test.echo", "one", "two", "three")
    assert code == 11 and doc["returns"]["be1"]["return"] == {
        "error": "bad_arguments",
        # the operator's three arguments, not Python's count with the context in it
        "message": "test.echo TEXT: too many positional arguments; you gave 3:"
        " 'one', 'two', 'three'",
    }

    # a function no minion has: refused before anything is sent, with a suggestion
    proc = saline(lab, "run", "be1", "test.pnig")
    assert proc.returncode == 1
    assert "no online minion has a function 'test.pnig' (did you mean 'test.ping'?)" in (
        proc.stderr
    )

    started = time.monotonic()
    code, doc = run_json(lab, "be1", "test.sleep", "600", "timeout=3", "-t", "1")
    assert code == 12 and doc["timed_out"] == ["be1"]
    # the minion killed the hung function at its own limit (timeout=3, not the CLI's -t 1,
    # after which the CLI stopped waiting) and still reports it
    wait_for(
        lambda: _job_returns(lab, doc["jid"]).get("be1"), 15, "late timeout return of the hang"
    )
    late = _job_returns(lab, doc["jid"])["be1"]
    assert late["success"] is False and late["return"]["error"] == "timeout"  # type: ignore[index]
    assert time.monotonic() - started < 600

    code, doc = run_json(
        lab, "be1", "cmd.run", "head -c 10000000 /dev/zero | tr '\\0' x", "shell=true"
    )
    assert code == 0
    assert len(doc["returns"]["be1"]["return"]["stdout"]) == 10_000_000

    code, doc = run_json(lab, "be1", "test.ping")
    assert code == 0
    assert int(lab.state["minions"]["be1"]["pid"]) == pid_before
    assert "be1" in online(lab)
    assert events(lab, "saline/minion/be1/lost") == []


def test_minion_restart_resends_spooled_returns(fresh_lab: Lab) -> None:
    """A return finished while the master is down survives a minion restart too."""
    lab = fresh_lab
    with lab.client(timeout=30) as master:
        master.send("run", target="fe1", tgt_type="glob", fun="test.sleep", args=[1], timeout=20)
        job = master.receive()
        assert master.receive()["type"] == "sent"
        wait_for(lambda: _got_job(lab, "fe1", job["jid"]), 10, "job on fe1")
        os.kill(int(lab.state["master"]["pid"]), signal.SIGKILL)
    spool = lab.directory / "minions" / "fe1" / "cache" / "spool" / f"{job['jid']}.ret"
    wait_for(spool.exists, 15, "return spooled")
    # restart the minion too: the spool is on disk, not in memory
    info = lab.state["minions"]["fe1"]
    os.kill(int(info["pid"]), signal.SIGTERM)
    wait_for(lambda: not alive(int(info["pid"]), info["marker"]), 15, "fe1 stopped")
    info["pid"] = spawn(saline_argv(Path(info["marker"]), "minion"), lab.directory / "fe1.out")
    lab.save()
    lab.start_master()
    wait_for(lambda: _job_returns(lab, job["jid"]).get("fe1"), 20, "spooled return delivered")
    wait_for(lambda: not spool.exists(), 15, "spool drained")
