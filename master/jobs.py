"""Job dispatch and return collection: target → persist → send (in batches) → collect → done.

A job is sent only to the minions its target matched and that are online; matched but
offline minions are reported as not reached at once. Each minion has its own deadline,
counted from the moment the job was sent to it, so ``--batch`` never eats the timeout.
"""

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from master.bus import EventBus
from master.presence import Presence
from master.store.base import JobRecord, ReturnRecord, Store
from saline.codec import encode
from saline.jid import new_jid
from saline.protocol import Job
from saline.targeting import match_minions

log = logging.getLogger(__name__)


#: seconds between progress reports to a waiting client on a long job
PROGRESS_INTERVAL = 1.0


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    TIMED_OUT = "timed_out"
    NOT_REACHED = "not_reached"


@dataclass(frozen=True)
class JobRequest:
    target: str
    tgt_type: str
    fun: str
    args: list[Any]
    kwargs: dict[str, Any]
    timeout: float
    batch: int | None
    user: str


#: sends an encoded frame to one minion; False when the minion cannot be reached
Sender = Callable[[str, bytes], bool]


@dataclass(eq=False)
class ActiveJob:
    record: JobRecord
    waiting: deque[str]
    batch: int
    inflight: dict[str, float] = field(default_factory=dict)
    returns: dict[str, ReturnRecord] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    listeners: list[asyncio.Queue[dict[str, Any]]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: the Job frame, encoded once and sent as is to every minion
    frame: bytes = b""

    @property
    def finished(self) -> bool:
        return not self.waiting and not self.inflight

    def tell(self, message: dict[str, Any]) -> None:
        for queue in self.listeners:
            queue.put_nowait(message)

    def progress(self, elapsed: float) -> dict[str, Any]:
        return {
            "type": "progress",
            "answered": len(self.outcomes),
            "total": len(self.record.minions),
            "running": sorted(self.inflight),
            "waiting": len(self.waiting),
            "elapsed": round(elapsed, 1),
        }

    def summary(self) -> dict[str, Any]:
        by = {o: sorted(m for m, x in self.outcomes.items() if x is o) for o in Outcome}
        return {
            "type": "done",
            "jid": self.record.jid,
            "minions": self.record.minions,
            "succeeded": by[Outcome.SUCCESS],
            "failed": by[Outcome.FAILURE],
            "timed_out": by[Outcome.TIMED_OUT],
            "not_reached": by[Outcome.NOT_REACHED],
        }


class JobManager:
    def __init__(self, store: Store, bus: EventBus, presence: Presence, sender: Sender) -> None:
        self.store = store
        self.bus = bus
        self.presence = presence
        self.sender = sender
        self.active: dict[str, ActiveJob] = {}
        #: jid -> (causing event seq, chain depth, rule) of jobs a reaction started; their
        #: return and drift events carry it (loop protection sees through jobs)
        self.chains: dict[str, tuple[int | None, int, str | None]] = {}

    def start(self, request: JobRequest, inventory: Mapping[str, Mapping[str, Any]]) -> ActiveJob:
        """Match, persist and dispatch a job. ``inventory`` maps accepted ids to their grains.

        :raises TargetError: for a target that does not parse.
        """
        matched = match_minions(request.target, request.tgt_type, inventory)
        missing = [m for m in matched if not self.presence.online(m)]
        reachable = [m for m in matched if m not in set(missing)]
        record = JobRecord(
            jid=new_jid(),
            fun=request.fun,
            args=request.args,
            kwargs=request.kwargs,
            target=request.target,
            tgt_type=request.tgt_type,
            minions=matched,
            missing=missing,
            user=request.user,
            created=time.time(),
            timeout=request.timeout,
        )
        self.store.save_job(record)  # durable before anything is sent
        self.bus.publish(
            f"saline/job/{record.jid}/new",
            {"fun": record.fun, "minions": matched, "missing": missing, "user": record.user},
        )
        job = ActiveJob(record, deque(reachable), request.batch or max(len(reachable), 1))
        job.frame = encode(
            Job(
                jid=record.jid,
                fun=record.fun,
                args=record.args,
                kwargs=record.kwargs,
                timeout=record.timeout,
            )
        )
        for minion_id in missing:
            job.outcomes[minion_id] = Outcome.NOT_REACHED
        if not job.finished:
            self.active[record.jid] = job
        return job

    def dispatch(self, job: ActiveJob) -> None:
        """Send to as many waiting minions as the batch size allows."""
        sent: list[str] = []
        while job.waiting and len(job.inflight) < job.batch:
            minion_id = job.waiting.popleft()
            if self.sender(minion_id, job.frame):
                job.inflight[minion_id] = time.monotonic() + job.record.timeout
                sent.append(minion_id)
            else:
                job.outcomes[minion_id] = Outcome.NOT_REACHED
                job.tell({"type": "not_reached", "id": minion_id})
        if sent:
            job.tell({"type": "sent", "ids": sent})

    async def supervise(self, job: ActiveJob) -> dict[str, Any]:
        """Drive one job to its end: dispatch batches, expire deadlines; returns the summary."""
        started = last_progress = time.monotonic()
        try:
            self.dispatch(job)
            while not job.finished:
                now = time.monotonic()
                deadline = min(job.inflight.values(), default=now)
                wake = min(deadline, last_progress + PROGRESS_INTERVAL)
                job.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(job.changed.wait(), max(wake - now, 0))
                self._expire(job)
                self.dispatch(job)
                now = time.monotonic()
                if not job.finished and now - last_progress >= PROGRESS_INTERVAL:
                    last_progress = now
                    job.tell(job.progress(now - started))
        finally:
            self.active.pop(job.record.jid, None)
        summary = job.summary()
        job.tell(summary)
        return summary

    def _expire(self, job: ActiveJob) -> None:
        now = time.monotonic()
        for minion_id, deadline in list(job.inflight.items()):
            if deadline <= now:
                del job.inflight[minion_id]
                job.outcomes[minion_id] = Outcome.TIMED_OUT
                job.tell({"type": "timed_out", "id": minion_id})

    def returned(self, record: ReturnRecord) -> None:
        """A new (already stored) return arrived: account it to its job if still running."""
        job = self.active.get(record.jid)
        if job is None or record.minion not in job.inflight:
            return
        del job.inflight[record.minion]
        job.returns[record.minion] = record
        job.outcomes[record.minion] = Outcome.SUCCESS if record.success else Outcome.FAILURE
        job.tell(
            {
                "type": "ret",
                "id": record.minion,
                "success": record.success,
                "retcode": record.retcode,
                "return": record.ret,
                "duration_ms": record.duration_ms,
            }
        )
        job.changed.set()
