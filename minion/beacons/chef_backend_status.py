"""The ``chef_backend_status`` beacon: each Chef Backend service as ``chef-backend-ctl status``
reports it, locally and cluster-wide.

Params: none.

States (one observation per service line, keyed by the service; the expected services
elasticsearch, etcd, leaderl and postgresql are always reported):
  ``ok`` (running locally, distributed status nominal), ``degraded`` (bad: not running, a
  distributed status off nominal, not listed, or the status could not be read).

Data: ``service``, ``local``, ``pid``, ``time_in_state``, ``distributed`` (the parsed
``key: value`` pairs) and ``problems`` (sentences saying what is wrong).

Example::

    beacons:
      chef_backend_status: {interval: 30}
"""

from typing import Any

from minion.beacons.base import Beacon, BeaconConfig, Observation
from minion.modules import chef_backend
from saline.errors import ExecutionError

#: seconds before ``chef-backend-ctl status`` is killed
TIMEOUT = 30.0


class ChefBackendStatusBeacon(Beacon):
    """Watch the Chef Backend services through ``chef-backend-ctl status``."""

    name = "chef_backend_status"
    bad_states = ("degraded",)
    Config = BeaconConfig

    def check(self) -> list[Observation]:
        try:
            result = self.ctx.call("chef_backend.status", timeout=TIMEOUT)
        except ExecutionError as exc:
            problem = f"chef-backend-ctl status failed: {exc}"
            return [
                Observation(name, "degraded", bad=True, data=_data(name, None, [problem]))
                for name in chef_backend.EXPECTED_SERVICES
            ]
        return self.observe(result)

    @staticmethod
    def observe(result: dict[str, Any]) -> list[Observation]:
        """Turn a ``chef_backend.status`` result into observations (pure)."""
        services: dict[str, Any] = result["services"]
        names = [*services, *(n for n in chef_backend.EXPECTED_SERVICES if n not in services)]
        observations = []
        for name in names:
            prefix = f"{name}:"
            problems = [p for p in result["problems"] if p.startswith(prefix)]
            data = _data(name, services.get(name), problems)
            if problems:
                observations.append(Observation(name, "degraded", bad=True, data=data))
            else:
                observations.append(Observation(name, "ok", bad=False, data=data))
        return observations


def _data(name: str, row: dict[str, Any] | None, problems: list[str]) -> dict[str, Any]:
    return {
        "service": name,
        "local": None if row is None else row["local"],
        "pid": None if row is None else row["pid"],
        "time_in_state": None if row is None else row["time_in_state"],
        "distributed": {} if row is None else row["distributed"],
        "problems": problems,
    }
