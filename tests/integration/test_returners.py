"""The Elasticsearch returner on a real master (real minions, the official client over HTTP
to the stand-in): Elasticsearch goes away for 30 s while events and job returns keep
coming; the master keeps serving; when it is back every document arrives, once."""

import time
from pathlib import Path

from saline.lab.es_standin import EsStandin
from saline.lab.lab import Lab, free_port
from tests.support import run_json, status, wait_for

OUTAGE = 30.0


def _fire(lab: Lab, tag: str) -> int:
    with lab.client() as master:
        seq: int = master.request("fire", tag=tag, data={"n": tag})["seq"]
    return seq


def _returner(lab: Lab) -> dict[str, object]:
    found: dict[str, object] = status(lab)["returners"]["es"]
    return found


def test_elasticsearch_away_for_30_s_then_back_every_document_arrives_once(
    tmp_path: Path,
) -> None:
    port = free_port()
    es = EsStandin(version="9.1.0")
    es.start("127.0.0.1", port)
    returner = {"name": "es", "kind": "elasticsearch", "hosts": [f"http://127.0.0.1:{port}"]}
    lab = Lab(tmp_path / "lab")
    lab.up(2, timeout=60, extra_master={"returners": [returner]})
    docs = es.documents
    try:
        seqs = [_fire(lab, f"test/ret/before/{n}") for n in range(10)]
        code, before = run_json(lab, "*", "test.ping")
        assert code == 0
        wait_for(
            lambda: {str(s) for s in seqs} <= set(docs.indices.get("saline-events", {})),
            15,
            "the first events in Elasticsearch",
        )
        es.stop()
        outage_end = time.monotonic() + OUTAGE
        jids = [before["jid"]]
        while time.monotonic() < outage_end:  # the cluster goes on while ES is away
            seqs.append(_fire(lab, f"test/ret/during/{len(seqs)}"))
            if len(seqs) % 20 == 0:
                code, during = run_json(lab, "*", "test.ping")
                assert code == 0, "the master serves while Elasticsearch is away"
                jids.append(during["jid"])
        held = _returner(lab)
        assert held["last_error"] and int(str(held["queued"])) > 0, held
        es.start("127.0.0.1", port)
        seqs.append(_fire(lab, "test/ret/after"))
        wait_for(lambda: _returner(lab)["queued"] == 0, 60, "the returner's queue drained")
        events = docs.indices["saline-events"]
        assert {str(s) for s in seqs} <= set(events), "an event was lost"
        returns = docs.indices["saline-returns"]
        wanted = {f"{jid}:{m}" for jid in jids for m in lab.state["minions"]}
        assert wanted <= set(returns), "a job return was lost"
        assert set(docs.writes.values()) == {1}, "a document was written twice"
        assert returns[f"{jids[0]}:be1"]["event"]["dataset"] == "saline.returns"
        final = _returner(lab)
        assert final["last_error"] is None and final["dropped"] == 0
    finally:
        lab.down()
        es.stop()
