"""Retention cost: ingest into a big SQLite store with and without a pruning pass running.

    python tests/bench/retention.py [--events 10000000] [--rounds 3] --json OUT.json

1. Fill: a SQLite store (schema and indexes as the master has them) gets ``--events`` old
   events (8 to 30 days old; the default is the issue's 10 million, about 4.5 minutes and
   1.2 GB of disk on a 2-core machine; ``--events 1000000`` takes under a minute), written
   straight in transactions of 10,000 rows.
2. Ingest, in rounds: ``--batches`` batches of 1,000 fresh events through
   ``Store.save_events`` on an asyncio loop (yielding between batches, as the master's
   receive loop does), once alone and once while ``master.retention.Retention`` prunes the
   backlog on the same loop (``keep_events: 7d``, batches of 1,000, as the master runs it).
   Target: the pruned ingest rate is within 20 % of the unpruned one (median of rounds).
3. Drain: the rest of the backlog pruned with nothing else running: rows per second, and
   the longest single prune call (the longest the SQLite write lock was held).
"""

import argparse
import asyncio
import contextlib
import json
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from master.retention import Keep, Retention
from master.store import schema
from master.store.base import Cutoffs, EventRecord, Pruned
from master.store.rows import event_row
from master.store.sqlite import SqliteStore

DAY = 86400.0
BATCH = 1000


class TimedStore(SqliteStore):
    """A SQLite store recording how long each prune call took."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.prune_seconds: list[float] = []

    def prune(self, cutoffs: Cutoffs, batch: int = 1000) -> Pruned:
        started = time.perf_counter()
        try:
            return super().prune(cutoffs, batch)
        finally:
            self.prune_seconds.append(time.perf_counter() - started)


def _event(i: int, ts: float) -> EventRecord:
    node = f"be{i % 3 + 1}"
    data = {"node": node, "lag_bytes": i * 17 % 100_000, "state": "streaming"}
    return EventRecord(f"chef/backend/{node}/pg/lag", data, node, ts)


def fill(path: Path, count: int, now: float) -> float:
    """``count`` old events written straight into the store; returns events per second."""
    conn = sqlite3.connect(path, isolation_level=None)
    started = time.perf_counter()
    span = 22 * DAY / max(count, 1)
    for first in range(0, count, 10_000):
        rows = [
            event_row(_event(i, now - 30 * DAY + i * span))
            for i in range(first, min(first + 10_000, count))
        ]
        conn.execute("BEGIN")
        conn.executemany(schema.INSERT_EVENT, rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


def _events_stored(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    return int(count)


async def _ingest(store: SqliteStore, batches: int, now: float) -> float:
    """Events per second stored by ``batches`` batches of 1,000, yielding between them."""
    events = [_event(i, now) for i in range(BATCH)]
    started = time.perf_counter()
    for _ in range(batches):
        store.save_events(events)
        await asyncio.sleep(0)
    return batches * BATCH / (time.perf_counter() - started)


async def _ingest_pruning(
    store: TimedStore, retention: Retention, batches: int, now: float
) -> tuple[float, int]:
    """Ingest while a pruning pass runs on the same loop: (events/s, rows pruned meanwhile)."""
    before = _events_stored(store.path)
    pruning = asyncio.ensure_future(retention.run_pass())
    await asyncio.sleep(0)  # the pass starts first, as it would when already running
    rate = await _ingest(store, batches, now)
    pruned_done = pruning.done()
    pruning.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pruning
    stored = _events_stored(store.path)
    if pruned_done:
        raise SystemExit("the backlog ran out during a pruned round: use more --events")
    return rate, before + batches * BATCH - stored


def run(tmp: Path, count: int, batches: int, rounds: int) -> dict[str, Any]:
    now = time.time()
    path = tmp / "master.db"
    SqliteStore(path).close()  # the schema and indexes, as the master creates them
    out: dict[str, Any] = {"backlog_events": count, "ingest_batches": batches, "rounds": rounds}
    out["fill_events_per_s"] = fill(path, count, now)
    store = TimedStore(path)
    try:
        filled = store.stats()
        out["store_bytes_filled"] = filled.total_bytes
        keep = Keep(jobs=7 * DAY, events=7 * DAY, reactions=90 * DAY)
        retention = Retention(store, keep, batch=BATCH, clock=lambda: now)
        plain: list[float] = []
        pruned: list[float] = []
        pruned_rows = 0
        for _ in range(rounds):
            plain.append(asyncio.run(_ingest(store, batches, now)))
            rate, rows = asyncio.run(_ingest_pruning(store, retention, batches, now))
            pruned.append(rate)
            pruned_rows += rows
        out["ingest_unpruned_per_s"] = statistics.median(plain)
        out["ingest_pruning_per_s"] = statistics.median(pruned)
        out["ingest_ratio"] = out["ingest_pruning_per_s"] / out["ingest_unpruned_per_s"]
        out["pruned_during_ingest"] = pruned_rows
        out["target_met"] = out["ingest_ratio"] >= 0.8
        store.prune_seconds.clear()
        started = time.perf_counter()
        drained, _ = asyncio.run(retention.run_pass())
        elapsed = time.perf_counter() - started
        out["drain_rows"] = drained.total
        out["drain_seconds"] = elapsed
        out["drain_rows_per_s"] = drained.total / elapsed if elapsed else 0.0
        calls = sorted(store.prune_seconds)
        out["prune_call_ms_p50"] = 1000 * calls[len(calls) // 2]
        out["prune_call_ms_p99"] = 1000 * calls[int(0.99 * (len(calls) - 1))]
        out["prune_call_ms_max"] = 1000 * calls[-1]
        after = store.stats()
        out["events_left"] = _events_stored(path)
        out["store_bytes_after"] = after.total_bytes  # freed pages are reused, not returned
    finally:
        store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000, help="old events to fill")
    ap.add_argument("--batches", type=int, default=200, help="ingest batches per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="slret-"))
    try:
        out = run(tmp, a.events, a.batches, a.rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for key, value in out.items():
        print(f"{key:24} {value:.2f}" if isinstance(value, float) else f"{key:24} {value}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
