"""Minion keys shared through the store: several masters on one store share their keys.

The files under ``pki_dir`` stay the fast local source (the ZAP handler reads the in-memory
``KeyRing``, which keeps working while the store is down); the store's ``minion_keys``
table is a mirror every master follows. ``KeySync.sync`` runs at start and about once a
second:

1. pull: rows written since the last one read are applied to the ring (a tombstone deletes
   the local key, trusted grains are replaced by the row's);
2. push: the ring's keys (one per id: accepted over rejected over pending) and trusted
   grains are compared with what was mirrored last; what changed here (``saline key ...``,
   a new pending minion) is written to the store, a key gone here becomes a tombstone.

An id changed on both sides since the last sync takes the store's version (logged). The
first sync pushes every local key the store does not know (upgrading a single master loses
no key) and deletes those the store has a tombstone for; later, a tombstone this mirror
wrote or applied itself is no news when read again (a minion deleted, then presenting its
key again, stays pending). A store error is logged once and
the next tick tries again; the ring is never touched by a failed pull.
"""

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from master.store.base import KeyRow, KeyRowState, Store, StoreError
from saline.errors import KeyRingError
from saline.keys import KeyRing, KeyState, check_id

log = logging.getLogger(__name__)

#: where ``KeyRing`` keeps trusted grains (``saline/keys.py``), one JSON file per id
GRAINS_DIR = "minions_grains"

#: the state a ring key of an id shows the others when the id has copies in several
_PRIORITY = (KeyState.ACCEPTED, KeyState.REJECTED, KeyState.PENDING)


@dataclass(frozen=True)
class Mirrored:
    """What one id's key is, compared between the ring, the store and the last sync."""

    state: KeyState
    public: str
    #: the trusted grains as canonical JSON (comparable)
    grains: str

    @classmethod
    def of_row(cls, row: KeyRow) -> "Mirrored | None":
        """None for a tombstone."""
        if row.state == "deleted":
            return None
        return cls(KeyState(row.state), row.public, _canonical(row.grains))

    def row(self, minion_id: str) -> KeyRow:
        grains = json.loads(self.grains)
        return KeyRow(minion_id, cast(KeyRowState, str(self.state)), self.public, grains)


def _canonical(grains: dict[str, Any]) -> str:
    return json.dumps(grains, sort_keys=True)


class KeySync:
    """Mirrors ``ring`` to and from ``store``'s minion keys; call ``sync`` from the master's
    loop thread (the store's rule), ``run`` as a supervised task."""

    #: seconds between two syncs
    INTERVAL = 1.0

    def __init__(self, ring: KeyRing, store: Store) -> None:
        self.ring = ring
        self.store = store
        #: the newest version read from the store
        self.cursor = 0
        #: id -> what the store and the ring agreed on at the last sync
        self.mirrored: dict[str, Mirrored] = {}
        #: ids whose deletion this mirror already pushed or applied: their tombstone read
        #: again is no news (a key presented after it, now pending here, is newer)
        self.buried: set[str] = set()
        #: trusted grains files read: id -> canonical JSON, and the dir mtime of that read
        self._grains: dict[str, str] = {}
        self._grains_seen: tuple[int, int] | None = None
        #: the store failed at the last attempt (logged once until it works again)
        self._failing = False
        self.synced = 0

    # -- the ring's side -----------------------------------------------------------------

    def _grains_dir(self) -> Path:
        return self.ring.pki_dir / GRAINS_DIR

    def _trusted(self) -> dict[str, str]:
        """Every trusted grains file, read again only when the directory's mtime moved (or
        moved close to the last read: mtime ticks are coarse)."""
        directory = self._grains_dir()
        try:
            mtime = directory.stat().st_mtime_ns
        except OSError:
            return {}
        seen = self._grains_seen
        if seen is not None and mtime == seen[0] and mtime < seen[1] - 1_000_000_000:
            return self._grains
        self._grains_seen = (mtime, time.time_ns())
        grains: dict[str, str] = {}
        with os.scandir(directory) as it:
            for item in it:
                if item.name.startswith("."):
                    continue
                try:
                    check_id(item.name)
                    loaded = json.loads(Path(item.path).read_text())
                except (OSError, ValueError, KeyRingError):
                    continue
                if isinstance(loaded, dict):
                    grains[item.name] = _canonical(loaded)
        self._grains = grains
        return grains

    def local(self) -> dict[str, Mirrored]:
        """The ring's keys, one per id, with their trusted grains."""
        trusted = self._trusted()
        found: dict[str, Mirrored] = {}
        for entry in sorted(self.ring.entries(), key=lambda e: _PRIORITY.index(e.state)):
            if entry.id not in found:
                grains = trusted.get(entry.id, "{}")
                found[entry.id] = Mirrored(entry.state, entry.public, grains)
        return found

    def _copies(self, minion_id: str) -> list[KeyState]:
        return [s for s in KeyState if self.ring.get(minion_id, s) is not None]

    def _apply(self, minion_id: str, want: Mirrored | None, have: Mirrored | None) -> None:
        """Make the ring hold ``want`` for ``minion_id`` (None: no key)."""
        if want == have and (want is None or len(self._copies(minion_id)) == 1):
            return
        copies = self._copies(minion_id)
        if want is None:
            for _ in copies:
                self.ring.delete(minion_id)  # also drops its trusted grains
            self._grains_seen = None
            return
        same_key = len(copies) == 1 and have is not None and have.public == want.public
        if not same_key:
            for _ in copies:
                self.ring.delete(minion_id)
        self.ring.add(minion_id, want.public, want.state)  # moves a copy of the same key
        if not same_key or have is None or have.grains != want.grains:
            (self._grains_dir() / minion_id).unlink(missing_ok=True)
            grains = json.loads(want.grains)
            if grains:
                self.ring.set_trusted_grains(minion_id, grains)
        self._grains_seen = None

    # -- one sync ------------------------------------------------------------------------

    def sync(self) -> str:
        """Pull, then push: one tick. Never raises for a store down or a bad key file;
        nothing is lost (what did not reach the store is compared again next tick).

        :returns: a sentence saying what the tick did or why it did nothing.
        """
        try:
            pulled, pushed = self._sync()
        except StoreError as e:
            reason = f"store unavailable ({e}); the ring keeps working, retrying next tick"
            if not self._failing:
                log.warning("key sync: %s", reason)
            self._failing = True
            return reason
        except (OSError, KeyRingError) as e:
            log.warning("key sync: the key files failed (%s); retrying next tick", e)
            return f"key files failed ({e}); retrying next tick"
        if self._failing:
            log.info("key sync: the store answers again")
        self._failing = False
        self.synced += 1
        if not pulled and not pushed:
            return f"in step with the store (version {self.cursor})"
        return f"applied {pulled} key(s) from the store, wrote {pushed} to it"

    def _sync(self) -> tuple[int, int]:
        """Pull, then push; how many ids were applied to the ring and written to the store."""
        rows = self.store.keys_since(self.cursor)
        local = self.local()
        changed_here = {
            minion_id
            for minion_id in local.keys() | self.mirrored.keys()
            if local.get(minion_id) != self.mirrored.get(minion_id)
        }
        latest: dict[str, KeyRow] = {}
        pulled = 0
        for row in rows:  # oldest first: the last row of an id is its newest
            latest[row.id] = row
        for minion_id, row in latest.items():
            theirs = Mirrored.of_row(row)
            if minion_id in self.mirrored and theirs == self.mirrored[minion_id]:
                continue  # our own write read back, or nothing new
            known = minion_id not in local or minion_id in self.buried
            if theirs is None and minion_id not in self.mirrored and known:
                continue  # a tombstone of a key this ring never had, or one known here
            mine = local.get(minion_id)
            if minion_id in changed_here and mine != theirs:
                log.warning(
                    "key %s changed here and in the store since the last sync: the store's "
                    "version (%s) wins over this master's (%s)",
                    minion_id,
                    row.state,
                    "deleted" if mine is None else mine.state,
                )
            try:
                self._apply(minion_id, theirs, mine)
            except (OSError, KeyRingError) as e:
                log.warning("key sync: cannot apply the store's key %s: %s", minion_id, e)
                after = self.local().get(minion_id)
                self._remember(minion_id, after)
            else:
                if mine != theirs:
                    log.info("key %s: %s (from the store)", minion_id, row.state)
                    pulled += 1
                self._remember(minion_id, theirs)
            changed_here.discard(minion_id)
        # a store failing before this line leaves the cursor: the next tick reads the rows again
        if rows:
            self.cursor = max(self.cursor, rows[-1].version)
        for minion_id in sorted(changed_here):
            mine = local.get(minion_id)
            if mine is None:
                self.store.delete_key(minion_id)
            else:
                self.store.put_key(mine.row(minion_id))
            self._remember(minion_id, mine)
        return pulled, len(changed_here)

    def _remember(self, minion_id: str, value: Mirrored | None) -> None:
        if value is None:
            self.mirrored.pop(minion_id, None)
            self.buried.add(minion_id)
        else:
            self.mirrored[minion_id] = value
            self.buried.discard(minion_id)

    async def run(self) -> None:
        """Endless: a sync about every ``INTERVAL`` seconds; never raises for a bad tick."""
        while True:
            try:
                self.sync()
            except Exception:  # one catch-all per tick: a bug here must not end the mirror
                log.exception("key sync failed; retrying in %gs", self.INTERVAL)
            await asyncio.sleep(self.INTERVAL)
