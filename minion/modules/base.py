"""What every execution function receives and may return.

An execution function is a plain function ``fn(ctx: Context, *args, **kwargs)``, listed in
its module's ``FUNCTIONS`` dict and registered in ``minion.modules.REGISTRY``. Nothing is
injected behind its back: everything it needs comes through ``ctx``. It runs in a forked
child of the minion under a timeout, so it may block; it must return msgpack-able data.
An expected failure raises :class:`saline.errors.ExecutionError`.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from minion.channel import MasterChannel
from minion.config import MinionConfig
from minion.services.base import ServiceProvider


@dataclass(frozen=True)
class Outcome:
    """A return value with an explicit retcode (``cmd.run``); success means retcode 0."""

    value: Any
    retcode: int


@dataclass
class Context:
    """The dependencies of execution functions, passed explicitly."""

    minion_id: str
    config: MinionConfig
    grains: dict[str, Any]
    services: ServiceProvider
    #: every registered function by full name ("test.ping"), for sys.*
    functions: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    #: the job's line to the master (files, pillar); set in the job's child process
    channel: "MasterChannel | None" = None
