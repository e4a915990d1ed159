"""Choose the service provider the minion config asks for."""

from pathlib import Path

from minion.config import MinionConfig
from minion.services.base import ServiceProvider
from minion.services.supervisor import SupervisorProvider
from minion.services.systemd import SystemdProvider

#: exists only when systemd is the running init (sd_booted(3))
SYSTEMD_RUNTIME_DIR = Path("/run/systemd/system")


def select_provider(config: MinionConfig) -> ServiceProvider:
    """systemd or supervisor as configured; "auto" picks systemd only when it is the init
    and no supervisor services are configured."""
    choice = config.service_provider
    if choice == "auto":
        use_systemd = SYSTEMD_RUNTIME_DIR.is_dir() and not config.services
        choice = "systemd" if use_systemd else "supervisor"
    if choice == "systemd":
        return SystemdProvider()
    return SupervisorProvider(config.services, config.cachedir / "services")
