"""Third-party beacons and execution modules, found through Python entry points.

A distribution publishes them in its metadata::

    [project.entry-points."saline.beacons"]
    ntp_drift = "saline_ntp.beacon:NtpDriftBeacon"     # a minion.beacons.base.Beacon subclass

    [project.entry-points."saline.modules"]
    ntp = "saline_ntp.module"                          # a module with a FUNCTIONS dict

The entry point's name is the beacon type or module name. A plugin that cannot be imported,
has the wrong type, or takes a name already in use raises :class:`PluginError` when the
minion starts: plugins never vanish silently.
"""

from types import ModuleType

from minion.beacons.base import Beacon
from minion.beacons.registry import BEACONS
from minion.modules import MODULES
from saline.errors import SalineError
from saline.plugins import load_entry_points

BEACON_GROUP = "saline.beacons"
MODULE_GROUP = "saline.modules"


class PluginError(SalineError):
    """A plugin failed to load (message names the distribution and the entry point)."""


def _check_beacon(name: str, obj: object) -> str | None:
    if not (isinstance(obj, type) and issubclass(obj, Beacon)):
        return f"expected a subclass of minion.beacons.base.Beacon, got {obj!r}"
    return None


def _check_module(name: str, obj: object) -> str | None:
    if not isinstance(obj, ModuleType):
        return f"expected a module, got {obj!r}"
    table = getattr(obj, "FUNCTIONS", None)
    if not isinstance(table, dict):
        return f"module {obj.__name__} has no FUNCTIONS dict"
    bad = [str(key) for key, fn in table.items() if not isinstance(key, str) or not callable(fn)]
    if bad:
        return f"FUNCTIONS of {obj.__name__} maps {', '.join(bad)} to non-callables or non-names"
    return None


def load_beacons() -> dict[str, type[Beacon]]:
    """The built-in beacon types plus those of installed plugins, by name.

    :raises PluginError: for the first plugin that fails to import, is not a ``Beacon``
        subclass, or reuses a name.
    """
    return load_entry_points(BEACON_GROUP, BEACONS, _check_beacon, PluginError)


def load_modules() -> dict[str, ModuleType]:
    """The built-in execution modules plus those of installed plugins, by name.

    :raises PluginError: for the first plugin that fails to import, is not a module with a
        ``FUNCTIONS`` dict of callables, or reuses a name.
    """
    return load_entry_points(MODULE_GROUP, MODULES, _check_module, PluginError)
