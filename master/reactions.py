"""Running a fired reaction: its actions in order, each one's progress stored before and
after it runs, so a master restarted mid-reaction resumes it without sending any job twice.
A runbook journals each job it starts in its action's progress; resumed, it runs again on
that journal, awaiting the journaled jobs from the store (``master/jobrunner.py``).

Whatever an action produces — an event, a job, a runbook's jobs — carries the reaction's
chain (the causing event, the depth, the rule).
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from master.bus import EventBus
from master.inventory import Inventory
from master.jobrunner import JournaledJobRunner, MasterJobRunner
from master.jobs import JobManager
from master.store.base import (
    ActionProgress,
    Chain,
    EventRecord,
    Fenced,
    ReactionRecord,
    Store,
)
from reactors.model import RenderedAction
from reactors.orchestrate import JobOutcome, NotifyStep, StepNotice, run_runbook
from reactors.rules import (
    EscalateAction,
    FireAction,
    NotifyAction,
    OrchestrateAction,
    RunAction,
)
from reactors.runbook import Runbook
from saline.errors import SalineError

log = logging.getLogger(__name__)

#: seconds between looks at the store while a resumed reaction waits for its job
RESUME_POLL = 0.2
#: characters of an action's detail (a runbook's findings are cut there)
MAX_DETAIL = 4000

#: runs a rule's notify action: (reaction, action index, action) -> (done, detail)
Notify = Callable[[ReactionRecord, int, NotifyAction], Awaitable[tuple[bool, str]]]
#: queues a runbook's notify step: (dedup id, notice, reaction) -> (queued, detail)
NotifyStepOf = Callable[[str, StepNotice, ReactionRecord | None], Awaitable[tuple[bool, str]]]


class ReactionExecutor:
    def __init__(
        self,
        store: Store,
        bus: EventBus,
        jobs: JobManager,
        inventory: Inventory,
        runbook: Callable[[str], Runbook],
        finished: Callable[[ReactionRecord, bool], str],
        epoch: Callable[[], int] = lambda: 0,
    ) -> None:
        self.store = store
        #: the leader's epoch, carried by every progress write and job (the store fences)
        self.epoch = epoch
        self.bus = bus
        self.jobs = jobs
        self.inventory = inventory
        #: the runbook a rule names, as loaded with the rules
        self.runbook = runbook
        #: tells the reactor's state the reaction ended; answers the sentence to log
        self.finished = finished
        #: runs a rule's notify action (the notifier's; None: no notify targets configured)
        self.notify: Notify | None = None
        #: queues a runbook's notify step (the notifier's; None: no notify targets)
        self.notify_step: NotifyStepOf | None = None

    async def execute(self, row: ReactionRecord) -> None:
        try:
            await self._execute(row)
        except Fenced as e:  # another master leads now: it resumes this reaction
            log.warning("reaction %s stopped: %s", row.id, e)
            raise

    def _save(self, row: ReactionRecord) -> None:
        row.epoch = max(row.epoch, self.epoch())
        self.store.save_reactions([row])

    async def _execute(self, row: ReactionRecord) -> None:
        ok = True
        for index, action in enumerate(row.actions):
            progress = row.progress.get(index)
            if progress is not None and progress.state in ("done", "failed"):
                ok = ok and progress.state == "done"
                continue
            try:
                if progress is not None and isinstance(action.action, OrchestrateAction):
                    # a runbook started by a master that is gone: rerun on its journal
                    done, detail = await self._run(row, index, action)
                elif progress is not None:  # started by a master that is gone
                    done, detail = await self._resume(progress)
                else:
                    done, detail = await self._run(row, index, action)
            except Fenced:
                raise
            except (SalineError, ValueError, KeyError) as e:
                done, detail = False, str(e)
            except Exception as e:  # a bug: the reaction fails with the error, the master lives
                log.exception("action %d of reaction %s raised", index, row.id)
                done, detail = False, f"raised {type(e).__name__}: {str(e)[:500]}"
            before = row.progress.get(index, ActionProgress("started"))
            state: Literal["done", "failed"] = "done" if done else "failed"
            row.progress[index] = ActionProgress(state, before.jid, detail, before.jids)
            self._save(row)
            if not done:
                ok = False
                break
        row.outcome, row.finished = ("ok" if ok else "failed"), time.time()
        self._save(row)
        sentence = self.finished(row, ok)
        log.info("%s", sentence)
        suffix = "finished" if ok else "failed"
        data = {"reaction": row.id, "outcome": row.outcome, "reason": sentence}
        chain = Chain(row.event_seq, row.depth, row.rule)
        self.bus.publish_records(
            [EventRecord.caused(f"saline/reactor/{row.rule}/{suffix}", data, chain)]
        )

    async def _run(
        self, row: ReactionRecord, index: int, rendered: RenderedAction
    ) -> tuple[bool, str]:
        action = rendered.action
        chain = Chain(row.event_seq, rendered.depth, row.rule)
        runner = MasterJobRunner(
            self.jobs, self.inventory, f"reactor:{row.rule}", chain, self.epoch()
        )
        if isinstance(action, FireAction):
            [event] = self.bus.publish_records([EventRecord.caused(action.tag, action.data, chain)])
            return True, f"fired {action.tag} (seq {event.seq})"
        if isinstance(action, NotifyAction):
            if self.notify is None:
                return False, f"notify {action.target}: no notify targets are configured"
            return await self.notify(row, index, action)
        if isinstance(action, OrchestrateAction):
            return await self._orchestrate(row, index, action, runner)
        if isinstance(action, EscalateAction):  # decided as an escalation, never fired
            return False, f"escalate is a decision, not an action: {action.reason}"
        if isinstance(action, RunAction):
            fun, args, kwargs = action.function, action.args, action.kwargs
        else:
            fun, args, kwargs = "state.apply", list(action.states), {"test": action.test}
        # the function's own time limit (a reconfigure takes minutes), not a client's wait
        job = runner.start(action.target, action.tgt_type.value, fun, args, kwargs, None)
        # the jid is durable before the job is sent: after a restart it is awaited, not resent
        row.progress[index] = ActionProgress("started", job.record.jid)
        self._save(row)
        return judge(await runner.finish(job), fun)

    async def _orchestrate(
        self, row: ReactionRecord, index: int, action: OrchestrateAction, runner: MasterJobRunner
    ) -> tuple[bool, str]:
        """Run (or, after a master's death, rerun on its journal) an action's runbook.

        Each job the runbook starts is journaled in the action's progress and the row saved
        before the job is sent; a rerun awaits the journaled jobs instead of sending them.
        :raises Fenced: another master leads now; no further job was sent.
        """
        runbook = self.runbook(action.runbook)
        progress = row.progress.get(index)
        journal = list(progress.jids) if progress is not None else []
        row.progress[index] = ActionProgress("started", jids=journal)
        self._save(row)
        journaled = JournaledJobRunner(runner, self.store, journal, lambda: self._save(row))
        result = await run_runbook(
            runbook,
            journaled,
            vars=action.vars,
            test=action.test,
            fatal=(Fenced,),
            notify=self._step_notifier(row, index),
        )
        said = "succeeded"
        if not result.success:
            # the ladder's findings: the step that ended it, then every other step that failed
            # (probes included), with what each minion reported
            failing = [s for s in result.steps if s.result is False]
            last = next((s for s in failing if s.name == result.stopped_at), None)
            last = last or next((s for s in failing if s.name not in _probe_names(runbook)), None)
            said = f"stopped at {result.stopped_at}" if result.stopped_at else "failed"
            said += f": {last.comment}" if last is not None else ""
            before = [f"{s.name}: {s.comment}" for s in failing if s is not last]
            if before:
                said += f"; also failed: {'; '.join(before)}"
            said = said if len(said) <= MAX_DETAIL else said[: MAX_DETAIL - 3] + "..."
        if journaled.replayed:
            said += f" (resumed: {journaled.replayed} journaled job(s) awaited, not resent)"
        return result.success, f"runbook {runbook.name}: {said}"

    def _step_notifier(self, row: ReactionRecord, index: int) -> NotifyStep | None:
        """The runbook's notify steps, deduplicated by reaction, action and step number (a
        runbook rerun after a restart tells nobody twice)."""
        queue = self.notify_step
        if queue is None:
            return None

        async def notify(notice: StepNotice) -> tuple[bool, str]:
            delivery = f"{row.id}/{index}/step{notice.number}/notify/{notice.target}"
            return await queue(delivery, notice, row)

        return notify

    async def _resume(self, progress: ActionProgress) -> tuple[bool, str]:
        jid = progress.jid
        if jid is None:
            return False, "interrupted by a master restart; not run again"
        job = self.store.get_job(jid)
        if job is None:
            return False, f"job {jid} was never stored"
        expected = set(job.minions) - set(job.missing)
        deadline = job.created + job.timeout
        while time.time() < deadline:
            if expected <= set(self.store.job_returns(jid)):
                break
            await asyncio.sleep(RESUME_POLL)
        returns = self.store.job_returns(jid)
        failed = sorted(m for m in expected if m not in returns or not returns[m].success)
        if failed:
            return False, f"job {jid}: no success from {', '.join(failed)}"
        return True, f"job {jid} (resumed): {len(returns)} succeeded"


def _probe_names(runbook: Runbook) -> set[str]:
    return {step.name for step in runbook.steps if step.probe}


def judge(outcome: JobOutcome, fun: str) -> tuple[bool, str]:
    """Did a reaction's job do its work: every targeted minion succeeded, and there was one."""
    problems = outcome.problems(outcome.returns)
    if not outcome.returns and not problems:
        return False, f"job {outcome.jid}: the target matched no minion"
    if problems:
        listed = ", ".join(f"{m} {why}" for m, why in problems.items())
        return False, f"job {outcome.jid} ({fun}): {listed}"
    return True, f"job {outcome.jid} ({fun}): {len(outcome.returns)} succeeded"
