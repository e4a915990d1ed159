"""Continuous enforcement: the ``schedule:`` of the master config, run with apscheduler.

Each entry applies states (or the highstate) to a target every ``every`` seconds, in
apply or test mode. ``splay`` spreads the minions: each waits a random part of it before
running, so a thousand minions do not hit the disk and the master at once. Scheduled runs
are ordinary jobs (user ``schedule``): ``saline jobs`` shows them, drift events follow.
"""

import asyncio
import logging

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from master.config import ScheduleEntry
from master.jobs import JobManager, JobRequest
from master.leadership import Leader, Solo
from saline.errors import SalineError

log = logging.getLogger(__name__)


class Enforcer:
    def __init__(
        self, schedule: list[ScheduleEntry], jobs: JobManager, leader: Leader | None = None
    ) -> None:
        self.schedule = schedule
        self.jobs = jobs
        #: only the leader of several masters runs the schedule
        self.leader: Leader = leader if leader is not None else Solo("master")
        self.scheduler = AsyncIOScheduler()
        self._running: set[asyncio.Task[object]] = set()

    def start(self) -> None:
        self._add_jobs()
        if self.schedule:
            self.scheduler.start()
            log.info("schedule: %s", ", ".join(e.name for e in self.schedule))

    def _add_jobs(self) -> None:
        for entry in self.schedule:
            self.scheduler.add_job(
                self.fire,
                IntervalTrigger(seconds=entry.every),
                args=[entry],
                id=entry.name,
                max_instances=1,
                coalesce=True,
            )

    def replace(self, schedule: list[ScheduleEntry]) -> str:
        """A reloaded ``schedule:``: entries run on their new intervals from now on."""
        for entry in self.schedule:
            if self.scheduler.get_job(entry.name) is not None:
                self.scheduler.remove_job(entry.name)
        self.schedule = schedule
        if self.scheduler.running:
            self._add_jobs()
        else:
            self.start()
        return f"schedule: {len(schedule)} entries"

    async def fire(self, entry: ScheduleEntry) -> None:
        """One scheduled run: a state job like any other, supervised to its end."""
        if not self.leader.leading():
            log.debug("schedule %s: not run here (this master does not lead)", entry.name)
            return
        request = JobRequest(
            target=entry.target,
            tgt_type=entry.tgt_type,
            fun="state.apply",
            args=list(entry.states),
            kwargs={"test": entry.test, "splay": entry.splay},
            timeout=entry.timeout + entry.splay,
            batch=None,
            user="schedule",
            epoch=self.leader.epoch,
        )
        try:
            job = self.jobs.start(request)
        except SalineError as e:
            log.error("schedule %s: %s", entry.name, e)
            return
        task = asyncio.create_task(self.jobs.supervise(job))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for task in self._running:
            task.cancel()
