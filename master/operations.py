"""What an operator may ask of the master: one table of operations, each with its role,
its request model and its handler. Deny by default: only operations in the table exist.

The local client API (``master/clientapi.py``) is one door to this table; who is asking
(a :class:`Caller`) is decided at the door, what they may do is decided here.
"""

import asyncio
import difflib
import fnmatch
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from master import forward
from master.bus import EventBus
from master.client_models import (
    Done,
    Error,
    EventMessage,
    EventsRequest,
    Fired,
    FireRequest,
    ForgetRequest,
    Functions,
    History,
    HistoryRow,
    JobAccepted,
    JobDetail,
    JobMessage,
    JobRow,
    JobShown,
    JobShowRequest,
    JobsList,
    JobsListRequest,
    LeadershipStatus,
    Message,
    Orchestrated,
    OrchestrateRequest,
    Paused,
    PlainRequest,
    ReactionRequest,
    ReactorHistoryRequest,
    ReactorStatus,
    ReactorView,
    Reply,
    Request,
    RuleList,
    RunRequest,
    Started,
    Status,
    StoredReturn,
    Subscribed,
    Verdict,
)
from master.event_feed import StoreFeed
from master.functions import FunctionIndex
from master.inventory import Inventory
from master.jobrunner import MasterJobRunner
from master.jobs import ActiveJob, JobManager, JobRequest
from master.leadership import Leader, Solo
from master.notify import Notifier
from master.reactor import Reactor
from master.stats import Refusals
from master.store.base import Chain, EventRecord, JobFilter, ReactionRecord, Store
from reactors.orchestrate import NotifyStep, StepNotice, run_runbook
from reactors.runbook import RunbookError, find_runbook, load_runbook, unknown_notify_target
from saline.jid import new_jid
from saline.keys import KeyState
from saline.protocol import timeout_keyword
from saline.shellwords import refusal
from saline.supervisor import Supervisor

log = logging.getLogger(__name__)


class Role(StrEnum):
    ADMIN = "admin"
    ACL = "acl"


@dataclass(frozen=True)
class Caller:
    user: str
    role: Role
    #: function globs an ACL user may run (empty for admins: everything)
    allowed: tuple[str, ...] = ()

    def may_run(self, fun: str) -> bool:
        return self.role is Role.ADMIN or any(fnmatch.fnmatchcase(fun, g) for g in self.allowed)


Write = Callable[[Reply], Awaitable[None]]
Handler = Callable[[Caller, Any, Write], Awaitable[None]]


#: what a standby forwards to the leader: the switches of the reactor state in use
FORWARDED = frozenset(
    {"reactor_pause", "reactor_resume", "reactor_approve", "reactor_reject", "reactor_forget"}
)


class Relayed(Reply):
    """The leader's reply to a forwarded request, passed on to the standby's client as is."""

    body: dict[str, Any]

    def wire(self) -> dict[str, Any]:
        return self.body


@dataclass(frozen=True)
class Operation:
    #: the least role that may call it
    role: Role
    request: type[Request]
    handler: Handler


class Operations:
    def __init__(
        self,
        *,
        job_timeout: float,
        max_jobs_per_user: int,
        runbook_roots: list[Path],
        jobs: JobManager,
        inventory: Inventory,
        functions: FunctionIndex,
        store: Store,
        bus: EventBus,
        reactor: Reactor,
        refusals: Refusals,
        supervisor: Supervisor,
        notifier: Notifier | None = None,
    ) -> None:
        self.job_timeout = job_timeout
        self.max_jobs_per_user = max_jobs_per_user
        self.runbook_roots = runbook_roots
        self.jobs = jobs
        self.inventory = inventory
        self.functions = functions
        self.store = store
        self.bus = bus
        self.reactor = reactor
        self.refusals = refusals
        self.supervisor = supervisor
        #: queues the notify steps of runbooks run by hand (None: no notify targets)
        self.notifier = notifier
        #: each returner's counters, for status (the daemon sets it when returners exist)
        self.returners: Callable[[], dict[str, dict[str, Any]]] = dict
        #: the retention loop's keep settings and last pass, for status (set by the daemon)
        self.retention: Callable[[], dict[str, Any]] = dict
        #: jobs run with ``--async``: supervised here, no client waiting
        self._background: set[asyncio.Task[Done]] = set()
        self.table: dict[str, Operation] = {
            "run": Operation(Role.ACL, RunRequest, self.run),
            "jobs_list": Operation(Role.ACL, JobsListRequest, self.jobs_list),
            "job_show": Operation(Role.ACL, JobShowRequest, self.job_show),
            "events": Operation(Role.ACL, EventsRequest, self.events),
            "status": Operation(Role.ACL, PlainRequest, self.status),
            "fire": Operation(Role.ADMIN, FireRequest, self.fire),
            "reactor_list": Operation(Role.ACL, PlainRequest, self.reactor_list),
            "reactor_history": Operation(Role.ACL, ReactorHistoryRequest, self.reactor_history),
            "reactor_view": Operation(Role.ACL, PlainRequest, self.reactor_view),
            "reactor_pause": Operation(
                Role.ADMIN, PlainRequest, self._leader_only(self.reactor_pause)
            ),
            "reactor_resume": Operation(
                Role.ADMIN, PlainRequest, self._leader_only(self.reactor_resume)
            ),
            "reactor_reload": Operation(Role.ADMIN, PlainRequest, self.reactor_reload),
            "reactor_approve": Operation(
                Role.ADMIN, ReactionRequest, self._leader_only(self.reactor_approve)
            ),
            "reactor_reject": Operation(
                Role.ADMIN, ReactionRequest, self._leader_only(self.reactor_reject)
            ),
            "reactor_forget": Operation(
                Role.ADMIN, ForgetRequest, self._leader_only(self.reactor_forget)
            ),
            # a runbook run by hand is run where it is asked, like ``run`` (see orchestrate)
            "orchestrate": Operation(Role.ADMIN, OrchestrateRequest, self.orchestrate),
            "functions": Operation(Role.ACL, PlainRequest, self.list_functions),
        }
        reactor.on_request = self.answer_request

    def _leader_only(self, handler: Handler) -> Handler:
        """The reactor's switches act on the leader's reactor state: a standby forwards the
        request to the leader through the shared store and relays its answer."""

        async def guarded(caller: Caller, req: Any, write: Write) -> None:
            leader = self.reactor.leader
            if leader.leading():
                await handler(caller, req, write)
                return
            who = leader.term.leader
            if who is None or who == leader.name:
                await write(
                    Error(
                        message=f"this master ({leader.name}) does not lead and "
                        "no master leads right now: try again when one does"
                    )
                )
                return
            try:
                replies = await forward.ask(
                    self.store,
                    self.bus,
                    asker=leader.name,
                    op=req.op,
                    request=req.model_dump(mode="json"),
                    user=caller.user,
                    role=caller.role.value,
                )
            except forward.NoAnswer as e:
                await write(Error(message=f"this master ({leader.name}) does not lead: {e}"))
                return
            for body in replies:
                await write(Relayed(type=str(body.get("type", "error")), body=body))

        return guarded

    async def answer_request(self, record: EventRecord) -> None:
        """A standby's forwarded request (``master/forward.py``), done here on the leader by
        the same handler as a local caller's, as the user who asked on the standby."""
        rid, data = forward.request_id(record), record.data
        if rid is None or data.get("op") not in FORWARDED:
            return
        if not self.reactor.leader.leading():
            return  # the next leader replays the request, if anyone still waits for it
        if not isinstance(data.get("expires"), float | int) or data["expires"] < time.time():
            log.warning("dropped %s asked on %s: nobody waits for it", data["op"], data.get("from"))
            return
        operation = self.table[str(data["op"])]
        replies: list[dict[str, Any]] = []

        async def collect(reply: Reply) -> None:
            replies.append(reply.wire())

        try:
            caller = Caller(user=f"{data['user']}@{data['from']}", role=Role(data["role"]))
            request = operation.request.model_validate(data["request"])
        except (KeyError, ValueError) as e:
            await collect(Error(message=f"bad forwarded request: {e}"))
        else:
            if operation.role is Role.ADMIN and caller.role is not Role.ADMIN:
                await collect(Error(message="permission denied"))
            else:
                log.info("%s asked on %s by %s", data["op"], data["from"], data["user"])
                await operation.handler(caller, request, collect)
        forward.answer(self.bus, rid, self.reactor.leader.name, replies)

    # -- jobs ------------------------------------------------------------------------------

    async def run(self, caller: Caller, req: RunRequest, write: Write) -> None:
        """Start a job and stream it to the client for ``req.timeout`` seconds at most (the
        master's job_timeout by default); then the client gets a summary naming the
        minions still running it, and the job goes on to its end without the client."""
        if not caller.may_run(req.fun):
            self.refusals.count("client_acl", f"{caller.user} may not run {req.fun}")
            await write(Error(message=f"{caller.user} may not run {req.fun}"))
            return
        problem = _shell_problem(req) or self._unknown_function(req.fun)
        if problem is not None:  # before anything is sent: every minion would refuse it
            await write(Error(message=problem))
            return
        try:
            asked = timeout_keyword(req.kwargs)  # the function's time limit, if given
        except ValueError as e:
            await write(Error(message=str(e)))
            return
        limit = self.max_jobs_per_user
        running = sum(1 for j in self.jobs.active.values() if j.record.user == caller.user)
        if running >= limit:
            self.refusals.count("user_jobs", f"{caller.user} has {running} jobs running")
            why = f"{caller.user} has {running} jobs running (max_jobs_per_user {limit})"
            await write(Error(message=why))
            return
        request = JobRequest(
            target=req.target,
            tgt_type=req.tgt_type.value,
            fun=req.fun,
            args=req.args,
            kwargs=req.kwargs,
            timeout=asked,
            batch=req.batch,
            user=caller.user,
            secret=tuple(req.secret),
            batch_wait=req.batch_wait or 0.0,
        )
        job = self.jobs.start(request)
        queue: asyncio.Queue[JobMessage] = asyncio.Queue()
        if not req.background:
            job.listeners.append(queue)
        record = job.record
        await write(JobAccepted(jid=record.jid, minions=record.minions, missing=record.missing))
        # supervised here whether or not a client waits: the job outlives its client
        supervisor = asyncio.create_task(self.jobs.supervise(job))
        self._background.add(supervisor)
        supervisor.add_done_callback(self._background.discard)
        if req.background:  # the client goes; the job does not
            await write(Started(jid=record.jid))
            return
        try:
            await _stream(job, queue, req.timeout or self.job_timeout, write)
        finally:
            # the job goes on without this client (returns are stored either way)
            job.listeners.remove(queue)
            if supervisor.done():
                supervisor.result()

    def _unknown_function(self, fun: str) -> str | None:
        """``fun`` is on no minion, and every online minion said what it has."""
        known = self.functions
        if known.known(fun):
            return None
        online = self.inventory.online_ids()
        if not online or not all(known.reported(m) for m in online):
            return None  # an older minion lists nothing: let it answer for itself
        close = difflib.get_close_matches(fun, known.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listing = "`saline run ID sys.list_functions`"
        return f"no online minion has a function {fun!r}{hint}: see {listing}"

    async def jobs_list(self, caller: Caller, req: JobsListRequest, write: Write) -> None:
        """The newest jobs passing the request's filters (filtered by the store: ``limit``
        counts matching jobs)."""
        filters = JobFilter(fun=req.fun, target=req.target, user=req.user, test=req.test)
        rows = [
            JobRow(
                jid=s.job.jid,
                fun=s.job.fun,
                target=s.job.target,
                user=s.job.user,
                minions=len(s.job.minions),
                returned=s.returned,
                succeeded=s.succeeded,
                created=s.job.created,
            )
            for s in self.store.list_jobs(req.limit, filters)
        ]
        await write(JobsList(jobs=rows))

    async def job_show(self, caller: Caller, req: JobShowRequest, write: Write) -> None:
        job = self.store.get_job(req.jid)
        if job is None:
            await write(Error(message=f"no job {req.jid!r}"))
            return
        returns = {
            m: StoredReturn(success=r.success, retcode=r.retcode, ret=r.ret)
            for m, r in self.store.job_returns(req.jid).items()
        }
        shown = JobShown(
            job=JobDetail(
                jid=job.jid,
                fun=job.fun,
                args=job.args,
                kwargs=job.kwargs,
                target=job.target,
                tgt_type=job.tgt_type,
                user=job.user,
                created=job.created,
                timeout=job.timeout,
                minions=job.minions,
                missing=job.missing,
            ),
            returns=returns,
        )
        active = self.jobs.active.get(req.jid)
        if active is not None:  # while it runs: who runs it now, who waits because busy
            shown.running, shown.queued = sorted(active.inflight), self.jobs.queued(active)
        await write(shown)

    # -- events ----------------------------------------------------------------------------

    async def events(self, caller: Caller, req: EventsRequest, write: Write) -> None:
        if req.follow and not isinstance(self.reactor.leader, Solo):
            await self._events_of_every_master(req, write)
            return
        sub = self.bus.subscribe(req.tag)
        try:
            await write(Subscribed())
            if req.since is not None:
                for event in self.store.events_since(req.since, limit=10_000):
                    if fnmatch.fnmatchcase(event.tag, req.tag):
                        await write(_event_message(event))
            if not req.follow:
                await write(Done())
                return
            while True:
                await write(_event_message(await sub.queue.get()))
        finally:
            self.bus.unsubscribe(sub)

    async def _events_of_every_master(self, req: EventsRequest, write: Write) -> None:
        """With several masters each stores its own minions' events: follow the shared
        store (in seq order, late commits waited for), not this master's bus alone."""
        feed = StoreFeed(self.store, self.bus)
        try:
            feed.reset(req.since if req.since is not None else self.store.last_event_seq())
            await write(Subscribed())
            while True:
                for event in await feed.next():
                    if fnmatch.fnmatchcase(event.tag, req.tag):
                        await write(_event_message(event))
        finally:
            feed.close()

    async def fire(self, caller: Caller, req: FireRequest, write: Write) -> None:
        if req.tag.startswith(("saline/job/", "saline/key/", "saline/master/")):
            await write(Error(message=f"tag {req.tag!r} is reserved for the master"))
            return
        [event] = self.bus.publish_records([EventRecord(req.tag, req.data, None, 0)])
        log.info("event %s (seq %s) fired by %s", event.tag, event.seq, caller.user)
        await write(Fired(seq=event.seq, tag=event.tag))

    # -- the reactor -----------------------------------------------------------------------

    async def reactor_list(self, caller: Caller, req: PlainRequest, write: Write) -> None:
        state = self.reactor.current_state()
        await write(
            RuleList(
                paused=state.paused,
                rules=[r.model_dump(mode="json") for r in self.reactor.rules],
                in_flight=sorted(state.in_flight),
                awaiting=sorted(state.awaiting),
            )
        )

    async def reactor_view(self, caller: Caller, req: PlainRequest, write: Write) -> None:
        view = self.reactor.view()
        await write(
            ReactorView(
                seq=self.store.last_event_seq(),
                minions=view.inventory,
                online=sorted(view.online_ids or ()),
                observations=view.observations,
                state=self.reactor.current_state().model_dump(mode="json"),
            )
        )

    async def reactor_history(
        self, caller: Caller, req: ReactorHistoryRequest, write: Write
    ) -> None:
        rows = self.store.reaction_history(req.limit, req.rule)
        await write(History(history=[_history_row(r) for r in rows]))

    async def reactor_pause(self, caller: Caller, req: PlainRequest, write: Write) -> None:
        self.reactor.pause(True)
        log.warning("reactor paused by %s", caller.user)
        await write(Paused(paused=True))

    async def reactor_resume(self, caller: Caller, req: PlainRequest, write: Write) -> None:
        self.reactor.pause(False)
        log.warning("reactor resumed by %s", caller.user)
        await write(Paused(paused=False))

    async def reactor_reload(self, caller: Caller, req: PlainRequest, write: Write) -> None:
        await write(Message(message=self.reactor.reload()))

    def _held(self, prefix: str) -> tuple[str | None, str | None]:
        """(reaction id, None) for the held reaction ``prefix`` starts (``reactor history``
        prints 12 characters), or (None, why not) when it names none or several."""
        held = sorted(r for r in self.reactor.state.awaiting if r.startswith(prefix))
        if len(held) == 1:
            return held[0], None
        if held:
            return None, f"{prefix!r} names {len(held)} held reactions: give more of the id"
        return prefix, None  # the engine says why it cannot (unknown, already decided)

    async def reactor_approve(self, caller: Caller, req: ReactionRequest, write: Write) -> None:
        reaction, why = self._held(req.id)
        if reaction is None:
            await write(Error(message=why or req.id))
            return
        decision = self.reactor.approve(reaction, caller.user)
        await write(Verdict(verdict=decision.verdict.value, reason=decision.reason))

    async def reactor_reject(self, caller: Caller, req: ReactionRequest, write: Write) -> None:
        reaction, why = self._held(req.id)
        if reaction is None:
            await write(Error(message=why or req.id))
            return
        await write(Message(message=self.reactor.reject(reaction, caller.user)))

    async def reactor_forget(self, caller: Caller, req: ForgetRequest, write: Write) -> None:
        sentence = self.reactor.forget(req.rule, req.key)
        log.warning("%s (asked by %s)", sentence, caller.user)
        await write(Message(message=sentence))

    async def orchestrate(self, caller: Caller, req: OrchestrateRequest, write: Write) -> None:
        """``saline orchestrate``: the engine the reactor's orchestrate action uses, run on
        the master asked (each master reaches every minion). Its jobs are an operator's, like
        ``run``: on a standby they carry no epoch (a leader's are fenced with its own)."""
        runbook = load_runbook(find_runbook(req.runbook, self.runbook_roots))
        problem = runbook.var_problem(req.vars) or unknown_notify_target(
            runbook, self.notifier.names if self.notifier is not None else ()
        )
        if problem is not None:
            raise RunbookError(problem)
        user = f"orchestrate:{caller.user}"
        leader = self.reactor.leader
        epoch = leader.epoch if leader.leading() else 0
        runner = MasterJobRunner(self.jobs, self.inventory, user, Chain(), epoch)
        result = await run_runbook(
            runbook, runner, vars=req.vars, test=req.test, notify=self._step_notifier()
        )
        await write(Orchestrated.model_validate(result.model_dump(mode="json")))

    def _step_notifier(self) -> NotifyStep | None:
        """A hand-run runbook's notify steps: each run its own (a run is never resumed)."""
        notifier = self.notifier
        if notifier is None:
            return None
        run = new_jid()

        async def notify(notice: StepNotice) -> tuple[bool, str]:
            delivery = f"orchestrate/{run}/step{notice.number}/notify/{notice.target}"
            return await notifier.step(delivery, notice)

        return notify

    # -- status ----------------------------------------------------------------------------

    async def status(self, caller: Caller, req: PlainRequest, write: Write) -> None:
        keys = self.inventory.keys
        state = self.reactor.current_state()
        await write(
            Status(
                online=self.inventory.online_ids(),
                keys={s.value: keys.ids(s) for s in KeyState},
                refusals=self.refusals.as_dict(),
                active_jobs=len(self.jobs.active),
                observations=self.reactor.observations.states(),
                tasks=self.supervisor.as_dict(),
                reactor=ReactorStatus(
                    paused=state.paused,
                    failures=self.reactor.failures,
                    in_flight=sorted(state.in_flight),
                    awaiting_approval=sorted(state.awaiting),
                ),
                leadership=_leadership(self.reactor.leader),
                returners=self.returners(),
                notify=self.notifier.status() if self.notifier is not None else {},
                retention=self.retention(),
            )
        )

    # -- functions -------------------------------------------------------------------------

    async def list_functions(self, caller: Caller, req: PlainRequest, write: Write) -> None:
        """What the minions' hellos listed, less what the caller may not run (shell
        completion of ``saline run TARGET FUNCTION``)."""
        names = [f for f in self.functions.names() if caller.may_run(f)]
        await write(Functions(functions=names))


def _leadership(leader: Leader) -> LeadershipStatus:
    term, leading = leader.term, leader.leading()
    who, reason = term.leader, term.reason
    if who == leader.name and not leading:  # its lease is past the safe time: not yet noted
        who, reason = None, "this master's lease was not confirmed in time"
    return LeadershipStatus(
        name=leader.name,
        leader=who,
        epoch=term.epoch,
        since=term.since,
        leading=leading,
        reason=reason,
        error=leader.last_error,
        masters=dict(leader.members),
    )


async def _stream(
    job: ActiveJob, queue: "asyncio.Queue[JobMessage]", wait: float, write: Write
) -> None:
    """What ``job`` tells ``queue``, to the client, until the job's summary or until
    ``wait`` seconds have passed: then what is queued, and a summary of the job so far
    naming the minions still running it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        if queue.empty():
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                while not queue.empty():  # what arrived meanwhile is the client's too
                    message = queue.get_nowait()
                    await write(message)
                    if isinstance(message, Done):
                        return
                await write(job.summary(stopped_waiting=True))
                return
        else:
            message = queue.get_nowait()
        await write(message)
        if isinstance(message, Done):
            return


def _shell_problem(req: RunRequest) -> str | None:
    """``cmd.run`` with a command string holding shell syntax and no ``shell=true``."""
    if req.fun != "cmd.run" or not req.args or not isinstance(req.args[0], str):
        return None
    for key in ("shell", "python_shell"):
        if str(req.kwargs.get(key, "")).strip().lower() in ("true", "yes", "on", "1"):
            return None
    return refusal(req.args[0], "cmd.run")


def _event_message(event: EventRecord) -> EventMessage:
    return EventMessage(
        seq=event.seq,
        tag=event.tag,
        data=event.data,
        minion=event.minion,
        ts=event.ts,
        cause=event.cause,
        depth=event.depth,
        rule=event.rule,
    )


def _history_row(row: ReactionRecord) -> HistoryRow:
    return HistoryRow(
        id=row.id,
        event_seq=row.event_seq,
        event_tag=row.event_tag,
        rule=row.rule,
        verdict=row.verdict,
        reason=row.reason,
        key=row.key,
        actions=[a.model_dump(mode="json") for a in row.actions],
        progress={
            str(i): {k: v for k, v in vars(p).items() if v is not None}
            for i, p in row.progress.items()
        },
        outcome=row.outcome,
        created=row.created,
        finished=row.finished,
    )
