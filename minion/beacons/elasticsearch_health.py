"""The ``elasticsearch_health`` beacon: the Elasticsearch cluster's health colour.

Params:
  ``url``: the node's HTTP URL (default ``http://127.0.0.1:9200``); ``timeout``: seconds;
  ``client``: ``http`` (default: plain HTTP, so the official client never loads in the
  minion) or ``auto`` (the official client, with its plain-HTTP fallback).

States (one observation keyed ``cluster``):
  ``green`` (ok), ``yellow`` (bad: replicas unassigned), ``red`` (bad: a primary
  unassigned), ``down`` (bad: no usable answer; ``error`` says why).

Data: ``status``, ``unassigned_shards``, ``number_of_nodes``, ``cluster_name``, ``client``
("http", or with ``client: auto`` "elasticsearch-py" or "http-fallback"), ``url``; for
``down``, ``error``.

Example::

    beacons:
      elasticsearch_health: {url: http://127.0.0.1:9200, interval: 10}
"""

from typing import Literal

from pydantic import Field

from minion.beacons.base import Beacon, BeaconConfig, Observation
from minion.modules import elasticsearch
from saline.errors import ExecutionError

KEY = "cluster"
_COLOURS = ("green", "yellow", "red")


class ElasticsearchHealthBeaconConfig(BeaconConfig):
    #: the node's HTTP URL
    url: str = elasticsearch.DEFAULT_URL
    #: seconds per request
    timeout: float = Field(default=5, gt=0)
    #: ``http`` (default: plain HTTP, the official client is not loaded in the minion) or
    #: ``auto`` (the official client, ~23 MB, with the HTTP fallback)
    client: Literal["http", "auto"] = "http"


class ElasticsearchHealthBeacon(Beacon):
    """Watch an Elasticsearch cluster's health: green, yellow, red or down."""

    name = "elasticsearch_health"
    bad_states = ("yellow", "red", "down")
    Config = ElasticsearchHealthBeaconConfig
    config: ElasticsearchHealthBeaconConfig

    def check(self) -> list[Observation]:
        url = self.config.url
        try:
            result = self.ctx.call(
                "elasticsearch.health",
                url=url,
                timeout=self.config.timeout,
                client=self.config.client,
            )
        except ExecutionError as exc:
            return [Observation(KEY, "down", bad=True, data={"url": url, "error": str(exc)})]
        status = result["status"]
        data = {
            "url": url,
            "status": status,
            "unassigned_shards": result["unassigned_shards"],
            "number_of_nodes": result["number_of_nodes"],
            "cluster_name": result["cluster_name"],
            "client": result["client"],
        }
        if status not in _COLOURS:
            data["error"] = f"unknown health status {status!r}"
            return [Observation(KEY, "down", bad=True, data=data)]
        return [Observation(KEY, status, bad=status != "green", data=data)]
