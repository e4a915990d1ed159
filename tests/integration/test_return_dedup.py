"""No duplicate returns: the same return delivered twice to a real master (a raw CURVE
DEALER of the test's own holding an accepted key) — as after a master crash between the
store's commit and the acknowledgement, when the minion sends it again — is stored once,
announced by one ``ret`` event and counted once; both deliveries are acknowledged."""

import json
from typing import Any

from saline.keys import KeyState
from saline.lab.lab import Lab
from saline.protocol import Ack, Hello, Job, Return, Welcome
from tests.integration.peers import MakeDealer, key_in_ring
from tests.support import events, saline, status, wait_for


def _listed(lab: Lab, jid: str) -> dict[str, Any]:
    proc = saline(lab, "jobs", "list", "--out", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    rows = doc["jobs"] if isinstance(doc, dict) else doc
    [row] = [r for r in rows if r["jid"] == jid]
    return dict(row)


def test_a_return_delivered_twice_is_stored_announced_and_counted_once(
    lab: Lab, dealer: MakeDealer
) -> None:
    with key_in_ring(lab, KeyState.ACCEPTED) as (own_id, public, secret):
        d = dealer(public, secret)
        d.send(Hello(id=own_id, functions=["test.ping"]))
        assert isinstance(d.recv(), Welcome)
        wait_for(lambda: own_id in status(lab)["online"], 10, f"{own_id} online")
        started = saline(lab, "run", own_id, "test.ping", "--async")
        assert started.returncode == 0, started.stderr
        jid = started.stdout.split()[-1]
        job = d.recv()
        while not isinstance(job, Job):
            job = d.recv()
        assert job.jid == jid
        ret = Return(jid=jid, id=own_id, fun="test.ping", success=True, retcode=0, ret=True)
        acked: list[str] = []
        for _ in range(2):  # the second: a resend after an acknowledgement that was lost
            d.send(ret)
            reply = d.recv()
            while not isinstance(reply, Ack):
                reply = d.recv()
            acked += reply.jids
        assert acked == [jid, jid], "both deliveries acknowledged (the minion stops resending)"
        wait_for(lambda: _listed(lab, jid)["returned"] == 1, 10, "the return stored")
        row = _listed(lab, jid)
        assert row["returned"] == 1 and row["succeeded"] == 1, row
        rets = events(lab, f"saline/job/{jid}/ret/*")
        assert [e["tag"] for e in rets] == [f"saline/job/{jid}/ret/{own_id}"], rets
