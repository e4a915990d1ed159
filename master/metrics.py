"""The master's Prometheus metrics: counters its parts move, and gauges read at scrape time.

Two halves, both in the master's own :class:`~prometheus_client.CollectorRegistry` (never the
process-global one: a test builds several masters in one process):

* :class:`MasterMetrics` holds what only the moment of an act can count — jobs started and
  finished, returns and events received, reactor decisions, escalations, store write
  latency. It is given to the parts that count (job manager, committer, reactor).
* :class:`StateCollector` reads what already exists, when scraped — minions by key state and
  presence, refusals (``master/stats.py``), the reactor's in-flight and held reactions, the
  beacon states of the cluster view, bus queue depths, the minion socket's last batch,
  leadership. Nothing is kept twice, so nothing can drift.

The endpoint is prometheus_client's own ``start_http_server``: its WSGI app on the standard
library's wsgiref server, in a thread beside the asyncio loop. Chosen over mounting its ASGI
or WSGI app because either needs a web server the master does not otherwise carry; HTTP
never runs on the loop, and the collector hops onto the loop for one short read of the
parts (they are mutated only there), so a scrape sees a consistent view and never races it.
"""

import asyncio
import concurrent.futures
import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from master.bus import EventBus
from master.leadership import Leadership
from master.minion_socket import MinionSocket
from master.notify import OUTCOMES, Notifier
from master.observations import Observations
from master.presence import Presence
from master.retention import Retention
from master.stats import Refusals
from master.store.base import Store
from reactors.state import ReactorState
from saline.keys import KeyRing, KeyState
from saline.listen import parse_listen
from saline.wire import pack

T = TypeVar("T")

#: seconds a scrape waits for the loop to read the parts
SCRAPE_TIMEOUT = 5.0
#: job durations, seconds: a ping takes milliseconds, a reconfigure minutes
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: store batch writes, seconds
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class MasterMetrics:
    """The counters and histograms of acts, in one registry (a fresh one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.jobs_started = Counter(
            "saline_jobs_started",
            "Jobs stored and dispatched (operators, schedule, reactor).",
            registry=r,
        )
        self.jobs_finished = Counter(
            "saline_jobs_finished",
            "Jobs whose every targeted minion has an outcome, by the job's outcome: success "
            "(all succeeded), else the worst of failure, timed_out, not_reached.",
            ["outcome"],
            registry=r,
        )
        self.job_duration = Histogram(
            "saline_job_duration_seconds",
            "Seconds from a job's dispatch to its last outcome.",
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.returns_received = Counter(
            "saline_returns_received",
            "Job returns received from minions and stored (resends included).",
            registry=r,
        )
        self.events_received = Counter(
            "saline_events_received", "Events received from minions and admitted.", registry=r
        )
        self.decisions = Counter(
            "saline_reactor_decisions",
            "Reactor decisions, by rule and verdict (fire, skip, escalate, dry_run, "
            "await_approval, failed).",
            ["rule", "verdict"],
            registry=r,
        )
        self.escalations = Counter(
            "saline_escalations",
            "Decisions that escalated to a human, by rule.",
            ["rule"],
            registry=r,
        )
        self.reactions_finished = Counter(
            "saline_reactions_finished",
            "Fired reactions that ended, by rule and outcome (succeeded, failed).",
            ["rule", "outcome"],
            registry=r,
        )
        self.store_write = Histogram(
            "saline_store_write_seconds",
            "Seconds one batch write to the store took, by what it wrote.",
            ["kind"],
            buckets=STORE_BUCKETS,
            registry=r,
        )
        self.returner_shipped = Counter(
            "saline_returner_shipped",
            "Documents a returner stored at its destination, by returner and kind "
            "(events, returns, reactions).",
            ["returner", "kind"],
            registry=r,
        )
        self.returner_dropped = Counter(
            "saline_returner_dropped",
            "Documents a returner gave up, by returner and reason (queue_full: the on-disk "
            "queue was at its bound; refused: the destination will never take it).",
            ["returner", "reason"],
            registry=r,
        )
        self.returner_queued = Gauge(
            "saline_returner_queued",
            "Documents waiting in a returner's on-disk queue.",
            ["returner"],
            registry=r,
        )
        self.returner_failures = Counter(
            "saline_returner_failures",
            "Batches a returner could not ship (destination down or failing); retried.",
            ["returner"],
            registry=r,
        )

    def job_finished(self, outcomes: Iterable[str], seconds: float) -> None:
        """One job ended with these per-minion outcomes after ``seconds``."""
        seen = set(outcomes)
        worst = next((o for o in ("failure", "timed_out", "not_reached") if o in seen), "success")
        self.jobs_finished.labels(worst).inc()
        self.job_duration.observe(seconds)

    def decided(self, rule: str, verdict: str) -> None:
        self.decisions.labels(rule, verdict).inc()
        if verdict == "escalate":
            self.escalations.labels(rule).inc()

    def time_store_writes(self, store: Store) -> Store:
        """Time the store's three batch writes in place (``save_returns``, ``save_events``,
        ``save_reactions``): one thin wrapper each, no call site changes. Returns ``store``."""
        for name, kind in (
            ("save_returns", "returns"),
            ("save_events", "events"),
            ("save_reactions", "reactions"),
        ):
            setattr(store, name, _timed(getattr(store, name), self.store_write.labels(kind)))
        return store


def _timed(write: Callable[..., T], histogram: Histogram) -> Callable[..., T]:
    @functools.wraps(write)
    def timed(*args: Any, **kwargs: Any) -> T:
        start = time.perf_counter()
        try:
            return write(*args, **kwargs)
        finally:
            histogram.observe(time.perf_counter() - start)

    return timed


@dataclass(frozen=True)
class StateParts:
    """What :class:`StateCollector` reads: the master's own parts, never copies of them."""

    keys: KeyRing
    presence: Presence
    refusals: Refusals
    #: the reactor's guard memory (in-flight and held reactions); read when scraped
    reactor_state: Callable[[], ReactorState]
    observations: Observations
    bus: EventBus
    socket: MinionSocket
    #: None: no etcd configured, this single master leads
    leadership: Leadership | None = None
    notifier: Notifier | None = None
    retention: Retention | None = None


class StateCollector:
    """Gauges read from the parts at scrape time (a custom collector)."""

    def __init__(self, parts: StateParts) -> None:
        self.parts = parts
        #: the loop the parts live on; set by :meth:`MetricsServer.start`
        self.loop: asyncio.AbstractEventLoop | None = None

    def describe(self) -> list[Metric]:
        return []  # registering must not read the parts (names are not checked twice)

    def collect(self) -> Iterator[Metric]:
        loop = self.loop
        if loop is None or _running_loop() is loop:
            yield from self.read()
            return
        done: concurrent.futures.Future[list[Metric]] = concurrent.futures.Future()

        def read_on_loop() -> None:
            try:
                done.set_result(self.read())
            except Exception as e:  # the scrape fails (HTTP 500), never the loop
                done.set_exception(e)

        loop.call_soon_threadsafe(read_on_loop)
        yield from done.result(SCRAPE_TIMEOUT)

    def read(self) -> list[Metric]:
        p = self.parts
        out: list[Metric] = []
        minions = GaugeMetricFamily(
            "saline_minions",
            "Minion keys by state (accepted, pending, rejected).",
            labels=["state"],
        )
        for key_state in KeyState:
            minions.add_metric([key_state.value], len(p.keys.ids(key_state)))
        out.append(minions)
        accepted = set(p.keys.ids(KeyState.ACCEPTED))
        online = GaugeMetricFamily(
            "saline_minions_online", "Accepted minions heard from within presence_timeout."
        )
        online.add_metric([], len(accepted.intersection(p.presence.online_ids())))
        out.append(online)
        up = GaugeMetricFamily(
            "saline_minion_up", "1 while an accepted minion is online, else 0.", labels=["minion"]
        )
        live = set(p.presence.online_ids())
        for minion in sorted(accepted):
            up.add_metric([minion], 1 if minion in live else 0)
        out.append(up)
        refused = CounterMetricFamily(
            "saline_refusals",
            "Frames, handshakes and requests refused since start, by reason (only grows).",
            labels=["reason"],
        )
        for reason, count in sorted(p.refusals.as_dict().items()):
            refused.add_metric([reason], count)
        out.append(refused)
        state = p.reactor_state()
        in_flight = GaugeMetricFamily(
            "saline_reactions_in_flight",
            "Fired reactions not yet finished, by rule.",
            labels=["rule"],
        )
        for rule, n in _count(r.rule for r in state.in_flight.values()).items():
            in_flight.add_metric([rule], n)
        out.append(in_flight)
        held = GaugeMetricFamily(
            "saline_reactions_awaiting_approval",
            "Reactions held for an operator's approval, by rule.",
            labels=["rule"],
        )
        for rule, n in _count(a.decision.rule for a in state.awaiting.values()).items():
            held.add_metric([rule], n)
        out.append(held)
        out.extend(self._beacons())
        out.extend(self._queues())
        out.extend(self._leadership())
        out.extend(self._notify())
        out.extend(self._retention())
        return out

    def _notify(self) -> list[Metric]:
        notifier = self.parts.notifier
        if notifier is None or not notifier.targets:
            return []
        told = CounterMetricFamily(
            "saline_notify",
            "Notices per target and outcome: sent, retried (an attempt failed, another "
            "follows), failed (given up), dropped (queue full), duplicate (already sent).",
            labels=["target", "outcome"],
        )
        queued = GaugeMetricFamily(
            "saline_notify_queued", "Notices waiting in a target's queue.", labels=["target"]
        )
        for target, counts in sorted(notifier.status().items()):
            queued.add_metric([target], counts["queued"])
            for outcome in OUTCOMES:
                told.add_metric([target, outcome], counts[outcome])
        return [told, queued]

    def _retention(self) -> list[Metric]:
        retention = self.parts.retention
        if retention is None:
            return []
        deleted = CounterMetricFamily(
            "saline_retention_deleted",
            "Rows retention deleted since start, by kind (events, jobs, returns, reactions).",
            labels=["kind"],
        )
        for kind, count in dataclasses.asdict(retention.deleted).items():
            deleted.add_metric([kind], count)
        passes = CounterMetricFamily("saline_retention_passes", "Retention passes run.")
        passes.add_metric([], retention.passes)
        seconds = GaugeMetricFamily(
            "saline_retention_last_pass_seconds", "How long the last retention pass took."
        )
        seconds.add_metric([], retention.last_seconds)
        out: list[Metric] = [deleted, passes, seconds]
        if retention.last_pass is not None:
            when = GaugeMetricFamily(
                "saline_retention_last_pass_timestamp_seconds",
                "When the last retention pass ended (unix time).",
            )
            when.add_metric([], retention.last_pass)
            out.append(when)
        return out

    def _beacons(self) -> list[Metric]:
        """One series per (minion, beacon) the cluster view holds: bounded by it."""
        states = GaugeMetricFamily(
            "saline_beacon_state",
            "1 for the state a minion's beacon last reported (one series per minion and beacon).",
            labels=["minion", "beacon", "state"],
        )
        bad = GaugeMetricFamily(
            "saline_beacon_bad",
            "1 while a minion's beacon last reported a bad state, else 0.",
            labels=["minion", "beacon"],
        )
        since = GaugeMetricFamily(
            "saline_beacon_last_seen_timestamp_seconds",
            "Unix time of a minion's beacon's last observation.",
            labels=["minion", "beacon"],
        )
        for minion, seen in self.parts.observations.by_minion.items():
            for beacon, observation in seen.items():
                if ":" in beacon:  # keyed observations (beacon:key) are folded in the beacon
                    continue
                states.add_metric([minion, beacon, str(observation.get("state"))], 1)
                bad.add_metric([minion, beacon], 1 if observation.get("bad") else 0)
                since.add_metric([minion, beacon], float(observation.get("ts") or 0))
        return [states, bad, since]

    def _queues(self) -> list[Metric]:
        subs = list(self.parts.bus.subscriptions)
        messages = GaugeMetricFamily(
            "saline_bus_queue_messages", "Events waiting in the bus's subscriber queues."
        )
        size = GaugeMetricFamily(
            "saline_bus_queue_bytes", "Bytes (packed) of the events waiting in subscriber queues."
        )
        subscribers = GaugeMetricFamily("saline_bus_subscribers", "Live bus subscriptions.")
        dropped = GaugeMetricFamily(
            "saline_bus_dropped_events",
            "Events live subscriptions lost because they did not keep up.",
        )
        waiting = [e for s in subs for e in list(getattr(s.queue, "_queue", ()))]
        messages.add_metric([], len(waiting))
        size.add_metric([], sum(len(pack(e.data)) + len(e.tag) for e in waiting))
        subscribers.add_metric([], len(subs))
        dropped.add_metric([], sum(s.dropped for s in subs))
        frames, held = self.parts.socket.last_batch
        batch = GaugeMetricFamily(
            "saline_minion_socket_batch_messages",
            "Frames the minion socket read in its last batch (a full batch means a backlog).",
        )
        batch.add_metric([], frames)
        batch_bytes = GaugeMetricFamily(
            "saline_minion_socket_batch_bytes", "Bytes of the minion socket's last batch."
        )
        batch_bytes.add_metric([], held)
        return [messages, size, subscribers, dropped, batch, batch_bytes]

    def _leadership(self) -> list[Metric]:
        leadership = self.parts.leadership
        leader = GaugeMetricFamily(
            "saline_leader",
            "1 while this master leads (runs the reactor, schedule, runbooks); a single "
            "master without etcd always leads.",
        )
        leader.add_metric([], 1 if leadership is None or leadership.leading() else 0)
        if leadership is None:
            return [leader]
        epoch = GaugeMetricFamily(
            "saline_leader_epoch", "The epoch of the leadership term this master knows."
        )
        epoch.add_metric([], leadership.term.epoch)
        return [leader, epoch]


def _count(names: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return counts


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class MetricsServer:
    """The ``metrics_listen`` endpoint: the registry over HTTP, from the master's process."""

    def __init__(self, listen: str, registry: CollectorRegistry, state: StateCollector) -> None:
        self.host, self.port = parse_listen(listen)
        self.registry = registry
        self.state = state
        self._server: WSGIServer | None = None

    def start(self) -> None:
        """Serve (on the calling loop's parts). :raises OSError: the address is taken."""
        self.state.loop = asyncio.get_running_loop()
        self._server, _ = start_http_server(self.port, self.host, self.registry)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
