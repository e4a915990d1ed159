"""The ``service`` beacon: whether services run, as the minion's service provider sees them.

Params:
  ``services``: names of the services to watch (systemd units or supervisor services).

States (one observation per service, keyed by its name):
  ``running`` (ok), ``stopped`` (bad), ``unknown`` (bad: the provider does not know the
  service or cannot tell; ``error`` says why).

Data: ``name``, ``pid`` (when running).

Example::

    beacons:
      service: {services: [chef-server-ctl, etcd], interval: 5, reassert: 60}
"""

from pydantic import Field

from minion.beacons.base import Beacon, BeaconConfig, Observation
from saline.errors import SalineError


class ServiceBeaconConfig(BeaconConfig):
    #: services to watch
    services: list[str] = Field(min_length=1)


class ServiceBeacon(Beacon):
    """Watch services through ``ctx.services``: running, stopped or unknown."""

    name = "service"
    bad_states = ("stopped", "unknown")
    Config = ServiceBeaconConfig
    config: ServiceBeaconConfig

    def check(self) -> list[Observation]:
        return [self._observe(name) for name in self.config.services]

    def _observe(self, name: str) -> Observation:
        try:
            status = self.ctx.services.status(name)
        except SalineError as exc:
            data = {"name": name, "pid": None, "error": str(exc)}
            return Observation(name, "unknown", bad=True, data=data)
        state = "running" if status.running else "stopped"
        return Observation(
            name, state, bad=not status.running, data={"name": name, "pid": status.pid}
        )
