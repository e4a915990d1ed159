"""Retention: the master's store pruned in the background, a small batch at a time.

Jobs (with their returns), events and reactor decisions older than ``keep_jobs``,
``keep_events`` and ``keep_reactions`` are deleted in batches of ``batch`` rows, each
batch its own short transaction (``Store.prune``), the event loop given back between
batches: the master keeps storing returns and events while a pass runs. What is still
needed is kept whatever its age: the master's active jobs and those of open reactions,
reactions open or awaiting approval, and the events those reactions name.
"""

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from master.config import MasterConfig
from master.store.base import Cutoffs, Pruned, Store
from saline.durations import format_duration

log = logging.getLogger(__name__)

#: rows per kind and transaction: a few milliseconds of SQLite's write lock
BATCH = 1000
#: seconds between passes, at most (sooner when a keep setting is shorter)
INTERVAL = 60.0
#: seconds between passes, at least
MIN_INTERVAL = 1.0
#: after a batch that took t seconds, the loop rests PACE * t: while a backlog is pruned,
#: pruning takes at most a fifth of the event loop's time (ingest keeps 80 % or more)
PACE = 4.0


@dataclass(frozen=True)
class Keep:
    """Seconds each kind is kept; 0 keeps it for ever."""

    jobs: float
    events: float
    reactions: float

    @classmethod
    def of(cls, config: MasterConfig) -> "Keep":
        return cls(config.keep_jobs, config.keep_events, config.keep_reactions)

    def interval(self) -> float:
        """Seconds between passes: a minute, or half the shortest keep when that is less
        (a row outlives its keep by at most one interval), never under a second."""
        shortest = min((k for k in (self.jobs, self.events, self.reactions) if k), default=0.0)
        wanted = shortest / 2 if shortest else INTERVAL
        return max(MIN_INTERVAL, min(INTERVAL, wanted))

    def cutoffs(self, now: float, keep_jids: Iterable[str] = ()) -> Cutoffs:
        """What a pass at ``now`` prunes: the rows older than their keep."""

        def before(keep: float) -> float | None:
            return now - keep if keep else None

        return Cutoffs(
            jobs=before(self.jobs),
            events=before(self.events),
            reactions=before(self.reactions),
            keep_jids=frozenset(keep_jids),
        )


def describe(pruned: Pruned, seconds: float) -> str:
    """The sentence a pass logs: what it deleted, and how long it took."""
    if not pruned.total:
        return "nothing older than its keep setting"
    parts = [
        f"{count} {name}"
        for name, count in (
            ("events", pruned.events),
            ("jobs", pruned.jobs),
            ("returns", pruned.returns),
            ("reactions", pruned.reactions),
        )
        if count
    ]
    return f"pruned {', '.join(parts)} in {format_duration(seconds)}"


class Retention:
    """The pruning loop of one master (several masters on one PostgreSQL store may each
    run it: a row is deleted once, by whichever comes first)."""

    def __init__(
        self,
        store: Store,
        keep: Keep,
        active_jids: Callable[[], Iterable[str]] = lambda: (),
        batch: int = BATCH,
        clock: Callable[[], float] = time.time,
        pace: float = PACE,
    ) -> None:
        self.store = store
        self.keep = keep
        #: the jids of jobs this master still runs (kept whatever their age)
        self.active_jids = active_jids
        self.batch = batch
        self.clock = clock
        self.pace = pace
        #: rows deleted since the master started, per kind
        self.deleted = Pruned()
        #: passes run since start; unix time and seconds of the last one (None: none yet)
        self.passes = 0
        self.last_pass: float | None = None
        self.last_seconds = 0.0

    async def run_pass(self) -> tuple[Pruned, str]:
        """Prune until nothing older than its keep is left (or only what is needed):
        batch after batch, the event loop given back between them for ``pace`` times as
        long as the batch took. Returns what was deleted and the sentence saying so."""
        started = time.monotonic()
        kept = {*self.active_jids(), *self.store.held_jids()}
        cutoffs = self.keep.cutoffs(self.clock(), kept)
        done = Pruned()
        while True:
            batch_started = time.monotonic()
            pruned = self.store.prune(cutoffs, self.batch)
            done += pruned
            full = max(pruned.jobs + pruned.returns, pruned.events, pruned.reactions)
            if full < self.batch:  # no kind filled its batch: nothing more to delete
                break
            # the master stores returns and events between batches
            await asyncio.sleep((time.monotonic() - batch_started) * self.pace)
        self.deleted += done
        self.passes += 1
        self.last_pass, self.last_seconds = time.time(), time.monotonic() - started
        return done, describe(done, self.last_seconds)

    def status(self) -> dict[str, Any]:
        """For ``saline status``: the keep settings, the last pass, what was deleted."""
        return {
            "keep": {
                "jobs": self.keep.jobs,
                "events": self.keep.events,
                "reactions": self.keep.reactions,
            },
            "passes": self.passes,
            "last_pass": self.last_pass,
            "last_seconds": round(self.last_seconds, 3),
            "deleted": dataclasses.asdict(self.deleted),
        }

    async def run(self) -> None:
        """Endless: a pass, then sleep ``Keep.interval`` seconds; one line per pass that
        deleted something. A failing pass (the store away) is logged and retried."""
        interval = self.keep.interval()
        while True:
            try:
                pruned, sentence = await self.run_pass()
            except Exception:  # one failed pass must not end retention; the next retries
                log.exception("retention pass failed; retrying in %gs", interval)
            else:
                if pruned.total:
                    log.info("retention: %s", sentence)
            await asyncio.sleep(interval)
