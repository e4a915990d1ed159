"""The ``load`` beacon: the system load average against thresholds.

Params (at least one):
  ``max_1m``, ``max_5m``, ``max_15m``: highest acceptable 1, 5 and 15 minute load average.

States (one observation, keyed ``load``):
  ``ok``, ``high`` (bad: some average exceeds its threshold; ``exceeded`` lists which).

Data: ``load_1m``, ``load_5m``, ``load_15m``, the configured ``max_*``, ``exceeded``.

Example::

    beacons:
      load: {max_5m: 8, max_15m: 6, interval: 30, reassert: 600}
"""

import os
from typing import Any

from pydantic import Field, model_validator

from minion.beacons.base import Beacon, BeaconConfig, Observation


class LoadConfig(BeaconConfig):
    max_1m: float | None = Field(default=None, ge=0)
    max_5m: float | None = Field(default=None, ge=0)
    max_15m: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _some_threshold(self) -> "LoadConfig":
        if self.max_1m is None and self.max_5m is None and self.max_15m is None:
            raise ValueError("set at least one of max_1m, max_5m, max_15m")
        return self


class LoadBeacon(Beacon):
    """Watch the 1, 5 and 15 minute load averages."""

    name = "load"
    bad_states = ("high",)
    Config = LoadConfig
    config: LoadConfig

    def check(self) -> list[Observation]:
        cfg = self.config
        data: dict[str, Any] = {}
        exceeded: list[str] = []
        for window, value, limit in zip(
            ("1m", "5m", "15m"), os.getloadavg(), (cfg.max_1m, cfg.max_5m, cfg.max_15m), strict=True
        ):
            data[f"load_{window}"] = value
            data[f"max_{window}"] = limit
            if limit is not None and value > limit:
                exceeded.append(window)
        data["exceeded"] = exceeded
        high = bool(exceeded)
        return [Observation("load", "high" if high else "ok", bad=high, data=data)]
