"""The local client API: a Unix socket for the CLI, root-only unless ``client_acl`` opens it.

Who is asking comes from the kernel (SO_PEERCRED), never from the request. The master's
own user and root may do everything; a user listed in ``client_acl`` may read jobs and
events and run the functions its globs allow; anyone else is refused at the door. With no
``client_acl`` the socket is 0600 in a 0700 directory, so nobody else can even connect.

Operations are deny-by-default: only those in ``OPS`` exist, each with a request model.
"""

import asyncio
import contextlib
import difflib
import fnmatch
import logging
import os
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from master.jobs import JobRequest
from master.store.base import EventRecord
from saline.api import HEADER_SIZE, frame, frame_length, parse
from saline.errors import ProtocolError, SalineError
from saline.keys import KeyState
from saline.shellwords import refusal
from saline.targeting import TargetType

if TYPE_CHECKING:
    from master.daemon import Master

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


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: Literal[1] = 1
    op: str


#: a batch given as a share of the minions: 1% to 100%
_SHARE = r"^(100|[1-9][0-9]?)%$"


class RunRequest(_Request):
    target: str = Field(min_length=1, max_length=4096)
    tgt_type: TargetType = TargetType.GLOB
    fun: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    timeout: float | None = Field(default=None, gt=0, le=86400)
    #: at most N minions at a time, or "N%" of those reached
    batch: Annotated[int, Field(ge=1)] | Annotated[str, Field(pattern=_SHARE)] | None = None
    #: kwarg names (or positions, as digits) whose values are secrets: never stored or shown
    secret: list[str] = Field(default_factory=list, max_length=64)
    #: answer with the jid at once; the job goes on (``saline jobs wait JID``)
    background: bool = False


class JobsListRequest(_Request):
    limit: int = Field(default=50, ge=1, le=10_000)


class JobShowRequest(_Request):
    jid: str = Field(max_length=64)


class EventsRequest(_Request):
    tag: str = Field(default="*", max_length=1024)
    #: replay stored events with seq greater than this before streaming live ones
    since: int | None = Field(default=None, ge=0)
    #: False: replay stored events (``since``) and end with ``done`` instead of streaming
    follow: bool = True


class StatusRequest(_Request):
    pass


class ReactorHistoryRequest(_Request):
    limit: int = Field(default=50, ge=1, le=10_000)
    rule: str | None = Field(default=None, max_length=128)


class ReactionRequest(_Request):
    id: str = Field(min_length=1, max_length=64)


class OrchestrateRequest(_Request):
    runbook: str = Field(min_length=1, max_length=256)
    vars: dict[str, Any] = Field(default_factory=dict)
    test: bool = False


class FireRequest(_Request):
    tag: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.:@/*+-]+$")
    data: dict[str, Any] = Field(default_factory=dict)


Write = Callable[[dict[str, Any]], Awaitable[None]]


class ClientApi:
    def __init__(self, master: "Master") -> None:
        self.master = master
        self.server: asyncio.AbstractServer | None = None
        #: jobs run with ``--async``: supervised here, no client waiting
        self._background: set[asyncio.Task[dict[str, Any]]] = set()
        self.ops: dict[str, tuple[Role, type[_Request], Callable[..., Awaitable[None]]]] = {
            "run": (Role.ACL, RunRequest, self.op_run),
            "jobs_list": (Role.ACL, JobsListRequest, self.op_jobs_list),
            "job_show": (Role.ACL, JobShowRequest, self.op_job_show),
            "events": (Role.ACL, EventsRequest, self.op_events),
            "status": (Role.ACL, StatusRequest, self.op_status),
            "fire": (Role.ADMIN, FireRequest, self.op_fire),
            "reactor_list": (Role.ACL, StatusRequest, self.op_reactor_list),
            "reactor_history": (Role.ACL, ReactorHistoryRequest, self.op_reactor_history),
            "reactor_pause": (Role.ADMIN, StatusRequest, self.op_reactor_pause),
            "reactor_resume": (Role.ADMIN, StatusRequest, self.op_reactor_resume),
            "reactor_reload": (Role.ADMIN, StatusRequest, self.op_reactor_reload),
            "reactor_approve": (Role.ADMIN, ReactionRequest, self.op_reactor_approve),
            "reactor_reject": (Role.ADMIN, ReactionRequest, self.op_reactor_reject),
            "orchestrate": (Role.ADMIN, OrchestrateRequest, self.op_orchestrate),
        }

    # -- socket ------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.master.config
        open_to_acl = bool(cfg.client_acl)
        cfg.sock_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(cfg.sock_dir, 0o755 if open_to_acl else 0o700)
        path = cfg.client_socket
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.server = await asyncio.start_unix_server(self._serve, path=str(path), limit=1 << 20)
        os.chmod(path, 0o666 if open_to_acl else 0o600)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1)
        with contextlib.suppress(FileNotFoundError):
            self.master.config.client_socket.unlink()

    def identify(self, sock: socket.socket) -> Caller | None:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        if uid in (0, os.getuid()):
            return Caller(user, Role.ADMIN)
        globs = self.master.config.client_acl.get(user)
        if globs is None:
            return None
        return Caller(user, Role.ACL, tuple(globs))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def write(message: dict[str, Any]) -> None:
            writer.write(frame(message))
            await writer.drain()

        try:
            caller = self.identify(writer.get_extra_info("socket"))
            if caller is None:
                self.master.refusals.count("client_denied", "local user not in client_acl")
                await write({"type": "error", "message": "permission denied: not in client_acl"})
                return
            while True:
                try:
                    header = await reader.readexactly(HEADER_SIZE)
                except asyncio.IncompleteReadError:
                    return
                body = await reader.readexactly(frame_length(header))
                await self._dispatch(caller, parse(body), write)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except ProtocolError as e:
            self.master.refusals.count("client_" + e.reason, str(e))
            with contextlib.suppress(ConnectionError):
                await write({"type": "error", "message": str(e)})
        finally:
            writer.close()

    async def _dispatch(self, caller: Caller, raw: dict[str, Any], write: Write) -> None:
        entry = self.ops.get(str(raw.get("op")))
        if entry is None:
            self.master.refusals.count("client_unknown_op", str(raw.get("op"))[:64])
            await write({"type": "error", "message": f"unknown operation {raw.get('op')!r}"})
            return
        role, model, handler = entry
        if role is Role.ADMIN and caller.role is not Role.ADMIN:
            await write({"type": "error", "message": "permission denied"})
            return
        try:
            request = model.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            await write({"type": "error", "message": f"bad request: {field}: {err['msg']}"})
            return
        try:
            await handler(caller, request, write)
        except SalineError as e:
            await write({"type": "error", "message": str(e)})

    # -- operations --------------------------------------------------------------------

    async def op_run(self, caller: Caller, req: RunRequest, write: Write) -> None:
        if not caller.may_run(req.fun):
            self.master.refusals.count("client_acl", f"{caller.user} may not run {req.fun}")
            await write({"type": "error", "message": f"{caller.user} may not run {req.fun}"})
            return
        problem = _shell_problem(req) or self._unknown_function(req.fun)
        if problem is not None:  # before anything is sent: every minion would refuse it
            await write({"type": "error", "message": problem})
            return
        limit = self.master.config.max_jobs_per_user
        running = sum(1 for j in self.master.jobs.active.values() if j.record.user == caller.user)
        if running >= limit:
            self.master.refusals.count("user_jobs", f"{caller.user} has {running} jobs running")
            why = f"{caller.user} has {running} jobs running (max_jobs_per_user {limit})"
            await write({"type": "error", "message": why})
            return
        request = JobRequest(
            target=req.target,
            tgt_type=req.tgt_type.value,
            fun=req.fun,
            args=req.args,
            kwargs=req.kwargs,
            timeout=req.timeout or self.master.config.job_timeout,
            batch=req.batch,
            user=caller.user,
            secret=tuple(req.secret),
        )
        job = self.master.jobs.start(request, self.master.inventory())
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        job.listeners.append(queue)
        record = job.record
        await write(
            {"type": "job", "jid": record.jid, "minions": record.minions, "missing": record.missing}
        )
        if req.background:  # the client goes; the job does not
            task = asyncio.create_task(self.master.jobs.supervise(job))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            await write({"type": "started", "jid": record.jid})
            return
        supervisor = asyncio.create_task(self.master.jobs.supervise(job))
        try:
            while True:
                message = await queue.get()
                await write(message)
                if message["type"] == "done":
                    return
        finally:
            # the job goes on without this client (returns are stored either way)
            job.listeners.remove(queue)
            if supervisor.done():
                supervisor.result()

    async def op_jobs_list(self, caller: Caller, req: JobsListRequest, write: Write) -> None:
        jobs = [
            {
                "jid": s.job.jid,
                "fun": s.job.fun,
                "target": s.job.target,
                "user": s.job.user,
                "minions": len(s.job.minions),
                "returned": s.returned,
                "succeeded": s.succeeded,
                "created": s.job.created,
            }
            for s in self.master.store.list_jobs(req.limit)
        ]
        await write({"type": "result", "jobs": jobs})

    async def op_job_show(self, caller: Caller, req: JobShowRequest, write: Write) -> None:
        job = self.master.store.get_job(req.jid)
        if job is None:
            await write({"type": "error", "message": f"no job {req.jid!r}"})
            return
        returns = {
            m: {"success": r.success, "retcode": r.retcode, "return": r.ret}
            for m, r in self.master.store.job_returns(req.jid).items()
        }
        await write(
            {
                "type": "result",
                "job": {
                    "jid": job.jid,
                    "fun": job.fun,
                    "args": job.args,
                    "kwargs": job.kwargs,
                    "target": job.target,
                    "tgt_type": job.tgt_type,
                    "user": job.user,
                    "created": job.created,
                    "timeout": job.timeout,
                    "minions": job.minions,
                    "missing": job.missing,
                },
                "returns": returns,
                # while it runs: who runs it now, and who waits because they are busy
                **self._live(req.jid),
            }
        )

    def _unknown_function(self, fun: str) -> str | None:
        """``fun`` is on no minion, and every online minion said what it has."""
        known = self.master.functions
        if known.known(fun):
            return None
        online = self.master.presence.online_ids()
        if not online or not all(known.reported(m) for m in online):
            return None  # an older minion lists nothing: let it answer for itself
        close = difflib.get_close_matches(fun, known.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listing = "`saline run ID sys.list_functions`"
        return f"no online minion has a function {fun!r}{hint}: see {listing}"

    def _live(self, jid: str) -> dict[str, Any]:
        active = self.master.jobs.active.get(jid)
        if active is None:
            return {}
        return {"running": sorted(active.inflight), "queued": self.master.jobs.queued(active)}

    async def op_events(self, caller: Caller, req: EventsRequest, write: Write) -> None:
        sub = self.master.bus.subscribe(req.tag)
        try:
            await write({"type": "subscribed"})
            if req.since is not None:
                for event in self.master.store.events_since(req.since, limit=10_000):
                    if fnmatch.fnmatchcase(event.tag, req.tag):
                        await write(_event_message(event))
            if not req.follow:
                await write({"type": "done"})
                return
            while True:
                await write(_event_message(await sub.queue.get()))
        finally:
            self.master.bus.unsubscribe(sub)

    async def op_fire(self, caller: Caller, req: FireRequest, write: Write) -> None:
        if req.tag.startswith(("saline/job/", "saline/key/")):
            await write({"type": "error", "message": f"tag {req.tag!r} is reserved for the master"})
            return
        [event] = self.master.bus.publish_records([EventRecord(req.tag, req.data, None, 0)])
        log.info("event %s (seq %s) fired by %s", event.tag, event.seq, caller.user)
        await write({"type": "result", "seq": event.seq, "tag": event.tag})

    async def op_reactor_list(self, caller: Caller, req: StatusRequest, write: Write) -> None:
        reactor = self.master.reactor
        rules = [r.model_dump(mode="json") for r in reactor.rules]
        state = reactor.state
        await write(
            {
                "type": "result",
                "paused": state.paused,
                "rules": rules,
                "in_flight": sorted(state.in_flight),
                "awaiting": sorted(state.awaiting),
            }
        )

    async def op_reactor_history(
        self, caller: Caller, req: ReactorHistoryRequest, write: Write
    ) -> None:
        rows = self.master.reactor.audit.history(req.limit, req.rule)
        history = [
            {**vars(r), "progress": {str(k): v for k, v in r.progress.items()}} for r in rows
        ]
        await write({"type": "result", "history": history})

    async def op_reactor_pause(self, caller: Caller, req: StatusRequest, write: Write) -> None:
        self.master.reactor.pause(True)
        log.warning("reactor paused by %s", caller.user)
        await write({"type": "result", "paused": True})

    async def op_reactor_resume(self, caller: Caller, req: StatusRequest, write: Write) -> None:
        self.master.reactor.pause(False)
        log.warning("reactor resumed by %s", caller.user)
        await write({"type": "result", "paused": False})

    async def op_reactor_reload(self, caller: Caller, req: StatusRequest, write: Write) -> None:
        await write({"type": "result", "message": self.master.reactor.reload()})

    def _held(self, prefix: str) -> tuple[str | None, str | None]:
        """(reaction id, None) for the held reaction ``prefix`` starts (``reactor history``
        prints 12 characters), or (None, why not) when it names none or several."""
        held = sorted(r for r in self.master.reactor.state.awaiting if r.startswith(prefix))
        if len(held) == 1:
            return held[0], None
        if held:
            return None, f"{prefix!r} names {len(held)} held reactions: give more of the id"
        return prefix, None  # the engine says why it cannot (unknown, already decided)

    async def op_reactor_approve(self, caller: Caller, req: ReactionRequest, write: Write) -> None:
        reaction, why = self._held(req.id)
        if reaction is None:
            await write({"type": "error", "message": why})
            return
        decision = self.master.reactor.approve(reaction, caller.user)
        await write(
            {"type": "result", "verdict": decision.verdict.value, "reason": decision.reason}
        )

    async def op_reactor_reject(self, caller: Caller, req: ReactionRequest, write: Write) -> None:
        reaction, why = self._held(req.id)
        if reaction is None:
            await write({"type": "error", "message": why})
            return
        await write(
            {"type": "result", "message": self.master.reactor.reject(reaction, caller.user)}
        )

    async def op_orchestrate(self, caller: Caller, req: OrchestrateRequest, write: Write) -> None:
        result = await self.master.reactor.orchestrate(req.runbook, req.vars, req.test, caller.user)
        await write({"type": "result", **result})

    async def op_status(self, caller: Caller, req: StatusRequest, write: Write) -> None:
        master = self.master
        keys = {state.value: master.keys.ids(state) for state in KeyState}
        await write(
            {
                "type": "result",
                "online": master.presence.online_ids(),
                "keys": keys,
                "refusals": master.refusals.as_dict(),
                "active_jobs": len(master.jobs.active),
                # the cluster view: latest state per minion and beacon
                "observations": {
                    minion: {b: o.get("state") for b, o in seen.items() if ":" not in b}
                    for minion, seen in master.reactor.observations.items()
                },
                "tasks": master.supervisor.as_dict(),
                "reactor": {
                    "paused": master.reactor.state.paused,
                    "failures": master.reactor.failures,
                    "in_flight": sorted(master.reactor.state.in_flight),
                    "awaiting_approval": sorted(master.reactor.state.awaiting),
                },
            }
        )


def _shell_problem(req: RunRequest) -> str | None:
    """``cmd.run`` with a command string holding shell syntax and no ``shell=true``."""
    if req.fun != "cmd.run" or not req.args or not isinstance(req.args[0], str):
        return None
    for key in ("shell", "python_shell"):
        if str(req.kwargs.get(key, "")).strip().lower() in ("true", "yes", "on", "1"):
            return None
    return refusal(req.args[0], "cmd.run")


def _event_message(event: EventRecord) -> dict[str, Any]:
    return {
        "type": "event",
        "seq": event.seq,
        "tag": event.tag,
        "data": event.data,
        "minion": event.minion,
        "ts": event.ts,
        "cause": event.cause,
        "depth": event.depth,
        "rule": event.rule,
    }
