"""Plugins found through Python entry points: one loader for beacons, execution modules and
cluster checks. A plugin that cannot be imported, is not what its group expects, or takes
a name already in use stops the load with an error naming the distribution and the entry
point: plugins never vanish silently."""

from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from saline.errors import SalineError

T = TypeVar("T")


def origin(ep: EntryPoint) -> str:
    """``plugin DIST VERSION, entry point GROUP:NAME = VALUE``: where an error points."""
    dist = ep.dist
    name = f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"
    return f"plugin {name}, entry point {ep.group}:{ep.name} = {ep.value}"


def load_entry_points(
    group: str,
    builtins: Mapping[str, T],
    vet: Callable[[str, object], str | None],
    error: type[SalineError],
    found: Iterable[EntryPoint] | None = None,
) -> dict[str, T]:
    """``builtins`` plus every entry point of ``group`` (or of ``found``), by name.

    ``vet(name, obj)`` returns None for an acceptable plugin, else what is wrong with it.

    :raises error: for the first entry point that fails.
    """
    table: dict[str, T] = dict(builtins)
    origins: dict[str, str] = {}
    for ep in entry_points(group=group) if found is None else found:
        where = origin(ep)
        if ep.name in builtins:
            raise error(f"{where}: name {ep.name!r} is taken by a built-in")
        if ep.name in origins:
            raise error(f"{where}: name {ep.name!r} is taken by {origins[ep.name]}")
        try:
            obj: Any = ep.load()
        except Exception as exc:
            raise error(f"{where}: import failed: {type(exc).__name__}: {exc}") from exc
        problem = vet(ep.name, obj)
        if problem is not None:
            raise error(f"{where}: {problem}")
        table[ep.name] = obj
        origins[ep.name] = where
    return table
