"""Jobs for runbooks and reactions, through the master's job manager.

Each job carries the chain of the reaction (or runbook) that asked for it, stored with the
job: its return and drift events carry it on, after a restart too.
"""

from typing import Any

from master.inventory import Inventory
from master.jobs import ActiveJob, JobManager, JobRequest
from master.store.base import Chain
from reactors.orchestrate import JobOutcome, MinionReturn
from saline.targeting import match_minions


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
