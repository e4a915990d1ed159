"""Notifications from a real lab master to a real local HTTP server."""

import hashlib
import hmac
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from saline.lab.lab import Lab
from tests.endpoints import HttpSink, http_sink
from tests.integration.test_metrics import scrape, value
from tests.integration.test_reactor import fire, history, reload, rules
from tests.support import events, restart_master, saline, status, wait_for

SECRET = "lab-hmac-secret"


@pytest.fixture
def sink() -> Iterator[HttpSink]:
    with http_sink() as s:
        yield s


@pytest.fixture
def notify_lab(tmp_path: Path, sink: HttpSink) -> Iterator[Lab]:
    lab = Lab(tmp_path / "lab")
    target = {"name": "hook", "kind": "webhook", "url": sink.url, "secret": SECRET}
    lab.up(1, timeout=60, extra_master={"notify": [target]})
    yield lab
    lab.down()


def test_an_escalation_notifies_once_across_a_master_restart(
    notify_lab: Lab, sink: HttpSink
) -> None:
    lab = notify_lab
    rules(
        lab,
        "nowhere",
        """\
        - name: nowhere
          on: test/nowhere
          do:
            - run: {target: no-such-minion, function: test.ping}
        - name: tell
          on: test/tell
          do:
            - notify: {target: hook, message: "told {{ event.data.n }}"}
        """,
    )
    reload(lab)
    fire(lab, "test/nowhere", {"n": 1})
    wait_for(lambda: sink.requests, 20, "the first notification")
    [first] = sink.requests
    signed = hmac.new(SECRET.encode(), first.body, hashlib.sha256).hexdigest()
    assert first.headers["X-Saline-Signature"] == f"sha256={signed}"
    body = first.json()
    assert body["kind"] == "escalated" and body["rule"] == "nowhere"
    assert body["reaction"] == history(lab, "nowhere")[0]["id"]
    assert "matches no accepted minion" in body["reason"]
    assert body["event"]["tag"] == "test/nowhere" and body["event"]["data"] == {"n": 1}
    journal = Path(lab.directory / "master" / "data" / "notify.json")
    wait_for(lambda: journal.exists(), 5, "the journal")
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600

    restart_master(lab)
    fire(lab, "test/nowhere", {"n": 2})
    fire(lab, "test/tell", {"n": 3})
    wait_for(lambda: len(sink.requests) >= 3, 20, "the notifications after the restart")
    # settled: every notice journaled, and the replay after the restart (which runs before
    # any live event) got past the last escalation: a resend could only come from it
    last = max(e["seq"] for e in events(lab, "saline/reactor/nowhere/escalated"))

    def settled() -> bool:
        data = json.loads(journal.read_text())
        return len(data["done"]) >= 3 and data["cursors"].get("hook", 0) >= last

    wait_for(settled, 20, "every notice delivered and journaled")
    kinds = sorted((r.json()["kind"], r.json().get("message")) for r in sink.requests)
    assert kinds == [("escalated", None), ("escalated", None), ("notify", "told 3")]
    ids = [r.headers["X-Saline-Delivery"] for r in sink.requests]
    assert len(set(ids)) == 3, ids

    rules(lab, "zz-bad", "- name: bad\n  on: x\n  do:\n    - notify: {target: pager}\n")
    proc = saline(lab, "reactor", "reload")
    assert proc.returncode == 1
    assert "zz-bad.yaml:1: rule 'bad': do.0.notify.target: no notify target 'pager'" in proc.stderr


NOTIFYING_BOOK = """\
name: tell
vars: {node: be1}
steps:
  - name: probe
    run: {target: "{{ vars.node }}", function: cmd.run, args: ["false"]}
    probe: true
  - name: page
    notify: {target: hook, message: "the probe failed on {{ vars.node }}"}
"""


def test_a_runbook_notify_step_from_a_reaction_and_by_hand(notify_lab: Lab, sink: HttpSink) -> None:
    lab = notify_lab
    (lab.directory / "runbooks").mkdir(exist_ok=True)
    (lab.directory / "runbooks" / "tell.yaml").write_text(NOTIFYING_BOOK)
    rules(
        lab,
        "tell",
        """\
        - name: tell
          on: test/tell
          do:
            - orchestrate: {runbook: tell}
        """,
    )
    reload(lab)
    fire(lab, "test/tell", {})
    wait_for(lambda: sink.requests, 30, "the runbook's notice")
    [reacted] = [r.json() for r in sink.requests]
    [row] = history(lab, "tell")
    assert sink.requests[0].headers["X-Saline-Delivery"] == f"{row['id']}/0/step2/notify/hook"
    assert reacted["kind"] == "notify" and reacted["message"] == "the probe failed on be1"
    assert reacted["reaction"] == row["id"] and reacted["event"]["tag"] == "test/tell"
    [probe] = reacted["runbook"]["steps"]
    assert reacted["runbook"]["step"] == "page" and probe["name"] == "probe"
    assert probe["result"] is False and "be1: failed" in probe["comment"]
    wait_for(lambda: history(lab, "tell")[0]["outcome"] == "ok", 30, "the reaction's end")

    proc = saline(lab, "orchestrate", "tell", "--var", "node=be1", "--out", "json")
    assert proc.returncode == 0, proc.stderr
    page = json.loads(proc.stdout)["steps"][1]
    assert (page["kind"], page["result"], page["comment"]) == (
        "notify",
        True,
        "notify hook: queued",
    )
    wait_for(lambda: len(sink.requests) == 2, 20, "the hand-run runbook's notice")
    by_hand = sink.requests[1].json()
    assert by_hand["rule"] == "runbook/tell" and by_hand["reaction"] is None
    assert sink.requests[1].headers["X-Saline-Delivery"].startswith("orchestrate/")

    proc = saline(lab, "orchestrate", "tell", "--test", "--out", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["steps"][1]["comment"].startswith("would notify hook")

    (lab.directory / "runbooks" / "pager.yaml").write_text(
        "steps:\n  - notify: {target: pager, message: hi}\n"
    )
    proc = saline(lab, "orchestrate", "pager")
    assert proc.returncode != 0
    assert "pager.yaml:2: step 'step 1': notify.target: no notify target 'pager'" in proc.stderr
    assert "(known: hook)" in proc.stderr
    assert len(sink.requests) == 2

    # the deliveries counted: in status (JSON and the human line) and on the metrics endpoint
    wait_for(lambda: status(lab)["notify"]["hook"]["queued"] == 0, 20, "the queue drained")
    assert status(lab)["notify"]["hook"] == {
        "queued": 0,
        "sent": 2,
        "retried": 0,
        "failed": 0,
        "dropped": 0,
        "duplicate": 0,
    }
    assert "notify hook: 2 sent, 0 queued\n" in saline(lab, "status").stdout
    samples = scrape(lab)
    assert value(samples, "saline_notify_total", target="hook", outcome="sent") == 2
    assert value(samples, "saline_notify_queued", target="hook") == 0
