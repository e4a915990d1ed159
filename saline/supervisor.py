"""Keep a daemon's loops running: a loop that raises is logged and restarted.

Master and minion are each a handful of endless loops (the master's socket, ZAP, presence,
reactor; the minion's socket, timers, beacons). A bug or a failing store write in one of
them must not end the daemon, and must not go unseen:
each failure is logged with its traceback, counted per task and shown by ``saline status``;
the task restarts after a back-off that doubles per consecutive failure (capped), and a
task that then runs ``healthy_after`` seconds without failing starts again from the
shortest back-off.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

LoopFactory = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class TaskHealth:
    """What ``saline status`` shows of one supervised task."""

    restarts: int = 0
    last_error: str | None = None
    last_failure: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_failure": self.last_failure,
        }


class Supervisor:
    def __init__(
        self,
        first_backoff: float = 0.1,
        max_backoff: float = 30.0,
        healthy_after: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        daemon: str = "master",
    ) -> None:
        self._sleep = sleep
        self.daemon = daemon
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.healthy_after = healthy_after
        self.health: dict[str, TaskHealth] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, factory: LoopFactory) -> None:
        """Run ``factory()`` as task ``name`` until :meth:`stop`, restarting it on failure."""
        self.health[name] = TaskHealth()
        self._tasks.append(asyncio.create_task(self._keep(name, factory), name=name))

    async def _keep(self, name: str, factory: LoopFactory) -> None:
        health = self.health[name]
        backoff = self.first_backoff
        while True:
            started = time.monotonic()
            try:
                await factory()
                reason = "returned"  # a loop is endless: ending is a failure too
            except asyncio.CancelledError:
                raise
            except Exception as e:
                reason = f"{type(e).__name__}: {str(e)[:500]}"
                log.exception("%s task %s failed", self.daemon, name)
            if time.monotonic() - started >= self.healthy_after:
                backoff = self.first_backoff
            health.restarts += 1
            health.last_error, health.last_failure = reason, time.time()
            log.error("restarting %s task %s in %.1fs (%s)", self.daemon, name, backoff, reason)
            await self._sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: h.as_dict() for name, h in sorted(self.health.items())}

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
