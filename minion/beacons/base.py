"""What every beacon is: a small, synchronous ``check()`` that reports observations.

A beacon watches one kind of thing (services, files, disks...) and returns, on each check,
one :class:`Observation` per watched key. It keeps no schedule and emits nothing itself:
:class:`minion.beacons.runner.BeaconRunner` calls ``check()`` in a worker thread on the
beacon's interval and turns changes of state into events. Parameters come validated by the
beacon's ``Config`` model; dependencies come through :class:`BeaconContext`, never globals,
and so do execution functions: ``self.ctx.call("etcd.health", endpoints=...)``.

Any beacon can also run on its own for a quick look from a shell (``minion.beacons.__main__``)::

    python -m minion.beacons diskusage '{"paths": {"/": 90}}'
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from minion.config import MinionConfig
from minion.modules import REGISTRY
from minion.modules.base import Context, Outcome
from minion.services.base import ServiceProvider
from saline.errors import ExecutionError


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
    #: the execution functions :meth:`call` may run, by full name ("etcd.health")
    functions: Mapping[str, Callable[..., Any]] = field(default_factory=lambda: REGISTRY)

    def call(self, function: str, /, **kwargs: Any) -> Any:
        """Run the execution function ``function`` ("etcd.health") and return its value.

        Like the ``call`` of a state's context, a function that returns an
        :class:`~minion.modules.base.Outcome` gives its value. Unlike a job, the function
        runs in the calling thread (the beacon's worker), not in a forked child, and under
        no timeout but its own: a beacon passes the function's ``timeout`` where it has one.
        It gets a context with this minion's id, service provider and functions, the
        default minion config and no grains.

        :raises ExecutionError: no such function, or the function's own expected failure
            with its message unchanged (beacons publish it as their ``error``).
        """
        fn = self.functions.get(function)
        if fn is None:
            raise ExecutionError(f"no execution function {function!r} on this minion")
        module_ctx = Context(
            minion_id=self.minion_id,
            config=MinionConfig(),
            grains={},
            services=self.services,
            functions=self.functions,
        )
        value = fn(module_ctx, **kwargs)
        return value.value if isinstance(value, Outcome) else value


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
    #: every state this beacon reports as bad (each must be answered by a rule: the Chef HA
    #: formula's are checked against its shipped rules in tests/unit/test_chef_rules.py)
    bad_states: ClassVar[tuple[str, ...]] = ()

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
