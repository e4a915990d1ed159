"""The ``chef_server_status`` beacon: each Chef Infra Server frontend service as
``chef-server-ctl status`` reports it.

Params: none.

States (one observation per service, keyed by the service, plus ``chef-server-ctl`` for the
tool itself):
  ``ok`` (the service runs), ``down`` (bad: listed but not running: runit's ``down``,
  ``finish``, ``fail`` or ``warning``), ``unreadable`` (bad, keyed ``chef-server-ctl``: the
  status could not be read or parsed; each service's last observation stands).

Data: ``service``, ``state`` (runit's word), ``pid``, ``seconds`` (in that state),
``normally_up`` and ``problems``; for ``unreadable``, ``error``.

Example::

    beacons:
      chef_server_status: {interval: 10, reassert: 60}
"""

from typing import Any

from minion.beacons.base import Beacon, BeaconConfig, Observation
from saline.errors import ExecutionError

#: seconds before ``chef-server-ctl status`` is killed
TIMEOUT = 30.0
#: the key of the tool's own observation
TOOL_KEY = "chef-server-ctl"


class ChefServerStatusBeacon(Beacon):
    """Watch a frontend's services through ``chef-server-ctl status``."""

    name = "chef_server_status"
    bad_states = ("down", "unreadable")
    Config = BeaconConfig

    def check(self) -> list[Observation]:
        try:
            result = self.ctx.call("chef_server.status", timeout=TIMEOUT)
        except ExecutionError as exc:
            data = {"service": TOOL_KEY, "error": str(exc), "problems": [str(exc)]}
            return [Observation(TOOL_KEY, "unreadable", bad=True, data=data)]
        return [
            Observation(TOOL_KEY, "ok", bad=False, data={"service": TOOL_KEY}),
            *self.observe(result),
        ]

    @staticmethod
    def observe(result: dict[str, Any]) -> list[Observation]:
        """Turn a ``chef_server.status`` result into one observation per service (pure)."""
        observations = []
        for name, row in result["services"].items():
            problems = [p for p in result["problems"] if p.startswith(f"{name}:")]
            data = {"service": name, **row, "problems": problems}
            if row["state"] == "run":
                observations.append(Observation(name, "ok", bad=False, data=data))
            else:
                observations.append(Observation(name, "down", bad=True, data=data))
        return observations
