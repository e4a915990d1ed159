"""Which execution functions the minions have, from their hellos: a misspelled function is
refused before a job is sent. Kept as counts, so a check costs a lookup, not a union."""

from collections import Counter


class FunctionIndex:
    def __init__(self) -> None:
        self._by_minion: dict[str, frozenset[str]] = {}
        self._counts: Counter[str] = Counter()

    def update(self, minion_id: str, functions: frozenset[str]) -> None:
        """``minion_id`` said hello with ``functions``."""
        self._counts.subtract(self._by_minion.get(minion_id, frozenset()))
        self._counts.update(functions)
        self._by_minion[minion_id] = functions
        self._counts += Counter()  # drop the functions no minion has any more

    def reported(self, minion_id: str) -> bool:
        return minion_id in self._by_minion

    def known(self, fun: str) -> bool:
        return self._counts[fun] > 0

    def names(self) -> list[str]:
        return sorted(self._counts)
