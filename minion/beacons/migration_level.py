"""The ``migration_level`` beacon: a Chef Infra Server frontend's upgrade migration level.

The master compares the levels of all frontends; this beacon publishes the level and says
when the file's content changes.

Params:
  ``path``: the migration-level file (default ``/var/opt/opscode/upgrades/migration-level``).

States (one observation keyed ``migration_level``):
  ``present`` (ok), ``missing`` (bad: no file), ``invalid`` (bad: unreadable or not a JSON
  object with integer ``major`` and ``minor``; ``error`` says why), ``changed`` (bad,
  one-off: the sha256 differs from the previous check's; the next check says ``present``).

The first check records the baseline, so a change made while the minion was down is not
reported as ``changed``.

Data: ``path``, ``major``, ``minor``, ``level`` (``[major, minor]`` or null), ``sha256``;
for ``changed`` also ``previous_sha256``, ``previous_major`` and ``previous_minor``; for
``invalid``, ``error``.

Example::

    beacons:
      migration_level: {interval: 60}
"""

from typing import Any

from pydantic import field_validator

from minion.beacons.base import Beacon, BeaconConfig, BeaconContext, Observation
from minion.modules import chef_server
from saline.errors import ExecutionError

KEY = "migration_level"


class MigrationLevelBeaconConfig(BeaconConfig):
    #: the migration-level file
    path: str = chef_server.MIGRATION_LEVEL_PATH

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"{path!r} is not an absolute path")
        return path


class MigrationLevelBeacon(Beacon):
    """Watch the migration-level file: present, missing, invalid, or changed."""

    name = "migration_level"
    bad_states = ("invalid", "missing", "changed")
    Config = MigrationLevelBeaconConfig
    config: MigrationLevelBeaconConfig

    def __init__(self, config: BeaconConfig, ctx: BeaconContext) -> None:
        super().__init__(config, ctx)
        #: the last level read successfully; None before it, or after missing/invalid
        self._previous: dict[str, Any] | None = None

    def check(self) -> list[Observation]:
        path = self.config.path
        before, self._previous = self._previous, None
        try:
            level = self.ctx.call("chef_server.migration_level", path=path)
        except ExecutionError as exc:
            data: dict[str, Any] = {
                "path": path,
                "major": None,
                "minor": None,
                "level": None,
                "sha256": None,
                "error": str(exc),
            }
            return [Observation(KEY, "invalid", bad=True, data=data)]
        data = {
            "path": path,
            "major": level["major"],
            "minor": level["minor"],
            "sha256": level["sha256"],
            # [major, minor]: lists compare in order, so the master can take the highest
            "level": [level["major"], level["minor"]] if level["exists"] else None,
        }
        if not level["exists"]:
            return [Observation(KEY, "missing", bad=True, data=data)]
        self._previous = level
        if before is None or before["sha256"] == level["sha256"]:
            return [Observation(KEY, "present", bad=False, data=data)]
        data["previous_sha256"] = before["sha256"]
        data["previous_major"] = before["major"]
        data["previous_minor"] = before["minor"]
        return [Observation(KEY, "changed", bad=True, data=data, transient=True)]
