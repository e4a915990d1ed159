"""What a minion may ask of the master: message kind → policy + handler. Deny by default.

Only the kinds ``MinionHandlers`` lists are reachable, and only under their policy:

* ``any_key`` — any key that passed the CURVE handshake (unknown, pending or accepted);
  only ``hello`` lives here, and for a key that is not accepted it can do nothing but
  land in *pending*.
* ``minion`` — an accepted key whose bound id equals the id the message claims.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import zmq

from master.admission import KeyAdmission
from master.bus import EventBus
from master.fileserver import FileMissing, FileServer, FileServerError
from master.functions import FunctionIndex
from master.intake import EventIntake
from master.inventory import Inventory
from master.jobs import JobManager
from master.minion_socket import MinionSocket
from master.pillar import PillarCompiler
from master.ratelimit import RateLimiter
from master.stats import Refusals
from master.store.base import EventRecord, ReturnRecord
from master.trust import TrustedGrains
from saline.codec import decode_from_minion
from saline.errors import KeyRingError, ProtocolError, SalineError
from saline.keys import KeyEntry, KeyRing, KeyState
from saline.protocol import (
    Ack,
    Bye,
    Event,
    FileReply,
    FileRequest,
    Heartbeat,
    Hello,
    Pending,
    PillarReply,
    PillarRequest,
    Refused,
    Rehello,
    Return,
    Welcome,
)
from saline.values import shape_problem

#: the largest frame a key that is not accepted may send (a hello with its grains)
MAX_HELLO_BYTES = 256 * 1024

log = logging.getLogger(__name__)


class Policy(StrEnum):
    ANY_KEY = "any_key"
    MINION = "minion"


@dataclass(frozen=True)
class Peer:
    #: ROUTER routing id of the connection the frame came on
    route: bytes
    #: Z85 public key the connection authenticated with (ZAP User-Id)
    public: str
    #: what the key ring knows of that key
    entry: KeyEntry | None

    @property
    def accepted_id(self) -> str | None:
        if self.entry is not None and self.entry.state is KeyState.ACCEPTED:
            return self.entry.id
        return None


@dataclass
class Batch:
    """What one pass over the socket collected; committed together (one transaction)."""

    returns: list[tuple[bytes, ReturnRecord]] = field(default_factory=list)
    #: events to store, and the (route, eid) of every event to acknowledge
    events: list[EventRecord] = field(default_factory=list)
    event_acks: list[tuple[bytes, str]] = field(default_factory=list)


class MinionHandlers:
    """The master's side of the minion protocol: decode, check the policy, handle."""

    def __init__(
        self,
        *,
        version: str,
        max_frame_bytes: int,
        auto_accept: bool,
        max_pending_keys: int,
        socket: MinionSocket,
        keys: KeyRing,
        admission: KeyAdmission,
        inventory: Inventory,
        functions: FunctionIndex,
        jobs: JobManager,
        intake: EventIntake,
        bus: EventBus,
        fileserver: FileServer,
        file_budget: RateLimiter,
        pillar: PillarCompiler,
        trusted: TrustedGrains,
        refusals: Refusals,
    ) -> None:
        self.version = version
        self.max_frame_bytes = max_frame_bytes
        self.auto_accept = auto_accept
        self.max_pending_keys = max_pending_keys
        self.socket = socket
        self.keys = keys
        self.admission = admission
        self.inventory = inventory
        self.functions = functions
        self.jobs = jobs
        self.intake = intake
        self.bus = bus
        self.fileserver = fileserver
        self.file_budget = file_budget
        self.pillar = pillar
        self.trusted = trusted
        self.refusals = refusals
        self._handlers: dict[str, tuple[Policy, Callable[[Peer, Any, Batch], None]]] = {
            "hello": (Policy.ANY_KEY, self.on_hello),
            "heartbeat": (Policy.MINION, self.on_heartbeat),
            "return": (Policy.MINION, self.on_return),
            "event": (Policy.MINION, self.on_event),
            "file_request": (Policy.MINION, self.on_file_request),
            "pillar_request": (Policy.MINION, self.on_pillar_request),
            "bye": (Policy.MINION, self.on_bye),
        }

    def handle(self, frames: list[zmq.Frame], batch: Batch) -> None:
        """One frame from the socket: refused, answered, or collected into ``batch``."""
        if len(frames) != 2:
            self.refusals.count("malformed", f"{len(frames) - 1} frames in one message")
            return
        route, payload = frames
        public = str(payload.get("User-Id"))
        entry = self.keys.lookup_key(public)
        # a key that is not accepted may only say hello, which is small: a big frame from
        # it is refused before it is parsed (parsing 16 MiB is what such a peer wants)
        cap = self.max_frame_bytes
        if entry is None or entry.state is not KeyState.ACCEPTED:
            cap = min(cap, MAX_HELLO_BYTES)
        try:
            if len(payload) > cap:  # before copying the frame out of libzmq
                raise ProtocolError("oversized", f"frame of {len(payload)} bytes exceeds cap {cap}")
            msg = decode_from_minion(payload.bytes, cap)
        except ProtocolError as e:
            self.refusals.count(e.reason, str(e))
            self.socket.reply(route.bytes, Refused(reason=str(e)))
            return
        peer = Peer(route.bytes, public, entry)
        policy, handler = self._handlers[msg.kind]
        reason = refusal(policy, peer, msg.id)
        if reason is not None:
            self.refusals.count(reason, f"{msg.kind} claiming {msg.id!r}")
            self.socket.reply(route.bytes, Refused(reason=reason))
            return
        handler(peer, msg, batch)

    def on_hello(self, peer: Peer, msg: Hello, batch: Batch) -> None:
        entry = peer.entry
        if entry is None:
            state = self._admit_new_key(peer, msg)
            if state is None:
                return
            if state is KeyState.PENDING:
                self.socket.reply(
                    peer.route, Pending(reason=f"key of {msg.id} is pending acceptance")
                )
                return
            entry = self.keys.lookup_key(peer.public)
            assert entry is not None
        if entry.id != msg.id:
            self.refusals.count("id_mismatch", f"key of {entry.id!r} claimed id {msg.id!r}")
            self.socket.reply(peer.route, Refused(reason=f"this key belongs to {entry.id!r}"))
            return
        if entry.state is KeyState.PENDING:
            self.socket.reply(peer.route, Pending(reason=f"key of {msg.id} is pending acceptance"))
            return
        if entry.state is not KeyState.ACCEPTED:
            self.refusals.count("rejected_key", msg.id)
            self.socket.reply(peer.route, Refused(reason="key rejected"))
            return
        problem = shape_problem(msg.grains)
        if problem is not None:
            self.refusals.count("bad_grains", f"{msg.id}: {problem}")
            self.socket.reply(peer.route, Refused(reason=f"bad_grains: grains.{problem}"))
            return
        if msg.functions:
            self.functions.update(msg.id, frozenset(msg.functions))
        self.jobs.declare_limits(msg.id, msg.timeouts, msg.max_function_timeout)
        self.inventory.hello(msg.id, msg.grains)
        if self.inventory.presence.start(msg.id, peer.route):
            log.info("minion %s connected (saline %s)", msg.id, msg.version[:32] or "?")
            self.bus.publish(f"saline/minion/{msg.id}/start", {"version": msg.version}, msg.id)
        self.socket.reply(peer.route, Welcome(id=msg.id, master_version=self.version))

    def _admit_new_key(self, peer: Peer, msg: Hello) -> KeyState | None:
        """A key never seen before: pending (while there is room), or accepted when auto_accept
        is on. Announced one by one at an enrolment's pace, once per flood beyond it."""
        state = KeyState.ACCEPTED if self.auto_accept else KeyState.PENDING
        limit = self.max_pending_keys
        if state is KeyState.PENDING and self.keys.count(KeyState.PENDING) >= limit:
            self.refusals.count("pending_full", f"{msg.id}: {limit} keys already pending")
            self._announce_flood(f"{limit} keys are pending (max_pending_keys): new keys refused")
            self.socket.reply(peer.route, Refused(reason="too many keys pending; try again later"))
            return None
        try:
            self.keys.add(msg.id, peer.public, state)
        except KeyRingError as e:
            self.refusals.count("id_conflict", str(e))
            self.socket.reply(peer.route, Refused(reason=str(e)))
            return None
        if state is KeyState.ACCEPTED:
            log.warning("AUTO-ACCEPTED the key of minion %r (auto_accept is on)", msg.id)
            return state
        if self.admission.announce():
            log.info("new key of minion %r is pending: `saline key accept %s`", msg.id, msg.id)
            self.bus.publish(f"saline/key/{msg.id}/pending", {"id": msg.id}, None)
        else:
            self._announce_flood("new keys arrive faster than an enrolment: filed silently")
        return state

    def _announce_flood(self, sentence: str) -> None:
        """One log line and one ``saline/key/flood`` event per flood of new keys."""
        if self.admission.flood_started():
            pending = self.keys.count(KeyState.PENDING)
            log.warning("%s (%d pending; `saline key list`)", sentence, pending)
            self.bus.publish("saline/key/flood", {"reason": sentence, "pending": pending}, None)

    def on_heartbeat(self, peer: Peer, msg: Heartbeat, batch: Batch) -> None:
        if not self.inventory.presence.seen(msg.id, peer.route):
            self.socket.reply(peer.route, Rehello())

    def on_return(self, peer: Peer, msg: Return, batch: Batch) -> None:
        self.inventory.presence.seen(msg.id, peer.route)
        fun = self.jobs.targeted_fun(msg.jid, msg.id)
        if fun is None:
            # no such job, or not sent to this minion: acknowledged (a resend is no better),
            # never stored, accounted or turned into events
            self.refusals.count("return_not_targeted", f"{msg.id} for job {msg.jid!r}")
            self.socket.reply(peer.route, Ack(jids=[msg.jid]))
            return
        success, retcode, ret = msg.success, msg.retcode, msg.ret
        problem = shape_problem(ret, allow_bytes=True)
        if problem is not None:
            # stored as a failure that says why (acknowledged: a resend would be no better)
            self.refusals.count("bad_return", f"{msg.id} job {msg.jid}: {problem}")
            success, retcode = False, 1
            ret = {"error": "bad_return", "message": f"the return could not be stored: {problem}"}
        record = ReturnRecord(
            jid=msg.jid,
            minion=msg.id,  # equal to the key's bound id: the policy checked it
            fun=fun,  # the job's, not what the return claims (drift is judged on it)
            success=success,
            retcode=retcode,
            ret=ret,
            duration_ms=msg.duration_ms,
            received=time.time(),
        )
        batch.returns.append((peer.route, record))

    def on_event(self, peer: Peer, msg: Event, batch: Batch) -> None:
        """Stamp the authenticated id, check namespace, rate and resends; queue for storing."""
        batch.event_acks.append((peer.route, msg.eid))
        intake = self.intake
        if not intake.allowed(msg.id, msg.tag):
            self.refusals.count("event_tag", f"{msg.id} may not fire {msg.tag[:80]!r}")
            return
        admitted, first_drop = intake.admit(msg.id)
        if not admitted:
            self.refusals.count("event_rate", f"{msg.id} over its event rate")
            if first_drop:
                data = {"rate": intake.rate, "burst": intake.burst}
                batch.events.append(
                    EventRecord(f"saline/minion/{msg.id}/rate_limited", data, None, 0)
                )
            return
        problem = intake.data_problem(msg.data)
        if problem is not None:
            self.refusals.count("bad_event", f"{msg.id} event {msg.tag[:80]!r}: {problem}")
            if intake.first_refusal(msg.id):
                refused = {"reason": "bad_event", "tag": msg.tag, "problem": problem}
                batch.events.append(
                    EventRecord(f"saline/minion/{msg.id}/refused", refused, None, 0)
                )
            return
        if intake.duplicate(msg.id, msg.eid):
            return
        batch.events.append(EventRecord(msg.tag, msg.data, msg.id, msg.ts or time.time()))

    def on_file_request(self, peer: Peer, msg: FileRequest, batch: Batch) -> None:
        try:
            served = self.fileserver.get(msg.path)
        except FileServerError as e:
            if not isinstance(e, FileMissing):  # a miss is routine (name.yaml, then name/init)
                self.refusals.count("file_refused", f"{msg.id}: {e}")
            self.socket.reply(peer.route, FileReply(req=msg.req, path=msg.path, error=str(e)))
            return
        data = None if msg.have == served.sha256 else served.data  # unchanged: not re-sent
        if data is not None and not self.file_budget.take(msg.id, cost=len(data))[0]:
            # a minion that asks faster than it could read: its replies would pile up unread
            self.refusals.count("file_rate", f"{msg.id}: {msg.path[:80]}")
            error = "file server: too many bytes asked for too fast; retry shortly"
            self.socket.reply(peer.route, FileReply(req=msg.req, path=msg.path, error=error))
            return
        self.socket.reply(
            peer.route, FileReply(req=msg.req, path=served.path, sha256=served.sha256, data=data)
        )

    def on_pillar_request(self, peer: Peer, msg: PillarRequest, batch: Batch) -> None:
        # msg.id equals the key's bound id (policy MINION): a minion only gets its own pillar,
        # compiled on trusted grains only (what it claims never unlocks a secret)
        trusted = self.trusted.of(msg.id)
        contradiction = self.trusted.contradiction(trusted, self.inventory.claimed_grains(msg.id))
        if contradiction is not None:
            self.refusals.count("grains_contradict", f"{msg.id}: {contradiction}")
            error = f"no pillar: claimed grains contradict the trusted ones ({contradiction})"
            self.socket.reply(peer.route, PillarReply(req=msg.req, error=error))
            return
        try:
            pillar, secrets = self.pillar.compile(msg.id, trusted)
        except SalineError as e:
            self.socket.reply(peer.route, PillarReply(req=msg.req, error=str(e)))
            return
        self.socket.reply(
            peer.route, PillarReply(req=msg.req, pillar=pillar, secrets=sorted(secrets))
        )

    def on_bye(self, peer: Peer, msg: Bye, batch: Batch) -> None:
        if self.inventory.presence.drop(msg.id):
            log.info("minion %s disconnected (shutdown)", msg.id)
            self.bus.publish(f"saline/minion/{msg.id}/lost", {"reason": "shutdown"}, msg.id)


def refusal(policy: Policy, peer: Peer, claimed_id: str) -> str | None:
    """Why ``peer`` may not send a message under ``policy`` claiming ``claimed_id``; None if ok."""
    if policy is Policy.ANY_KEY:
        return None
    if peer.accepted_id is None:
        return "not_accepted"
    if peer.accepted_id != claimed_id:
        return "id_mismatch"
    return None
