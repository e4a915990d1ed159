"""The cluster view the reactor keeps: the latest observation of each beacon per minion.

Fed by ``saline/beacon/MINION/BEACON/STATE`` events; bounded per minion in entries and
bytes (the oldest observations of that minion go first), so a minion cannot grow it.
"""

from typing import Any

from master.store.base import EventRecord
from saline.wire import pack

#: beacon names (and beacon:key pairs) the cluster view keeps per minion, and the bytes
#: of their data (packed): beyond either, the oldest observations of that minion go
MAX_OBSERVATIONS_PER_MINION = 256
MAX_OBSERVATION_BYTES_PER_MINION = 1024 * 1024


class Observations:
    def __init__(self) -> None:
        #: minion -> beacon (and beacon:key) -> latest observation
        self.by_minion: dict[str, dict[str, dict[str, Any]]] = {}
        #: minion -> observation name -> its packed size (the byte bound)
        self._sizes: dict[str, dict[str, int]] = {}

    def observe(self, record: EventRecord) -> None:
        parts = record.tag.split("/")
        if len(parts) < 5 or parts[0] != "saline" or parts[1] != "beacon":
            return
        minion, beacon, state = parts[2], parts[3], parts[4]
        seen = {**record.data, "state": state, "ts": record.ts}
        by_beacon = self.by_minion.setdefault(minion, {})
        sizes = self._sizes.setdefault(minion, {})
        size = len(pack(record.data)) + 64
        keyed = record.data.get("key")
        names = [beacon] if keyed is None else [beacon, f"{beacon}:{str(keyed)[:128]}"]
        for name in names:
            by_beacon.pop(name, None)
            sizes.pop(name, None)
            by_beacon[name] = seen
            sizes[name] = size
        while len(by_beacon) > len(names) and (
            len(by_beacon) > MAX_OBSERVATIONS_PER_MINION
            or sum(sizes.values()) > MAX_OBSERVATION_BYTES_PER_MINION
        ):
            oldest = next(iter(by_beacon))
            del by_beacon[oldest], sizes[oldest]

    def states(self) -> dict[str, dict[str, Any]]:
        """Latest state per minion and beacon (keyed observations left out): for status."""
        return {
            minion: {b: o.get("state") for b, o in seen.items() if ":" not in b}
            for minion, seen in self.by_minion.items()
        }
