"""The minion's own Prometheus metrics, served only with ``metrics_listen`` (off by default).

Job durations by function (from each return's own ``duration_ms``), beacon check durations
by beacon, reconnects to the master, and the spools' depth (read when scraped: the files
waiting for an acknowledgement). prometheus_client is imported here only, and the minion
imports this module only when the setting is on: a minion without it never loads it.

Served by prometheus_client's ``start_http_server`` (a small HTTP thread): the minion has
no web server of its own and none of these values needs the asyncio loop to be read.
"""

from collections.abc import Iterator, Mapping
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric

from minion.spool import Spool
from saline.listen import parse_listen

#: seconds: a ping takes milliseconds, a reconfigure minutes
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: seconds of one beacon check
BEACON_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class MinionMetrics:
    """The minion's registry of its own, and the endpoint serving it."""

    def __init__(self, listen: str, spools: Mapping[str, Spool[Any]]) -> None:
        self.host, self.port = parse_listen(listen)
        self.registry = CollectorRegistry()
        r = self.registry
        self.job_duration = Histogram(
            "saline_minion_job_duration_seconds",
            "Seconds a job's function ran on this minion, by function.",
            ["fun"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.beacon_duration = Histogram(
            "saline_minion_beacon_check_seconds",
            "Seconds one check of a beacon took, by beacon instance.",
            ["beacon"],
            buckets=BEACON_BUCKETS,
            registry=r,
        )
        self.reconnects = Counter(
            "saline_minion_reconnects",
            "Handshakes with the master after the first (master restarts, network cuts).",
            registry=r,
        )
        self._handshakes = 0
        r.register(_SpoolCollector(spools))
        self._server: WSGIServer | None = None

    def job_done(self, fun: str, duration_ms: float) -> None:
        self.job_duration.labels(fun).observe(duration_ms / 1000)

    def beacon_checked(self, beacon: str, seconds: float) -> None:
        self.beacon_duration.labels(beacon).observe(seconds)

    def handshake(self) -> None:
        """A CURVE handshake with the master succeeded; every one after the first counts."""
        self._handshakes += 1
        if self._handshakes > 1:
            self.reconnects.inc()

    def start(self) -> None:
        """:raises OSError: the address is taken (the minion does not start)."""
        self._server, _ = start_http_server(self.port, self.host, self.registry)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _SpoolCollector:
    def __init__(self, spools: Mapping[str, Spool[Any]]) -> None:
        self.spools = spools

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "saline_minion_spool_messages",
            "Returns and events spooled, waiting for the master's acknowledgement.",
            labels=["kind"],
        )
        for kind, spool in self.spools.items():
            depth.add_metric([kind], sum(1 for _ in spool.directory.glob(f"*{spool.suffix}")))
        yield depth
