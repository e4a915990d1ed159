"""The ``pg_replication`` beacon: whether this PostgreSQL node replicates as it should.

Params:
  ``host``, ``port``, ``user``, ``password`` (never published), ``dbname``: where to connect;
  ``lag_bytes``: replay lag from which a follower is out of sync (default 50 MB, leaderl's
  threshold); ``timeout``: seconds for the connection and each query; ``leader_view``
  (default true): also ask the leader the follower streams from, whose
  ``pg_stat_replication`` row must exist, stream, lag less than ``lag_bytes`` and
  ``max_lag_seconds`` and have heard from the follower within ``max_reply_age`` seconds
  (a follower can believe it streams while it receives nothing: only the leader sees it).

States (one observation, keyed ``host:port``):
  ``in_sync`` (ok: a follower streaming, replay not paused, lag under the limit),
  ``out_of_sync`` (bad: a follower with problems), ``leader`` (ok: the node is the leader),
  ``down`` (bad: cannot connect or query).

Data: ``node``, ``role``; for a follower ``problems`` (every view's), ``lag_bytes``,
``replay_paused``, ``receiver_status``, ``wal_receiver``, ``views`` (``follower`` and
``leader``: what each saw) and ``seen_by`` (the views that saw a problem); for a leader
``follower_count`` and ``followers``; for ``down``, ``error`` and ``role`` (the role last
seen, or null).

Example::

    beacons:
      pg_replication: {user: saline, password: secret, interval: 10}
"""

from typing import Any

from pydantic import Field

from minion.beacons.base import Beacon, BeaconConfig, Observation
from minion.modules import postgres
from saline.errors import ExecutionError


class PgReplicationBeaconConfig(BeaconConfig):
    host: str = "127.0.0.1"
    port: int = Field(default=5432, ge=1, le=65535)
    user: str = "saline"
    password: str | None = Field(default=None, repr=False)
    dbname: str = "postgres"
    #: replay lag (bytes) from which a follower is out of sync
    lag_bytes: int = Field(default=postgres.DEFAULT_LAG_BYTES, ge=0)
    timeout: int = Field(default=5, ge=1)
    #: also ask the leader this follower streams from (its pg_stat_replication row)
    leader_view: bool = True
    #: the leader's replay lag in time, and the silence of this follower's replies to it,
    #: beyond which the leader's view says out of sync (seconds)
    max_lag_seconds: float = Field(default=postgres.DEFAULT_MAX_LAG_SECONDS, gt=0)
    max_reply_age: float = Field(default=postgres.DEFAULT_MAX_REPLY_AGE, gt=0)


class PgReplicationBeacon(Beacon):
    """Watch one PostgreSQL node's streaming replication: leader, in sync, or not."""

    name = "pg_replication"
    bad_states = ("out_of_sync", "down")
    Config = PgReplicationBeaconConfig
    config: PgReplicationBeaconConfig

    #: the role seen at the last successful check (None before any)
    _last_role: str | None = None

    def check(self) -> list[Observation]:
        cfg = self.config
        key = f"{cfg.host}:{cfg.port}"
        try:
            result = self.ctx.call(
                "postgres.replication",
                host=cfg.host,
                port=cfg.port,
                user=cfg.user,
                password=cfg.password,
                dbname=cfg.dbname,
                lag_bytes=cfg.lag_bytes,
                timeout=cfg.timeout,
                leader_view=cfg.leader_view,
                max_lag_seconds=cfg.max_lag_seconds,
                max_reply_age=cfg.max_reply_age,
            )
        except ExecutionError as exc:
            # the role it had when last seen: a follower that is down is the ladder's to heal,
            # a leader that is down is not (leaderl fails over)
            data = {"node": key, "role": self._last_role, "error": str(exc)}
            return [Observation(key, "down", bad=True, data=data)]
        self._last_role = result["role"]
        seen = self.observe(key, result)
        if result["role"] == "follower":  # what judged it: a ladder's probes judge alike
            seen.data["limits"] = {
                "lag_bytes": cfg.lag_bytes,
                "max_lag_seconds": cfg.max_lag_seconds,
                "max_reply_age": cfg.max_reply_age,
            }
        return [seen]

    @staticmethod
    def observe(key: str, result: dict[str, Any]) -> Observation:
        """Turn a ``postgres.replication`` result into an observation (pure)."""
        if result["role"] == "leader":
            followers = result["followers"]
            data = {
                "node": key,
                "role": "leader",
                "follower_count": len(followers),
                "followers": followers,
            }
            return Observation(key, "leader", bad=False, data=data)
        receiver = result["wal_receiver"]
        data = {
            "node": key,
            "role": "follower",
            "problems": list(result["problems"]),
            "lag_bytes": result["lag_bytes"],
            "replay_paused": result["replay_paused"],
            "receiver_status": None if receiver is None else receiver["status"],
            "wal_receiver": receiver,
            # each view's problems, and which saw any (the worst wins)
            "views": result.get("views", {}),
            "seen_by": result.get("seen_by", []),
        }
        if result["in_sync"]:
            return Observation(key, "in_sync", bad=False, data=data)
        return Observation(key, "out_of_sync", bad=True, data=data)
