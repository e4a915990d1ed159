"""Who the master serves: accepted minions, the grains they last reported, their presence.

Targets match against :meth:`Inventory.targets`; the grains there are what minions claim
(fine for aiming a job). Whatever unlocks secrets or authority uses trusted grains instead
(``master/trust.py``).
"""

import time
from typing import Any

from master.presence import Presence
from master.store.base import MinionRecord, Store
from saline.keys import KeyRing, KeyState


class Inventory:
    def __init__(self, keys: KeyRing, presence: Presence, store: Store) -> None:
        self.keys = keys
        self.presence = presence
        self._store = store
        self._grains: dict[str, dict[str, Any]] = {m.id: m.grains for m in store.minions().values()}

    def targets(self) -> dict[str, dict[str, Any]]:
        """Accepted minions and their last-known grains: what targets match against."""
        return {m: self._grains.get(m, {}) for m in self.keys.ids(KeyState.ACCEPTED)}

    def claimed_grains(self, minion_id: str) -> dict[str, Any]:
        return self._grains.get(minion_id, {})

    def hello(self, minion_id: str, grains: dict[str, Any]) -> None:
        """A minion (re)connected with these grains: remembered, and stored for restarts."""
        self._grains[minion_id] = grains
        self._store.save_minion(MinionRecord(minion_id, grains, time.time()))

    def online(self, minion_id: str) -> bool:
        return self.presence.online(minion_id)

    def online_ids(self) -> list[str]:
        return self.presence.online_ids()
