"""master/metrics.py over small real parts, the metrics_listen setting, and the shipped alert
rules and Grafana dashboard naming only metrics the master exports."""

import asyncio
import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
import zmq
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from master.bus import EventBus
from master.config import MasterConfig
from master.etcd_gateway import EtcdGateway
from master.leadership import Leadership
from master.metrics import MasterMetrics, MetricsServer, StateCollector, StateParts
from master.minion_socket import MinionSocket
from master.notify import Notifier
from master.notify_config import WebhookTarget
from master.observations import Observations
from master.presence import Presence
from master.retention import Keep, Retention
from master.stats import Refusals
from master.store.base import EventRecord, Pruned
from master.store.sqlite import SqliteStore
from reactors.model import Decision, Verdict
from reactors.state import Awaiting, InFlight, ReactorState
from saline.keys import KeyRing, KeyState
from saline.lab.lab import free_port

ROOT = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _public() -> str:
    return zmq.curve_keypair()[0].decode()


def _decision(rule: str) -> Decision:
    return Decision(
        verdict=Verdict.AWAIT_APPROVAL,
        reason="held",
        rule=rule,
        event_id="1",
        event_tag="t",
        event_depth=0,
        at=0.0,
    )


class Parts:
    """A key ring, presence, refusals, reactor state, cluster view, bus and socket: real."""

    def __init__(self, tmp: Path, leadership: Leadership | None = None) -> None:
        self.keys = KeyRing(tmp / "pki")
        for minion in ("be1", "be2", "fe1"):
            self.keys.add(minion, _public(), KeyState.ACCEPTED)
        self.keys.add("newcomer", _public(), KeyState.PENDING)
        self.presence = Presence(60.0)
        self.presence.start("be1", b"r1")
        self.presence.start("fe1", b"r2")
        self.presence.start("stranger", b"r3")  # online, but its key is not accepted
        self.refusals = Refusals()
        self.state = ReactorState()
        self.observations = Observations()
        self.store = SqliteStore(tmp / "jobs.sqlite")
        self.bus = EventBus(self.store)
        self.socket = MinionSocket()
        hook = WebhookTarget(name="hook", kind="webhook", url="http://127.0.0.1:9/")
        self.notifier = Notifier([hook], ["escalated"], self.store, self.bus, tmp)
        self.retention = Retention(self.store, Keep(0, 1, 0))
        self.collector = StateCollector(
            StateParts(
                keys=self.keys,
                presence=self.presence,
                refusals=self.refusals,
                reactor_state=lambda: self.state,
                observations=self.observations,
                bus=self.bus,
                socket=self.socket,
                leadership=leadership,
                notifier=self.notifier,
                retention=self.retention,
            )
        )
        self.metrics = MasterMetrics()
        self.metrics.registry.register(self.collector)

    def beacon(self, minion: str, beacon: str, state: str, **data: Any) -> None:
        tag = f"saline/beacon/{minion}/{beacon}/{state}"
        self.observations.observe(EventRecord(tag, data, minion, time.time()))

    def scrape(self) -> Samples:
        text = generate_latest(self.metrics.registry).decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def parts(tmp_path: Path) -> Parts:
    return Parts(tmp_path)


def test_minions_are_read_from_the_key_ring_and_presence(parts: Parts) -> None:
    s = parts.scrape()
    assert value(s, "saline_minions", state="accepted") == 3
    assert value(s, "saline_minions", state="pending") == 1
    assert value(s, "saline_minions", state="rejected") == 0
    assert value(s, "saline_minions_online") == 2  # the stranger is not counted
    assert value(s, "saline_minion_up", minion="be1") == 1
    assert value(s, "saline_minion_up", minion="be2") == 0
    assert value(s, "saline_minion_up", minion="stranger") is None
    parts.keys.reject("be1")  # read at scrape time: nothing to keep in step
    parts.presence.drop("fe1")
    s = parts.scrape()
    assert value(s, "saline_minions", state="accepted") == 2
    assert value(s, "saline_minions", state="rejected") == 1
    assert value(s, "saline_minions_online") == 0


def test_refusals_reactions_and_leadership(parts: Parts) -> None:
    parts.refusals.count("malformed", "x")
    parts.refusals.count("malformed", "x")
    parts.refusals.count("id_mismatch", "y")
    parts.state.in_flight["a"] = InFlight(rule="heal", key="be1", started=0, digest="d")
    parts.state.in_flight["b"] = InFlight(rule="heal", key="be2", started=0, digest="d")
    parts.state.awaiting["c"] = Awaiting(decision=_decision("failover"))
    s = parts.scrape()
    assert value(s, "saline_refusals_total", reason="malformed") == 2
    assert value(s, "saline_refusals_total", reason="id_mismatch") == 1
    assert value(s, "saline_reactions_in_flight", rule="heal") == 2
    assert value(s, "saline_reactions_awaiting_approval", rule="failover") == 1
    assert value(s, "saline_leader") == 1  # no Leadership: the single master leads
    assert value(s, "saline_leader_epoch") is None
    del parts.state.in_flight["a"]
    assert value(parts.scrape(), "saline_reactions_in_flight", rule="heal") == 1


def test_leadership_when_the_master_has_one(tmp_path: Path) -> None:
    leadership = Leadership(EtcdGateway(["http://127.0.0.1:9"]), "m1")
    s = Parts(tmp_path, leadership).scrape()
    assert value(s, "saline_leader") == 0  # not campaigned yet
    assert value(s, "saline_leader_epoch") == 0


def test_beacon_state_is_one_series_per_minion_and_beacon(parts: Parts) -> None:
    parts.beacon("be1", "pg_replication", "streaming", bad=False)
    parts.beacon("be1", "pg_replication", "out_of_sync", bad=True, key="main")
    parts.beacon("be2", "diskusage", "ok", bad=False)
    s = parts.scrape()
    state = [k for k in s if k[0] == "saline_beacon_state"]
    assert sorted(dict(labels)["minion"] + "/" + dict(labels)["beacon"] for _, labels in state) == [
        "be1/pg_replication",
        "be2/diskusage",
    ]  # the keyed observation (pg_replication:main) is folded in, not a series of its own
    assert value(
        s, "saline_beacon_state", minion="be1", beacon="pg_replication", state="out_of_sync"
    )
    assert value(s, "saline_beacon_bad", minion="be1", beacon="pg_replication") == 1
    assert value(s, "saline_beacon_bad", minion="be2", beacon="diskusage") == 0
    parts.beacon("be1", "pg_replication", "streaming", bad=False)
    s = parts.scrape()
    assert value(s, "saline_beacon_bad", minion="be1", beacon="pg_replication") == 0
    assert (
        value(s, "saline_beacon_state", minion="be1", beacon="pg_replication", state="out_of_sync")
        is None
    )


def test_queue_depths_in_messages_and_bytes(parts: Parts) -> None:
    sub = parts.bus.subscribe("chef/*")
    parts.bus.subscribe("nothing/*")
    parts.bus.publish_many([("chef/a", {"x": "y" * 100}, None), ("other", {}, None)])
    parts.socket.last_batch = (7, 4096)
    s = parts.scrape()
    assert value(s, "saline_bus_subscribers") == 2
    assert value(s, "saline_bus_queue_messages") == 1
    size = value(s, "saline_bus_queue_bytes")
    assert size is not None and 100 < size < 200
    assert value(s, "saline_minion_socket_batch_messages") == 7
    assert value(s, "saline_minion_socket_batch_bytes") == 4096
    sub.queue.get_nowait()
    assert value(parts.scrape(), "saline_bus_queue_messages") == 0


def test_counts_of_acts_and_store_write_latency(parts: Parts) -> None:
    m = parts.metrics
    m.jobs_started.inc()
    m.job_finished(["success", "success"], 0.2)
    m.job_finished(["success", "timed_out", "not_reached"], 3.0)
    m.job_finished(["failure", "timed_out"], 1.0)
    m.decided("heal", "fire")
    m.decided("heal", "escalate")
    store = m.time_store_writes(parts.store)
    saved = store.save_events(
        [EventRecord("t/1", {}, None, 1.0), EventRecord("t/2", {}, None, 1.0)]
    )
    assert [e.seq for e in saved] == [1, 2]  # the wrapper hands back what the store returned
    s = parts.scrape()
    assert value(s, "saline_jobs_started_total") == 1
    assert value(s, "saline_jobs_finished_total", outcome="success") == 1
    assert value(s, "saline_jobs_finished_total", outcome="timed_out") == 1
    assert value(s, "saline_jobs_finished_total", outcome="failure") == 1
    assert value(s, "saline_job_duration_seconds_count") == 3
    assert value(s, "saline_job_duration_seconds_bucket", le="0.25") == 1
    assert value(s, "saline_reactor_decisions_total", rule="heal", verdict="fire") == 1
    assert value(s, "saline_escalations_total", rule="heal") == 1
    assert value(s, "saline_store_write_seconds_count", kind="events") == 1
    assert value(s, "saline_store_write_seconds_count", kind="returns") == 0


def test_notify_and_retention_counters(parts: Parts) -> None:
    before = parts.scrape()
    assert value(before, "saline_notify_total", target="hook", outcome="sent") == 0
    assert ("saline_retention_last_pass_timestamp_seconds", ()) not in before  # no pass yet
    parts.notifier.target_counts["hook"].update(sent=3, failed=1)
    parts.retention.deleted += Pruned(jobs=2, returns=4, events=7)
    parts.retention.passes, parts.retention.last_pass = 2, 1_700_000_000.0
    samples = parts.scrape()
    assert value(samples, "saline_notify_total", target="hook", outcome="sent") == 3
    assert value(samples, "saline_notify_total", target="hook", outcome="failed") == 1
    assert value(samples, "saline_notify_queued", target="hook") == 0
    assert value(samples, "saline_retention_deleted_total", kind="events") == 7
    assert value(samples, "saline_retention_deleted_total", kind="returns") == 4
    assert value(samples, "saline_retention_passes_total") == 2
    assert value(samples, "saline_retention_last_pass_timestamp_seconds") == 1_700_000_000.0


def test_each_master_has_its_own_registry(tmp_path: Path) -> None:
    a, b = Parts(tmp_path / "a"), Parts(tmp_path / "b")
    a.metrics.jobs_started.inc(3)
    assert value(a.scrape(), "saline_jobs_started_total") == 3
    assert value(b.scrape(), "saline_jobs_started_total") == 0
    assert not [n for n in REGISTRY._names_to_collectors if n.startswith("saline_")]


def test_the_endpoint_serves_from_another_thread_reading_on_the_loop(parts: Parts) -> None:
    port = free_port()
    server = MetricsServer(f"127.0.0.1:{port}", parts.metrics.registry, parts.collector)

    async def scrape_over_http() -> str:
        server.start()
        try:
            parts.refusals.count("malformed")
            url = f"http://127.0.0.1:{port}/metrics"

            def get() -> str:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    body: bytes = reply.read()
                    return body.decode()

            return await asyncio.to_thread(get)
        finally:
            server.stop()

    text = asyncio.run(scrape_over_http())
    assert 'saline_refusals_total{reason="malformed"} 1.0' in text
    assert "# HELP saline_minions Minion keys by state" in text


@pytest.mark.parametrize("listen", ["127.0.0.1:9606", "0.0.0.0:1", "[::1]:65535", "master-1:9606"])
def test_metrics_listen_accepts_host_port(listen: str) -> None:
    assert MasterConfig(metrics_listen=listen).metrics_listen == listen


@pytest.mark.parametrize("listen", ["9606", "127.0.0.1", "h:0", "h:65536", "h:96o6", "a b:1", ":1"])
def test_metrics_listen_refuses_other_forms(listen: str) -> None:
    with pytest.raises(ValidationError, match="metrics_listen"):
        MasterConfig(metrics_listen=listen)


def test_metrics_are_off_by_default() -> None:
    assert MasterConfig().metrics_listen is None


# -- the shipped alert rules and dashboard ------------------------------------------------


def exported_names(tmp: Path) -> set[str]:
    """Every series name the master can export, with the suffixes of its type."""
    leadership = Leadership(EtcdGateway(["http://127.0.0.1:9"]), "m1")
    registry: CollectorRegistry = Parts(tmp, leadership).metrics.registry
    names: set[str] = set()
    for family in registry.collect():
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_sum", "_count"],
        }.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    return names


def named(expr: str) -> set[str]:
    return set(re.findall(r"\bsaline_[a-z_]+\b", expr))


def test_alert_rules_name_only_exported_metrics(tmp_path: Path) -> None:
    known = exported_names(tmp_path)
    doc = yaml.safe_load((ROOT / "packaging/prometheus/saline-alerts.yml").read_text())
    rules = [r for group in doc["groups"] for r in group["rules"]]
    alerts = {r["alert"] for r in rules}
    for wanted in ("MinionOffline", "BeaconBad", "Escalated", "ReactionFailed", "Refusals"):
        assert any(wanted in a for a in alerts), wanted
    assert {"SalineNoLeader", "SalineNotifyFailing"} <= alerts
    for rule in rules:
        assert named(rule["expr"]), rule["alert"]
        assert named(rule["expr"]) <= known, (rule["alert"], named(rule["expr"]) - known)


def test_dashboard_targets_name_only_exported_metrics(tmp_path: Path) -> None:
    known = exported_names(tmp_path)
    doc = json.loads((ROOT / "packaging/grafana/saline-dashboard.json").read_text())
    assert doc["title"] and doc["uid"] and isinstance(doc["schemaVersion"], int)
    exprs = [t["expr"] for panel in doc["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        assert named(expr) and named(expr) <= known, (expr, named(expr) - known)
    used = set().union(*(named(e) for e in exprs))
    assert {"saline_beacon_bad", "saline_refusals_total", "saline_leader"} <= used


# -- the minion's own (minion/metrics.py) --------------------------------------------------


def test_minion_metrics_served_over_http(tmp_path: Path) -> None:
    from minion.metrics import MinionMetrics
    from minion.spool import event_spool, return_spool
    from saline.jid import new_jid
    from saline.protocol import Return

    returns = return_spool(tmp_path / "spool", 1 << 20)
    events = event_spool(tmp_path / "spool" / "events", 1 << 20)
    returns.put(Return(jid=new_jid(), id="be1", fun="test.ping", success=True, retcode=0))
    port = free_port()
    metrics = MinionMetrics(f"127.0.0.1:{port}", {"returns": returns, "events": events})
    metrics.job_done("test.ping", 40.0)
    metrics.job_done("test.ping", 3000.0)
    metrics.beacon_checked("disk", 0.002)
    metrics.handshake()  # the first connect is not a reconnect
    metrics.handshake()
    metrics.handshake()
    metrics.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    finally:
        metrics.stop()
    s: Samples = {
        (x.name, tuple(sorted(x.labels.items()))): x.value
        for family in text_string_to_metric_families(text)
        for x in family.samples
    }
    assert value(s, "saline_minion_job_duration_seconds_count", fun="test.ping") == 2
    assert value(s, "saline_minion_job_duration_seconds_bucket", fun="test.ping", le="0.05") == 1
    assert value(s, "saline_minion_beacon_check_seconds_count", beacon="disk") == 1
    assert value(s, "saline_minion_reconnects_total") == 2
    assert value(s, "saline_minion_spool_messages", kind="returns") == 1
    assert value(s, "saline_minion_spool_messages", kind="events") == 0


def test_a_minion_without_metrics_never_loads_prometheus_client() -> None:
    import subprocess
    import sys

    probe = "import sys, minion.daemon; print('prometheus_client' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False", out.stderr


def test_minion_metrics_listen_is_validated(tmp_path: Path) -> None:
    from minion.config import MinionConfig

    base = {"id": "m1", "cachedir": tmp_path / "c", "pki_dir": tmp_path / "p"}
    assert MinionConfig(**base).metrics_listen is None
    assert MinionConfig(**base, metrics_listen="127.0.0.1:9607").metrics_listen
    with pytest.raises(ValidationError, match="metrics_listen"):
        MinionConfig(**base, metrics_listen="9607")
