"""The seam between ``service.*`` functions (and later states) and the init system."""

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

from saline.errors import ExecutionError


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    #: main pid when running and known
    pid: int | None = None
    #: enabled at boot, when the provider knows
    enabled: bool | None = None
    #: provider-specific one-line detail ("active (running)", "exited 1"...)
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ServiceProvider(ABC):
    """Start, stop and inspect services. Every method is synchronous and may block briefly.

    Methods raise ``saline.errors.ExecutionError`` for an unknown service or a failed
    action, with a message an operator can act on.
    """

    name: str

    @abstractmethod
    def status(self, service: str) -> ServiceStatus: ...

    @abstractmethod
    def start(self, service: str) -> ServiceStatus: ...

    @abstractmethod
    def stop(self, service: str) -> ServiceStatus: ...

    def restart(self, service: str) -> ServiceStatus:
        self.stop(service)
        return self.start(service)

    def reload(self, service: str) -> ServiceStatus:
        """Ask a running service to re-read its configuration (default: restart it)."""
        return self.restart(service)

    def enable(self, service: str) -> ServiceStatus:
        """Start the service at boot. Providers without boot management refuse."""
        raise ExecutionError(f"the {self.name} provider does not manage boot enablement")

    def disable(self, service: str) -> ServiceStatus:
        """Do not start the service at boot. Providers without boot management refuse."""
        raise ExecutionError(f"the {self.name} provider does not manage boot enablement")
