"""What every beacon is: a small, synchronous ``check()`` that reports observations.

A beacon watches one kind of thing (services, files, disks...) and returns, on each check,
one :class:`Observation` per watched key. It keeps no schedule and emits nothing itself:
:class:`minion.beacons.runner.BeaconRunner` calls ``check()`` in a worker thread on the
beacon's interval and turns changes of state into events. Parameters come validated by the
beacon's ``Config`` model; dependencies come through :class:`BeaconContext`, never globals.

Any beacon can also run on its own for a quick look from a shell (``minion.beacons.__main__``)::

    python -m minion.beacons diskusage '{"paths": {"/": 90}}'
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from minion.services.base import ServiceProvider


@dataclass(frozen=True)
class Observation:
    """One watched thing as a beacon saw it at one check."""

    #: what is observed: the service name, the path, the process name...
    key: str
    #: its state in one word: "running", "over", "absent", "changed"...
    state: str
    #: whether this state calls for attention (a reactor usually acts on bad states)
    bad: bool
    #: facts published with the event (name, pid, percent, threshold, sha256...)
    data: dict[str, Any] = field(default_factory=dict)
    #: a one-off occurrence ("changed"), not a lasting state: the runner emits it each
    #: time it is seen and keeps the key's previous state as its state
    transient: bool = False


@dataclass(frozen=True)
class BeaconContext:
    """The dependencies of beacons, passed explicitly."""

    minion_id: str
    services: ServiceProvider


class BeaconConfig(BaseModel):
    """Base of every beacon's parameter model: unknown parameters are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Beacon(ABC):
    """Base class of beacons. Subclasses set ``name`` and ``Config`` and implement ``check``.

    A subclass narrows ``config`` to its own model (``config: DiskUsageConfig``); the runner
    guarantees the instance it passes was validated by ``Config``.
    """

    #: the beacon type, as written in the minion config (``beacons: {service: ...}``)
    name: ClassVar[str]
    #: the model that validates this beacon's parameters
    Config: ClassVar[type[BeaconConfig]] = BeaconConfig

    config: BeaconConfig

    def __init__(self, config: BeaconConfig, ctx: BeaconContext) -> None:
        self.config = config
        self.ctx = ctx

    @abstractmethod
    def check(self) -> list[Observation]:
        """Observe every watched key once.

        Runs in a worker thread and should return within a second or so; it may read /proc,
        stat files or ask the service provider. An exception fails this check only: the
        runner logs it and tries again next interval.
        """
