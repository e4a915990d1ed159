"""The life of a daemon, master or minion: start, supervised loops, signals, reload, stop.

SIGTERM and SIGINT stop it. SIGHUP asks it to reload what can change while it runs; what
it reloaded, and what would need a restart, is logged as one line. A reload that fails
changes nothing and the daemon runs on.
"""

import asyncio
import logging
import signal
from typing import Protocol

from saline.supervisor import Supervisor

log = logging.getLogger(__name__)


class Service(Protocol):
    #: "master" or "minion": names its log lines and tasks
    name: str

    async def start(self, supervisor: Supervisor) -> None:
        """Bind or connect, and start the loops under ``supervisor``."""
        ...

    def reload(self) -> list[str]:
        """Reload what can change live; one phrase per part (what changed, or why not).

        :raises Exception: when nothing could be reloaded (the daemon runs on unchanged).
        """
        ...

    async def stop(self) -> None:
        """Say goodbye and release everything (the loops are already cancelled)."""
        ...


async def run_service(service: Service, supervisor: Supervisor | None = None) -> None:
    """Run ``service`` until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    supervisor = supervisor or Supervisor(daemon=service.name)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, reload_service, service)
    try:
        await service.start(supervisor)
        await stopping.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await supervisor.stop()
        await service.stop()
        log.info("%s stopped", service.name)


def reload_service(service: Service) -> list[str]:
    """SIGHUP: reload, and say what was reloaded in one log line."""
    try:
        said = service.reload()
    except Exception as e:  # a bad config file: keep everything as it is
        log.error("%s: reload on SIGHUP failed, nothing changed: %s", service.name, e)
        return []
    log.warning("%s reloaded on SIGHUP: %s", service.name, "; ".join(said) or "nothing")
    return said
