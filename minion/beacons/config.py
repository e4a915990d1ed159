"""The ``beacons:`` section of the minion config: which beacons run, how often, with what.

Each key names a beacon instance; its type is ``beacon:``, or the key itself::

    beacons:
      service: {services: [nginx], interval: 5}
      etcd_watch: {beacon: service, services: [etcd], reassert: 60}
      pg_replication: {user: saline, announce: true}

``announce: true`` makes the runner emit each key's first observation even when it is good,
so the master's cluster view knows every node's state from the start (which PostgreSQL node
leads, each backend's clock offset...) instead of only learning of bad ones.

Keys other than the five below are the beacon's own parameters. They are validated by the
beacon's ``Config`` model when the runner is built (the beacon may come from a plugin),
so a bad parameter stops the minion at start with a message naming the beacon and field.
"""

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

#: instance names go into event tags: keep them to one tag segment
BEACON_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

BeaconName = Annotated[str, StringConstraints(pattern=BEACON_NAME_PATTERN)]


class BeaconSpec(BaseModel):
    """One configured beacon: scheduling and edge settings plus the beacon's parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)

    #: beacon type (a key of the beacon registry); defaults to this entry's key
    beacon: BeaconName | None = None
    #: seconds between checks
    interval: float = Field(default=10.0, gt=0)
    #: while a bad state persists, emit it again every this many seconds (never when unset)
    reassert: float | None = Field(default=None, gt=0)
    #: a disabled beacon is validated but never checked
    enabled: bool = True
    #: emit each key's first observation whatever its state (by default only a bad one)
    announce: bool = False
    #: emit the current observation again every this many seconds, good or bad: keeps the
    #: master's view of a value that moves within a state (a clock offset) fresh
    refresh: float | None = Field(default=None, gt=0)

    @property
    def params(self) -> dict[str, Any]:
        """The beacon's own parameters (every key not listed above)."""
        return dict(self.model_extra or {})


#: the type of ``MinionConfig.beacons``: instance name -> spec
BeaconsConfig = dict[BeaconName, BeaconSpec]
