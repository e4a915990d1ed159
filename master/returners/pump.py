"""Moving documents from the master to each returner, without ever blocking the master.

The master's loop only hands documents over: events (and the reactor's audit events) from a
bus subscription, fresh returns from the commit of a batch (:meth:`Pump.offer`). Each
returner has a worker thread that writes them to its bounded on-disk queue
(``master/returners/queue.py``) and ships the oldest in batches; when the destination is
away it backs off (1 s, doubling to 30 s) and the queue holds what arrives meanwhile. The
hand-over between loop and thread is a bounded in-memory queue: if a worker could not keep
up even with its disk, what does not fit is dropped and counted, never waited for.
"""

import asyncio
import contextlib
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from master.bus import EventBus
from master.metrics import MasterMetrics
from master.returners.base import Doc, Kind, Returner, Unavailable, event_docs, return_doc
from master.returners.queue import DiskQueue
from master.store.base import ReturnRecord

log = logging.getLogger(__name__)

#: documents handed to a worker and not yet on its disk
HANDOFF = 20_000
#: first and longest wait after a failed batch
BACKOFF, BACKOFF_MAX = 1.0, 30.0


class Worker:
    """One returner: its disk queue, its thread, its counters."""

    def __init__(
        self,
        returner: Returner,
        disk: DiskQueue,
        kinds: frozenset[Kind],
        batch: int,
        metrics: MasterMetrics,
    ) -> None:
        self.returner = returner
        self.name = returner.name
        self.disk = disk
        self.kinds = kinds
        self.batch = batch
        self.metrics = metrics
        self.handoff: queue.Queue[list[Doc]] = queue.Queue(HANDOFF)
        self.shipped = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._delay = 0.0
        #: documents handed over and not yet on disk (counted under the lock)
        self._handed = 0
        self._handed_lock = threading.Lock()

    def start(self) -> None:
        """Start the thread (again, after :meth:`stop`: the pump's task may be restarted)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"returner-{self.name}", daemon=True)
        self._thread.start()

    def offer(self, docs: list[Doc]) -> None:
        wanted = [d for d in docs if d.kind in self.kinds]
        if not wanted:
            return
        with self._handed_lock:
            try:
                self.handoff.put_nowait(wanted)
            except queue.Full:
                self._dropped(len(wanted), "queue_full")
                return
            self._handed += len(wanted)

    def status(self) -> dict[str, Any]:
        return {
            "queued": self.disk.depth + self._handed,
            "shipped": self.shipped,
            "dropped": self.dropped,
            "last_error": self.last_error,
        }

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)

    # -- the thread ------------------------------------------------------------------------

    def _dropped(self, count: int, reason: str) -> None:
        if count:
            self.dropped += count
            self.metrics.returner_dropped.labels(self.name, reason).inc(count)

    def _take(self, wait: float) -> None:
        """Move what the loop handed over onto the disk (waiting up to ``wait`` for it)."""
        batches: list[list[Doc]] = []
        with contextlib.suppress(queue.Empty):
            batches.append(
                self.handoff.get(timeout=wait) if wait > 0 else self.handoff.get_nowait()
            )
            while len(batches) < 1000:
                batches.append(self.handoff.get_nowait())
        if batches:
            docs = [d for b in batches for d in b]
            dropped = self.disk.put(docs)
            with self._handed_lock:
                self._handed -= len(docs)
            self._dropped(dropped, "queue_full")
        self.metrics.returner_queued.labels(self.name).set(self.disk.depth)

    def _run(self) -> None:
        retry_at = 0.0
        while not self._stop.is_set():
            try:
                now = time.monotonic()
                if now < retry_at:
                    self._take(min(retry_at - now, 0.5))
                    continue
                self._take(0)
                pending = self.disk.peek(self.batch)
                if not pending:
                    self._take(0.2)
                    continue
                retry_at = self._ship(pending)
            except Exception:  # a bug or a broken queue file: log, wait, go on
                log.exception("returner %s: worker error", self.name)
                self._stop.wait(1.0)

    def _ship(self, pending: list[tuple[int, Doc]]) -> float:
        """Ship one batch; :returns: when to try again (0: at once)."""
        docs = [d for _, d in pending]
        try:
            result = self.returner.ship(docs)
        except Unavailable as e:
            self.metrics.returner_failures.labels(self.name).inc()
            if self.last_error != str(e):
                log.warning("returner %s: %s (%d queued; retrying)", self.name, e, self.disk.depth)
            self.last_error = str(e)
            self._delay = min(max(self._delay * 2, BACKOFF), BACKOFF_MAX)
            return time.monotonic() + self._delay
        if self.last_error is not None:
            log.info("returner %s: shipping again (%d queued)", self.name, self.disk.depth)
        self.last_error, self._delay = None, 0.0
        settled = set(result.done) | set(result.refused)
        for doc_id, why in list(result.refused.items())[:5]:
            log.warning("returner %s refused document %s for good: %s", self.name, doc_id, why)
        self._dropped(len(result.refused), "refused")
        done = set(result.done)
        for doc in docs:
            if doc.id in done:
                self.metrics.returner_shipped.labels(self.name, doc.kind).inc()
        self.shipped += sum(1 for d in docs if d.id in done)
        self.disk.remove([row for row, d in pending if d.id in settled])
        self.metrics.returner_queued.labels(self.name).set(self.disk.depth)
        # some left unsettled (a partial answer): try them again after a short pause
        return 0.0 if len(settled) >= len({d.id for d in docs}) else time.monotonic() + BACKOFF


class Pump:
    """Every configured returner's worker, fed from the bus and from committed returns."""

    def __init__(self, workers: list[Worker], bus: EventBus) -> None:
        self.workers = workers
        self.bus = bus

    @staticmethod
    def queue_path(data_dir: Path, name: str) -> Path:
        return data_dir / f"returner-{name}.queue"

    def offer(self, returns: list[ReturnRecord]) -> None:
        """Fresh returns, just stored (called by the commit of a batch, on the loop)."""
        if self.workers and returns:
            docs = [return_doc(r) for r in returns]
            for worker in self.workers:
                worker.offer(docs)

    def status(self) -> dict[str, dict[str, Any]]:
        return {w.name: w.status() for w in self.workers}

    async def run(self) -> None:
        """Follow the bus; hand every event over (on the loop: never a blocking call)."""
        for worker in self.workers:
            worker.start()
        sub = self.bus.subscribe("*")
        try:
            while True:
                batch = [await sub.queue.get()]
                while not sub.queue.empty() and len(batch) < 1000:
                    batch.append(sub.queue.get_nowait())
                docs = [d for record in batch for d in event_docs(record)]
                for worker in self.workers:
                    worker.offer(docs)
        finally:
            self.bus.unsubscribe(sub)
            await asyncio.to_thread(self.stop)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def close(self) -> None:
        """At the master's end: stop the threads, close destinations and queue files."""
        for worker in self.workers:
            worker.stop()
            with contextlib.suppress(Exception):
                worker.returner.close()
            worker.disk.close()
