"""Job dispatch and return collection: target → persist → send (in batches) → collect → done.

A job is sent only to the minions its target matched and that are online; matched but
offline minions are reported as not reached at once. Each minion has its own deadline,
counted from the moment the job was sent to it, so ``--batch`` never eats the timeout.

That deadline is the function's time limit on that minion plus ``DEADLINE_MARGIN`` (sooner
when the minion goes offline meanwhile), never a client's patience: a client that stops
waiting (``saline run -t``) leaves the job running to its end. The limit is the job's
``timeout=`` when it gives one, else the function's declared default as the minion's hello
reported it (``declare_limits``), else ``DEFAULT_FUNCTION_TIMEOUT``; the minion's
``max_function_timeout`` caps it. For a minion that reported nothing, the master assumes
``DEFAULT_MAX_FUNCTION_TIMEOUT``. A return saying the minion killed the function at its
limit counts as timed out.

With ``batch_wait`` (SaltStack's ``--batch-wait``), a slot of the batch freed by a return
stays empty that many seconds before the next minion starts in it.
"""

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from master.bus import EventBus
from master.client_models import (
    Done,
    JobMessage,
    MinionOutcome,
    Progress,
    Ret,
    Sent,
)
from master.inventory import Inventory
from master.metrics import MasterMetrics
from master.store.base import Chain, EventRecord, JobRecord, ReturnRecord, Store
from saline.codec import encode
from saline.jid import new_jid
from saline.masking import redact_arguments
from saline.protocol import (
    DEFAULT_FUNCTION_TIMEOUT,
    DEFAULT_MAX_FUNCTION_TIMEOUT,
    KILL_GRACE,
    MAX_FUNCTION_TIMEOUT,
    Job,
    killed_at_time_limit,
)
from saline.targeting import match_minions

log = logging.getLogger(__name__)


#: seconds between progress reports to a waiting client on a long job
PROGRESS_INTERVAL = 1.0
#: jobs whose targets are kept in memory (older ones are looked up in the store)
RECENT_JOBS = 20_000
#: seconds the master waits for a return beyond the function's time limit: the grace a
#: function past its limit has to stop (``KILL_GRACE``), and the return's way back
DEADLINE_MARGIN = KILL_GRACE + 5.0


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
    #: the function's time limit on each minion (None: the function's declared default)
    timeout: float | None
    #: at most this many minions at a time: a count, or "25%" of those reached
    batch: int | str | None
    user: str
    #: kwarg names (or positions, as digits) the client marked secret
    secret: tuple[str, ...] = ()
    #: the reaction that asks for it (empty for operators and the schedule)
    chain: Chain = field(default_factory=Chain)
    #: seconds a slot of the batch stays empty after a minion returns
    batch_wait: float = 0.0
    #: the leader's epoch for jobs only the leader may start (reactions, runbooks, the
    #: schedule): the store refuses them from a deposed leader; 0 for operators' jobs
    epoch: int = 0


@dataclass(frozen=True)
class Limits:
    """What a minion's hello said of its functions' time limits."""

    #: the declared defaults (already capped), by function
    timeouts: Mapping[str, float]
    #: its max_function_timeout; None: not said
    cap: float | None


#: sends an encoded frame to one minion; False when the minion cannot be reached
Sender = Callable[[str, bytes], bool]


@dataclass(eq=False)
class ActiveJob:
    record: JobRecord
    waiting: deque[str]
    batch: int
    #: the job's own time limit (``timeout=``); None: each function's default
    asked: float | None = None
    #: seconds a freed slot stays empty before the next minion starts in it
    batch_wait: float = 0.0
    #: when each resting slot (freed, within its batch_wait) may take a minion again
    resting: list[float] = field(default_factory=list)
    inflight: dict[str, float] = field(default_factory=dict)
    returns: dict[str, ReturnRecord] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    listeners: list[asyncio.Queue[JobMessage]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: the Job frame, encoded once and sent as is to every minion
    frame: bytes = b""

    @property
    def finished(self) -> bool:
        return not self.waiting and not self.inflight

    def tell(self, message: JobMessage) -> None:
        for queue in self.listeners:
            queue.put_nowait(message)

    def progress(self, elapsed: float) -> Progress:
        return Progress(
            answered=len(self.outcomes),
            total=len(self.record.minions),
            running=sorted(self.inflight),
            waiting=len(self.waiting),
            elapsed=round(elapsed, 1),
        )

    def summary(self, stopped_waiting: bool = False) -> Done:
        """The job by outcome. ``stopped_waiting``: for a client that waits no longer while
        the job goes on; the minions still running it (or waiting for their turn) are
        ``running``, and counted as timed out for that client."""
        by = {o: sorted(m for m, x in self.outcomes.items() if x is o) for o in Outcome}
        running = sorted([*self.inflight, *self.waiting]) if stopped_waiting else []
        return Done(
            jid=self.record.jid,
            minions=self.record.minions,
            succeeded=by[Outcome.SUCCESS],
            failed=by[Outcome.FAILURE],
            timed_out=sorted(by[Outcome.TIMED_OUT] + running),
            running=running,
            not_reached=by[Outcome.NOT_REACHED],
        )

    def slot_freed(self, now: float) -> None:
        """A minion of this job ended: with ``batch_wait``, its slot rests first."""
        if self.batch_wait > 0 and self.waiting:
            self.resting.append(now + self.batch_wait)

    def busy_slots(self, now: float) -> int:
        self.resting = [t for t in self.resting if t > now]
        return len(self.inflight) + len(self.resting)


def batch_size(batch: int | str | None, reachable: int) -> int:
    """Minions in flight at once: all (None), a count, or a share like "25%" (rounded up,
    at least one), as SaltStack's ``--batch``."""
    if batch is None:
        return max(reachable, 1)
    if isinstance(batch, str):
        return max(1, math.ceil(reachable * int(batch.rstrip("%")) / 100))
    return batch


class JobManager:
    def __init__(
        self,
        store: Store,
        bus: EventBus,
        inventory: Inventory,
        sender: Sender,
        max_per_minion: int = 8,
        metrics: MasterMetrics | None = None,
    ) -> None:
        self.store = store
        #: jobs started and finished, their durations (a registry of its own unless given)
        self.metrics = metrics if metrics is not None else MasterMetrics()
        self.bus = bus
        self.inventory = inventory
        self.sender = sender
        self.active: dict[str, ActiveJob] = {}
        #: jobs a minion may run at once; more wait here, their timeout not yet started
        self.max_per_minion = max_per_minion
        #: minion -> jobs sent to it and not yet returned or timed out
        self.running: Counter[str] = Counter()
        #: jid -> (function, targeted minions, chain) of recent jobs: whose returns to
        #: accept, and what their return and drift events carry
        self._recent: OrderedDict[str, tuple[str, frozenset[str], Chain]] = OrderedDict()
        #: minion -> the time limits its hello reported
        self.limits: dict[str, Limits] = {}

    def declare_limits(
        self, minion_id: str, timeouts: Mapping[str, float], cap: float | None
    ) -> None:
        """``minion_id`` said hello with its functions' declared time limits and its
        max_function_timeout (a hello saying neither: nothing is known of it)."""
        if timeouts or cap is not None:
            self.limits[minion_id] = Limits(dict(timeouts), cap)
        else:
            self.limits.pop(minion_id, None)

    def function_limit(self, minion_id: str, fun: str, asked: float | None) -> float:
        """Seconds ``fun`` may run on ``minion_id`` under a job asking ``asked`` (None: the
        function's default), as far as the master knows."""
        known = self.limits.get(minion_id)
        if known is None:
            return asked if asked is not None else DEFAULT_MAX_FUNCTION_TIMEOUT
        cap = known.cap if known.cap is not None else MAX_FUNCTION_TIMEOUT
        if asked is not None:
            return min(asked, cap)
        return known.timeouts.get(fun, min(DEFAULT_FUNCTION_TIMEOUT, cap))

    def _remember(self, record: JobRecord) -> tuple[str, frozenset[str], Chain]:
        known = self._recent[record.jid] = (record.fun, frozenset(record.minions), record.chain)
        if len(self._recent) > RECENT_JOBS:
            self._recent.popitem(last=False)
        return known

    def _known(self, jid: str) -> tuple[str, frozenset[str], Chain] | None:
        known = self._recent.get(jid)
        if known is None:
            record = self.store.get_job(jid)  # a job of an earlier run of the master
            if record is None:
                return None
            known = self._remember(record)
        return known

    def targeted_fun(self, jid: str, minion_id: str) -> str | None:
        """The function of job ``jid`` if it targeted ``minion_id``; None when no such job
        exists or it was not sent to that minion (its return is refused)."""
        known = self._known(jid)
        return known[0] if known is not None and minion_id in known[1] else None

    def chain_of(self, jid: str) -> Chain:
        """The reaction chain job ``jid`` carries (its return and drift events carry it on:
        loop protection sees through jobs, across restarts too)."""
        known = self._known(jid)
        return Chain() if known is None else known[2]

    def start(self, request: JobRequest) -> ActiveJob:
        """Match, persist and dispatch a job.

        :raises TargetError: for a target that does not parse.
        """
        matched = match_minions(request.target, request.tgt_type, self.inventory.targets())
        missing = [m for m in matched if not self.inventory.online(m)]
        reachable = [m for m in matched if m not in set(missing)]
        # stored, shown and logged without secret argument values; sent with them
        shown_args, shown_kwargs = redact_arguments(request.args, request.kwargs, request.secret)
        # the longest the function may run on any of them: what the minions are told when
        # the job asks no limit of its own (each applies its function's default below it)
        limit = max(
            (self.function_limit(m, request.fun, request.timeout) for m in reachable),
            default=request.timeout or DEFAULT_FUNCTION_TIMEOUT,
        )
        record = JobRecord(
            jid=new_jid(),
            fun=request.fun,
            args=shown_args,
            kwargs=shown_kwargs,
            target=request.target,
            tgt_type=request.tgt_type,
            minions=matched,
            missing=missing,
            user=request.user,
            created=time.time(),
            timeout=limit,
            chain=request.chain,
            epoch=request.epoch,
        )
        self.store.save_job(record)  # durable before anything is sent (or fenced)
        self._remember(record)
        self.metrics.jobs_started.inc()
        log.info(
            "job %s: %s on %r (%s) by %s: %d matched, %d offline",
            record.jid,
            record.fun,
            record.target[:200],
            record.tgt_type,
            record.user,
            len(matched),
            len(missing),
        )
        data = {"fun": record.fun, "minions": matched, "missing": missing, "user": record.user}
        self.bus.publish_records(
            [EventRecord.caused(f"saline/job/{record.jid}/new", data, record.chain)]
        )
        job = ActiveJob(
            record,
            deque(reachable),
            batch_size(request.batch, len(reachable)),
            asked=request.timeout,
            batch_wait=request.batch_wait,
        )
        job.frame = encode(
            Job(
                jid=record.jid,
                fun=record.fun,
                args=request.args,
                kwargs=request.kwargs,
                timeout=limit,
                default_timeout=request.timeout is None,
            )
        )
        for minion_id in missing:
            job.outcomes[minion_id] = Outcome.NOT_REACHED
        if not job.finished:
            self.active[record.jid] = job
        return job

    def dispatch(self, job: ActiveJob) -> None:
        """Send to as many waiting minions as the batch size allows (slots resting after
        a return count as taken); a minion already running ``max_per_minion`` jobs is
        skipped and stays waiting (queued)."""
        sent: list[str] = []
        now = time.monotonic()
        for minion_id in list(job.waiting):
            if job.busy_slots(now) >= job.batch:
                break
            if self.running[minion_id] >= self.max_per_minion:
                continue
            job.waiting.remove(minion_id)
            if self.sender(minion_id, job.frame):
                limit = self.function_limit(minion_id, job.record.fun, job.asked)
                job.inflight[minion_id] = now + limit + DEADLINE_MARGIN
                self.running[minion_id] += 1
                sent.append(minion_id)
            else:
                job.outcomes[minion_id] = Outcome.NOT_REACHED
                job.tell(MinionOutcome(type="not_reached", id=minion_id))
        if sent:
            job.tell(Sent(ids=sent))

    def queued(self, job: ActiveJob) -> list[str]:
        """Minions this job waits for because they run ``max_per_minion`` jobs already."""
        return sorted(m for m in job.waiting if self.running[m] >= self.max_per_minion)

    def _release(self, minion_id: str) -> None:
        """One job less on ``minion_id``: jobs queued for it may go on."""
        self.running[minion_id] -= 1
        if self.running[minion_id] <= 0:
            del self.running[minion_id]
        for other in self.active.values():
            if minion_id in other.waiting:
                other.changed.set()

    async def supervise(self, job: ActiveJob) -> Done:
        """Drive one job to its end: dispatch batches, expire deadlines; returns the summary."""
        started = last_progress = time.monotonic()
        try:
            self.dispatch(job)
            while not job.finished:
                now = time.monotonic()
                # nothing in flight (all queued behind other jobs): wake for progress only;
                # a resting slot frees at its time
                deadline = min(
                    [*job.inflight.values(), *job.resting], default=now + PROGRESS_INTERVAL
                )
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
            for minion_id in job.inflight:  # cancelled with minions still running it
                self._release(minion_id)
            job.inflight.clear()
        summary = job.summary()
        outcomes = [o.value for o in job.outcomes.values()]
        self.metrics.job_finished(outcomes, time.monotonic() - started)
        job.tell(summary)
        return summary

    def _expire(self, job: ActiveJob) -> None:
        """Minions past their deadline, or lost (offline) while running the job: timed
        out. A lost minion's return, should it come later, is still stored."""
        now = time.monotonic()
        for minion_id, deadline in list(job.inflight.items()):
            if deadline <= now or not self.inventory.online(minion_id):
                del job.inflight[minion_id]
                self._release(minion_id)
                job.slot_freed(now)
                job.outcomes[minion_id] = Outcome.TIMED_OUT
                job.tell(MinionOutcome(type="timed_out", id=minion_id))

    def returned(self, record: ReturnRecord) -> None:
        """A new (already stored) return arrived: account it to its job if still running."""
        job = self.active.get(record.jid)
        if job is None or record.minion not in job.inflight:
            return
        del job.inflight[record.minion]
        self._release(record.minion)
        job.slot_freed(time.monotonic())
        job.returns[record.minion] = record
        if record.success:
            job.outcomes[record.minion] = Outcome.SUCCESS
        elif killed_at_time_limit(record.retcode, record.ret):
            job.outcomes[record.minion] = Outcome.TIMED_OUT  # its return says so, and stays
        else:
            job.outcomes[record.minion] = Outcome.FAILURE
        if job.listeners:  # built only for someone waiting: returns come by the thousand
            job.tell(
                Ret(
                    id=record.minion,
                    success=record.success,
                    retcode=record.retcode,
                    ret=record.ret,
                    duration_ms=record.duration_ms,
                )
            )
        job.changed.set()
