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

from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any, TypeVar

from minion.beacons.base import Beacon
from minion.beacons.registry import BEACONS
from minion.modules import MODULES
from saline.errors import SalineError

BEACON_GROUP = "saline.beacons"
MODULE_GROUP = "saline.modules"

T = TypeVar("T")


class PluginError(SalineError):
    """A plugin failed to load (message names the distribution and the entry point)."""


def _origin(ep: EntryPoint) -> str:
    dist = ep.dist
    name = f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"
    return f"plugin {name}, entry point {ep.group}:{ep.name} = {ep.value}"


def _load(
    group: str, builtins: Mapping[str, T], check: Callable[[object], str | None]
) -> dict[str, T]:
    """Built-ins plus every entry point of ``group``, each vetted by ``check``.

    ``check`` returns None for an acceptable object, else what is wrong with it.
    """
    found: dict[str, T] = dict(builtins)
    origins: dict[str, str] = {}
    for ep in entry_points(group=group):
        origin = _origin(ep)
        if ep.name in builtins:
            raise PluginError(f"{origin}: name {ep.name!r} is taken by a built-in")
        if ep.name in origins:
            raise PluginError(f"{origin}: name {ep.name!r} is taken by {origins[ep.name]}")
        try:
            obj: Any = ep.load()
        except Exception as exc:
            raise PluginError(f"{origin}: import failed: {type(exc).__name__}: {exc}") from exc
        problem = check(obj)
        if problem is not None:
            raise PluginError(f"{origin}: {problem}")
        found[ep.name] = obj
        origins[ep.name] = origin
    return found


def _check_beacon(obj: object) -> str | None:
    if not (isinstance(obj, type) and issubclass(obj, Beacon)):
        return f"expected a subclass of minion.beacons.base.Beacon, got {obj!r}"
    return None


def _check_module(obj: object) -> str | None:
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
    return _load(BEACON_GROUP, BEACONS, _check_beacon)


def load_modules() -> dict[str, ModuleType]:
    """The built-in execution modules plus those of installed plugins, by name.

    :raises PluginError: for the first plugin that fails to import, is not a module with a
        ``FUNCTIONS`` dict of callables, or reuses a name.
    """
    return _load(MODULE_GROUP, MODULES, _check_module)
