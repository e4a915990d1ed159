"""The master's Prometheus endpoint on a real lab: scraped over HTTP after a job, a refused
frame and a beacon edge, and read with Prometheus's own text parser."""

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from saline.lab.lab import Lab
from tests.integration.peers import Dealer, refusals
from tests.support import events, run_json, saline, wait_for

#: a frame msgpack never accepts (0xc1 is reserved): refused at once, whoever sends it
SENTINEL = b"\xc1sentinel"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def metrics_lab(tmp_path: Path) -> Iterator[Lab]:
    """One minion whose `demo` service (stopped at start) a service beacon watches."""
    lab = Lab(tmp_path / "lab")
    lab.up(1, extra={"beacons": {"service": {"interval": 0.3, "services": ["demo"]}}})
    yield lab
    lab.down()


def scrape(lab: Lab) -> Samples:
    url = lab.state["metrics"]
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_lab_serves_metrics_and_status_names_the_url(metrics_lab: Lab) -> None:
    lab = metrics_lab
    url = lab.state["metrics"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    assert "metrics_listen: 127.0.0.1:" in lab.master_config.read_text()
    report = json.loads(
        saline(lab, "lab", "status", "--dir", str(lab.directory), "--out", "json").stdout
    )
    assert report["metrics"] == url
    human = saline(lab, "lab", "status", "--dir", str(lab.directory)).stdout
    assert f"metrics  {url}" in human

    # the beacon saw the stopped service first: a bad state, one series per minion+beacon
    wait_for(lambda: events(lab, "saline/beacon/be1/service/stopped"), 15, "stopped seen")
    before = wait_for(
        lambda: (
            (s := scrape(lab))
            and value(s, "saline_beacon_bad", minion="be1", beacon="service") == 1
            and s
        ),
        10,
        "the beacon's bad state in the metrics",
    )
    assert value(before, "saline_beacon_state", minion="be1", beacon="service", state="stopped")
    assert value(before, "saline_minions", state="accepted") == 1
    assert value(before, "saline_minions_online") == 1
    assert value(before, "saline_minion_up", minion="be1") == 1
    assert value(before, "saline_leader") == 1  # no etcd: the single master leads
    assert ("saline_leader_epoch", ()) not in before
    started = value(before, "saline_jobs_started_total")
    succeeded = value(before, "saline_jobs_finished_total", outcome="success")
    returns = value(before, "saline_returns_received_total")
    received = value(before, "saline_events_received_total")
    writes = value(before, "saline_store_write_seconds_count", kind="returns")

    # one job: started, finished with success, one return
    rc, doc = run_json(lab, "be1", "service.start", "demo")
    assert rc == 0 and doc["returns"]["be1"]["success"], doc
    # the beacon's edge back to running
    wait_for(lambda: events(lab, "saline/beacon/be1/service/running"), 15, "running seen")

    # one frame the master refuses, from a key it does not know
    ctx: zmq.Context[Any] = zmq.Context()
    counted = refusals(lab)
    try:
        public, secret = zmq.curve_keypair()
        dealer = Dealer(ctx, lab, public, secret).connect()
        dealer.send(SENTINEL)
        dealer.recv()
        dealer.close()
    finally:
        ctx.destroy(linger=0)
    rose = wait_for(
        lambda: {r: n - counted[r] for r, n in refusals(lab).items() if n != counted[r]},
        5,
        "a refusal counted",
    )
    assert list(rose.values()) == [1], rose
    [reason] = rose

    after = wait_for(
        lambda: (
            (s := scrape(lab))
            and value(s, "saline_jobs_finished_total", outcome="success") > succeeded
            and value(s, "saline_beacon_bad", minion="be1", beacon="service") == 0
            and s
        ),
        10,
        "the job and the beacon edge in the metrics",
    )
    assert value(after, "saline_jobs_started_total") == started + 1
    assert value(after, "saline_jobs_finished_total", outcome="success") == succeeded + 1
    assert value(after, "saline_jobs_finished_total", outcome="failure") == 0
    assert value(after, "saline_returns_received_total") == returns + 1
    assert value(after, "saline_store_write_seconds_count", kind="returns") >= writes + 1
    assert value(after, "saline_events_received_total") >= received + 1  # the running edge
    assert value(after, "saline_job_duration_seconds_count") >= 1
    assert value(after, "saline_refusals_total", reason=reason) == counted[reason] + 1
    assert value(after, "saline_beacon_state", minion="be1", beacon="service", state="running")
    assert (
        "saline_beacon_state",
        (("beacon", "service"), ("minion", "be1"), ("state", "stopped")),
    ) not in after


def test_a_minion_serves_its_own_metrics_when_asked(tmp_path: Path) -> None:
    from saline.lab.lab import free_port

    listen = f"127.0.0.1:{free_port()}"
    lab = Lab(tmp_path / "lab")
    lab.up(1, extra={"metrics_listen": listen})
    try:
        rc, doc = run_json(lab, "be1", "test.sleep", "0.3")
        assert rc == 0, doc
        url = f"http://{listen}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert value(samples, "saline_minion_job_duration_seconds_count", fun="test.sleep") == 1
        total = value(samples, "saline_minion_job_duration_seconds_sum", fun="test.sleep")
        assert 0.3 <= total < 5
        assert value(samples, "saline_minion_reconnects_total") == 0
        assert ("saline_minion_spool_messages", (("kind", "returns"),)) in samples
    finally:
        lab.down()
