"""Jobs for runbooks and reactions, through the master's job manager.

Each job carries the chain of the reaction (or runbook) that asked for it, stored with the
job: its return and drift events carry it on, after a restart too.

A reaction's runbook runs on a :class:`JournaledJobRunner`: every job it starts is journaled
(durable) before it is sent, so a runbook interrupted by a master's death is rerun by the
next leader without sending any journaled job again: those are awaited from the store.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from master.inventory import Inventory
from master.jobs import DEADLINE_MARGIN, ActiveJob, JobManager, JobRequest
from master.store.base import Chain, Fenced, Store
from reactors.orchestrate import JobOutcome, MinionReturn
from saline.errors import SalineError
from saline.protocol import killed_at_time_limit
from saline.targeting import match_minions

log = logging.getLogger(__name__)

#: seconds between looks at the store while a resumed runbook awaits a journaled job
REPLAY_POLL = 0.2
#: a journal entry for a job that could not be started (nothing was sent)
NOT_STARTED = ""


class MasterJobRunner:
    """A :class:`reactors.orchestrate.JobRunner` over the job manager."""

    def __init__(
        self, jobs: JobManager, inventory: Inventory, user: str, chain: Chain, epoch: int = 0
    ) -> None:
        self.jobs = jobs
        self.inventory = inventory
        self.user = user
        self.chain = chain
        #: the leader's epoch for a reaction's jobs (the store refuses a deposed leader's)
        self.epoch = epoch

    def start(
        self,
        target: str,
        tgt_type: str,
        fun: str,
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> ActiveJob:
        request = JobRequest(
            target,
            tgt_type,
            fun,
            args,
            kwargs,
            timeout,
            None,
            self.user,
            chain=self.chain,
            epoch=self.epoch,
        )
        return self.jobs.start(request)

    async def run(
        self,
        target: str,
        tgt_type: str,
        fun: str,
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float,
    ) -> JobOutcome:
        return await self.finish(self.start(target, tgt_type, fun, args, kwargs, timeout))

    async def finish(self, job: ActiveJob) -> JobOutcome:
        done = await self.jobs.supervise(job)
        returns = {m: MinionReturn(r.success, r.retcode, r.ret) for m, r in job.returns.items()}
        return JobOutcome(
            jid=job.record.jid,
            returns=returns,
            failed=done.failed,
            timed_out=done.timed_out,
            not_reached=done.not_reached,
        )

    def match(self, target: str, tgt_type: str) -> list[str]:
        return match_minions(target, tgt_type, self.inventory.targets())


class JournaledJobRunner:
    """A runbook's :class:`reactors.orchestrate.JobRunner` that journals its jobs.

    Call number n of :meth:`run` is journal entry n. Past the journal's end, the job is
    started (stored, not yet sent), its jid appended to ``journal`` and ``save()`` called
    (the reaction's row, fenced by the leader's epoch) before it is sent. Within the journal
    (a runbook rerun after a master's death) nothing is sent: the journaled job's returns
    are awaited from the store and make the same :class:`JobOutcome`. A runbook takes the
    same path given the same step results, so its calls meet their own journal entries.
    """

    def __init__(
        self,
        runner: MasterJobRunner,
        store: Store,
        journal: list[str],
        save: Callable[[], None],
        *,
        poll: float = REPLAY_POLL,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runner = runner
        self.store = store
        #: jids in call order (shared with the action's progress, which ``save`` stores)
        self.journal = journal
        self.save = save
        self.poll = poll
        self.sleep = sleep
        self.clock = clock
        #: calls of run() so far
        self.calls = 0
        #: of them, calls answered from the journal
        self.replayed = 0

    async def run(
        self,
        target: str,
        tgt_type: str,
        fun: str,
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float,
    ) -> JobOutcome:
        number = self.calls
        self.calls += 1
        if number < len(self.journal):
            outcome = await self._replay(self.journal[number], target, tgt_type, fun)
            self.replayed += 1
            return outcome
        try:
            job = self.runner.start(target, tgt_type, fun, args, kwargs, timeout)
        except Fenced:
            raise
        except SalineError:  # nothing sent; the entry keeps later calls at their own number
            self.journal.append(NOT_STARTED)
            raise
        self.journal.append(job.record.jid)
        try:
            self.save()  # durable before the job is sent
        except BaseException:  # Fenced (or the store is gone): the job is never sent
            self.journal.pop()
            self.runner.jobs.active.pop(job.record.jid, None)
            raise
        return await self.runner.finish(job)

    def match(self, target: str, tgt_type: str) -> list[str]:
        return self.runner.match(target, tgt_type)

    async def _replay(self, jid: str, target: str, tgt_type: str, fun: str) -> JobOutcome:
        if jid == NOT_STARTED:
            raise SalineError(f"{fun} on {target!r} could not be started (before a restart)")
        job = self.store.get_job(jid)
        if job is None:
            raise SalineError(f"journaled job {jid} is not in the store; not sent again")
        if (job.fun, job.target, job.tgt_type) != (fun, target, tgt_type):
            raise SalineError(
                f"the resumed runbook took another path: journaled job {jid} ran {job.fun} "
                f"on {job.target!r} ({job.tgt_type}), not {fun} on {target!r}; not sent"
            )
        log.info("runbook job %s (%s) sent before a master restart: awaiting it", jid, fun)
        expected = set(job.minions) - set(job.missing)
        deadline = job.created + job.timeout + DEADLINE_MARGIN
        returns = self.store.job_returns(jid)
        while not expected <= set(returns) and self.clock() < deadline:
            await self.sleep(self.poll)
            returns = self.store.job_returns(jid)
        got = {m: r for m, r in returns.items() if m in expected}
        failed = sorted(m for m, r in got.items() if not r.success)
        late = [m for m in failed if killed_at_time_limit(got[m].retcode, got[m].ret)]
        return JobOutcome(
            jid=jid,
            returns={m: MinionReturn(r.success, r.retcode, r.ret) for m, r in got.items()},
            failed=[m for m in failed if m not in late],
            timed_out=sorted([*late, *(expected - set(got))]),
            not_reached=sorted(job.missing),
        )
