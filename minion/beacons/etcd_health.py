"""The ``etcd_health`` beacon: whether every etcd member is healthy, and the quorum holds.

Params:
  ``endpoints``: client URLs of the members (default ``http://127.0.0.1:2379``);
  ``timeout``: seconds per request; ``client``: ``http`` (default: the HTTP gateway, so
  grpc never loads in the minion) or ``auto`` (the etcd3 client when it loads).

States (one observation keyed ``cluster``):
  ``healthy`` (ok: every member healthy), ``degraded`` (bad: some member unhealthy but the
  healthy ones make a quorum), ``no_quorum`` (bad: too few healthy members).

Data: ``healthy_count``, ``total``, ``quorum``, ``unhealthy`` (the unhealthy endpoints with
their error), ``leaders``, ``client``.

Example::

    beacons:
      etcd_health: {endpoints: [http://10.0.0.1:2379, http://10.0.0.2:2379], interval: 10}
"""

from typing import Literal

from pydantic import Field

from minion.beacons.base import Beacon, BeaconConfig, Observation
from minion.modules import etcd

KEY = "cluster"


class EtcdHealthBeaconConfig(BeaconConfig):
    #: client URLs of the etcd members
    endpoints: list[str] = Field(default_factory=lambda: [etcd.DEFAULT_ENDPOINT], min_length=1)
    #: seconds per request
    timeout: float = Field(default=3, gt=0)
    #: ``http`` (default: the HTTP gateway, nothing heavy loaded in the minion) or ``auto``
    #: (the etcd3 client, ~27 MB with grpc, when it loads)
    client: Literal["http", "auto"] = "http"


class EtcdHealthBeacon(Beacon):
    """Watch an etcd cluster: healthy, degraded (quorum kept) or without quorum."""

    name = "etcd_health"
    bad_states = ("degraded", "no_quorum")
    Config = EtcdHealthBeaconConfig
    config: EtcdHealthBeaconConfig

    def check(self) -> list[Observation]:
        result = self.ctx.call(
            "etcd.health",
            endpoints=self.config.endpoints,
            timeout=self.config.timeout,
            client=self.config.client,
        )
        unhealthy = [
            {"endpoint": check["endpoint"], "error": check["error"]}
            for check in result["endpoints"]
            if not check["healthy"]
        ]
        data = {
            "healthy_count": result["healthy_count"],
            "total": result["total"],
            "quorum": result["quorum"],
            "unhealthy": unhealthy,
            "leaders": result["leaders"],
            "client": result["client"],
        }
        if not result["healthy"]:
            return [Observation(KEY, "no_quorum", bad=True, data=data)]
        if unhealthy:
            return [Observation(KEY, "degraded", bad=True, data=data)]
        return [Observation(KEY, "healthy", bad=False, data=data)]
