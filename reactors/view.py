"""What the reactor may know about the cluster: a read-only query seam.

The engine and rule expressions see the cluster only through :class:`ClusterView`; the master
implements it over its key ring, presence and event store. :class:`StaticView` is the
in-memory implementation for tests and the master's first version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from saline.targeting import TargetType, match_minions

__all__ = ["ClusterView", "StaticView", "ViewProxy"]


@runtime_checkable
class ClusterView(Protocol):
    """Read-only cluster queries. Implementations must not change anything when called."""

    def accepted(self) -> set[str]:
        """Ids of minions whose keys are accepted."""
        ...

    def online(self, minion: str) -> bool:
        """True if the minion is currently present (heartbeats)."""
        ...

    def members(self, group_expr: str) -> list[str]:
        """Sorted accepted minion ids matching the compound expression ``group_expr``.

        :raises saline.errors.TargetError: if the expression is malformed.
        """
        ...

    def latest(self, minion: str, beacon: str) -> dict[str, Any] | None:
        """The latest observation ``beacon`` reported for ``minion``, or None."""
        ...

    def values(self, group_expr: str, beacon: str, field: str) -> dict[str, Any]:
        """``field`` of each group member's latest ``beacon`` observation (members without one
        are left out)."""
        ...


@dataclass
class StaticView:
    """A :class:`ClusterView` over plain data: inventory (accepted id -> grains), the online
    set (None: everyone accepted is online) and observations (minion -> beacon -> data)."""

    inventory: dict[str, dict[str, Any]]
    online_ids: set[str] | None = None
    observations: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def accepted(self) -> set[str]:
        return set(self.inventory)

    def online(self, minion: str) -> bool:
        if minion not in self.inventory:
            return False
        return self.online_ids is None or minion in self.online_ids

    def members(self, group_expr: str) -> list[str]:
        return match_minions(group_expr, TargetType.COMPOUND, self.inventory)

    def latest(self, minion: str, beacon: str) -> dict[str, Any] | None:
        return self.observations.get(minion, {}).get(beacon)

    def values(self, group_expr: str, beacon: str, field: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for minion in self.members(group_expr):
            observed = self.latest(minion, beacon)
            if isinstance(observed, Mapping) and field in observed:
                found[minion] = observed[field]
        return found


class ViewProxy:
    """What templates see as ``view``: the four documented queries and nothing else.

    The sandbox refuses underscore attributes, so ``view._view`` is out of reach and a
    template cannot walk from the view into the implementation (its inventory, store, ...).
    """

    __slots__ = ("_view",)

    def __init__(self, view: ClusterView) -> None:
        self._view = view

    def latest(self, minion: str, beacon: str) -> dict[str, Any] | None:
        return self._view.latest(minion, beacon)

    def members(self, group_expr: str) -> list[str]:
        return self._view.members(group_expr)

    def online(self, minion: str) -> bool:
        return self._view.online(minion)

    def values(self, group_expr: str, beacon: str, field: str) -> dict[str, Any]:
        return self._view.values(group_expr, beacon, field)
