"""The ``diskusage`` beacon: how full filesystems are.

Params:
  ``paths``: mount point (or any path on the filesystem) -> threshold, in percent used.

States (one observation per path, keyed by the path):
  ``ok``, ``over`` (bad: usage reached the threshold), ``error`` (bad: the path cannot be
  examined; ``error`` says why).

Usage is computed as ``df`` does: used / (used + available to unprivileged users).

Data: ``path``, ``percent`` (rounded to 0.01), ``threshold``.

Example::

    beacons:
      diskusage: {paths: {/: 90, /var/opt/opscode: 80}, interval: 60}
"""

import os
from typing import Annotated

from pydantic import Field

from minion.beacons.base import Beacon, BeaconConfig, Observation

Percent = Annotated[float, Field(ge=0, le=100)]


class DiskUsageConfig(BeaconConfig):
    #: path -> percent used at which the filesystem counts as over
    paths: dict[str, Percent] = Field(min_length=1)


def used_percent(path: str) -> float:
    """Percent of ``path``'s filesystem in use, as ``df`` reports it."""
    st = os.statvfs(path)
    used = st.f_blocks - st.f_bfree
    total = used + st.f_bavail
    return 100.0 * used / total if total else 0.0


class DiskUsageBeacon(Beacon):
    """Watch filesystem usage against per-path thresholds."""

    name = "diskusage"
    bad_states = ("over", "error")
    Config = DiskUsageConfig
    config: DiskUsageConfig

    def check(self) -> list[Observation]:
        return [self._observe(path, limit) for path, limit in self.config.paths.items()]

    @staticmethod
    def _observe(path: str, threshold: float) -> Observation:
        data: dict[str, object] = {"path": path, "threshold": threshold}
        try:
            percent = round(used_percent(path), 2)
        except OSError as exc:
            data["error"] = exc.strerror or str(exc)
            return Observation(path, "error", bad=True, data=data)
        data["percent"] = percent
        over = percent >= threshold
        return Observation(path, "over" if over else "ok", bad=over, data=data)
