"""What a minion may ask of the master: message kind → policy + handler. Deny by default.

Only the kinds listed in ``HANDLERS`` are reachable, and only under their policy:

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
from typing import TYPE_CHECKING, Any

from master.fileserver import FileMissing, FileServerError
from master.store.base import EventRecord, MinionRecord, ReturnRecord
from saline.errors import KeyRingError, SalineError
from saline.keys import KeyEntry, KeyState
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

if TYPE_CHECKING:
    from master.daemon import Master

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


def on_hello(master: "Master", peer: Peer, msg: Hello, batch: Batch) -> None:
    entry = peer.entry
    if entry is None:
        state = _admit_new_key(master, peer, msg)
        if state is None:
            return
        if state is KeyState.PENDING:
            master.reply(peer.route, Pending(reason=f"key of {msg.id} is pending acceptance"))
            return
        entry = master.keys.lookup_key(peer.public)
        assert entry is not None
    if entry.id != msg.id:
        master.refusals.count("id_mismatch", f"key of {entry.id!r} claimed id {msg.id!r}")
        master.reply(peer.route, Refused(reason=f"this key belongs to {entry.id!r}"))
        return
    if entry.state is KeyState.PENDING:
        master.reply(peer.route, Pending(reason=f"key of {msg.id} is pending acceptance"))
        return
    if entry.state is not KeyState.ACCEPTED:
        master.refusals.count("rejected_key", msg.id)
        master.reply(peer.route, Refused(reason="key rejected"))
        return
    problem = shape_problem(msg.grains)
    if problem is not None:
        master.refusals.count("bad_grains", f"{msg.id}: {problem}")
        master.reply(peer.route, Refused(reason=f"bad_grains: grains.{problem}"))
        return
    master.grains[msg.id] = msg.grains
    if msg.functions:
        master.functions.update(msg.id, frozenset(msg.functions))
    master.store.save_minion(MinionRecord(msg.id, msg.grains, time.time()))
    if master.presence.start(msg.id, peer.route):
        log.info("minion %s connected (saline %s)", msg.id, msg.version[:32] or "?")
        master.bus.publish(f"saline/minion/{msg.id}/start", {"version": msg.version}, msg.id)
    master.reply(peer.route, Welcome(id=msg.id, master_version=master.version))


def _admit_new_key(master: "Master", peer: Peer, msg: Hello) -> KeyState | None:
    """A key never seen before: pending (while there is room), or accepted when auto_accept
    is on. Announced one by one at an enrolment's pace, once per flood beyond it."""
    state = KeyState.ACCEPTED if master.config.auto_accept else KeyState.PENDING
    limit = master.config.max_pending_keys
    if state is KeyState.PENDING and master.keys.count(KeyState.PENDING) >= limit:
        master.refusals.count("pending_full", f"{msg.id}: {limit} keys already pending")
        _announce_flood(master, f"{limit} keys are pending (max_pending_keys): new keys refused")
        master.reply(peer.route, Refused(reason="too many keys pending; try again later"))
        return None
    try:
        master.keys.add(msg.id, peer.public, state)
    except KeyRingError as e:
        master.refusals.count("id_conflict", str(e))
        master.reply(peer.route, Refused(reason=str(e)))
        return None
    if state is KeyState.ACCEPTED:
        log.warning("AUTO-ACCEPTED the key of minion %r (auto_accept is on)", msg.id)
        return state
    if master.admission.announce():
        log.info("new key of minion %r is pending: `saline key accept %s`", msg.id, msg.id)
        master.bus.publish(f"saline/key/{msg.id}/pending", {"id": msg.id}, None)
    else:
        _announce_flood(master, "new keys arrive faster than an enrolment: filed silently")
    return state


def _announce_flood(master: "Master", sentence: str) -> None:
    """One log line and one ``saline/key/flood`` event per flood of new keys."""
    if master.admission.flood_started():
        pending = master.keys.count(KeyState.PENDING)
        log.warning("%s (%d pending; `saline key list`)", sentence, pending)
        master.bus.publish("saline/key/flood", {"reason": sentence, "pending": pending}, None)


def on_heartbeat(master: "Master", peer: Peer, msg: Heartbeat, batch: Batch) -> None:
    if not master.presence.seen(msg.id, peer.route):
        master.reply(peer.route, Rehello())


def on_return(master: "Master", peer: Peer, msg: Return, batch: Batch) -> None:
    master.presence.seen(msg.id, peer.route)
    fun = master.jobs.targeted_fun(msg.jid, msg.id)
    if fun is None:
        # no such job, or not sent to this minion: acknowledged (a resend is no better),
        # never stored, accounted or turned into events
        master.refusals.count("return_not_targeted", f"{msg.id} for job {msg.jid!r}")
        master.reply(peer.route, Ack(jids=[msg.jid]))
        return
    success, retcode, ret = msg.success, msg.retcode, msg.ret
    problem = shape_problem(ret, allow_bytes=True)
    if problem is not None:
        # stored as a failure that says why (acknowledged: a resend would be no better)
        master.refusals.count("bad_return", f"{msg.id} job {msg.jid}: {problem}")
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


def on_event(master: "Master", peer: Peer, msg: Event, batch: Batch) -> None:
    """Stamp the authenticated id, check namespace, rate and resends; queue for storing."""
    batch.event_acks.append((peer.route, msg.eid))
    intake = master.intake
    if not intake.allowed(msg.id, msg.tag):
        master.refusals.count("event_tag", f"{msg.id} may not fire {msg.tag[:80]!r}")
        return
    admitted, first_drop = intake.admit(msg.id)
    if not admitted:
        master.refusals.count("event_rate", f"{msg.id} over its event rate")
        if first_drop:
            data = {"rate": intake.rate, "burst": intake.burst}
            batch.events.append(EventRecord(f"saline/minion/{msg.id}/rate_limited", data, None, 0))
        return
    problem = intake.data_problem(msg.data)
    if problem is not None:
        master.refusals.count("bad_event", f"{msg.id} event {msg.tag[:80]!r}: {problem}")
        if intake.first_refusal(msg.id):
            refused = {"reason": "bad_event", "tag": msg.tag, "problem": problem}
            batch.events.append(EventRecord(f"saline/minion/{msg.id}/refused", refused, None, 0))
        return
    if intake.duplicate(msg.id, msg.eid):
        return
    batch.events.append(EventRecord(msg.tag, msg.data, msg.id, msg.ts or time.time()))


def on_file_request(master: "Master", peer: Peer, msg: FileRequest, batch: Batch) -> None:
    try:
        served = master.fileserver.get(msg.path)
    except FileServerError as e:
        if not isinstance(e, FileMissing):  # a miss is routine (name.yaml, then name/init)
            master.refusals.count("file_refused", f"{msg.id}: {e}")
        master.reply(peer.route, FileReply(req=msg.req, path=msg.path, error=str(e)))
        return
    data = None if msg.have == served.sha256 else served.data  # unchanged: not re-sent
    if data is not None and not master.file_budget.take(msg.id, cost=len(data))[0]:
        # a minion that asks faster than it could read: its replies would pile up unread
        master.refusals.count("file_rate", f"{msg.id}: {msg.path[:80]}")
        error = "file server: too many bytes asked for too fast; retry shortly"
        master.reply(peer.route, FileReply(req=msg.req, path=msg.path, error=error))
        return
    master.reply(
        peer.route, FileReply(req=msg.req, path=served.path, sha256=served.sha256, data=data)
    )


def on_pillar_request(master: "Master", peer: Peer, msg: PillarRequest, batch: Batch) -> None:
    # msg.id equals the key's bound id (policy MINION): a minion only gets its own pillar,
    # compiled on trusted grains only (what it claims never unlocks a secret)
    trusted = master.trusted.of(msg.id)
    contradiction = master.trusted.contradiction(trusted, master.grains.get(msg.id, {}))
    if contradiction is not None:
        master.refusals.count("grains_contradict", f"{msg.id}: {contradiction}")
        error = f"no pillar: claimed grains contradict the trusted ones ({contradiction})"
        master.reply(peer.route, PillarReply(req=msg.req, error=error))
        return
    try:
        pillar, secrets = master.pillar.compile(msg.id, trusted)
    except SalineError as e:
        master.reply(peer.route, PillarReply(req=msg.req, error=str(e)))
        return
    master.reply(peer.route, PillarReply(req=msg.req, pillar=pillar, secrets=sorted(secrets)))


def on_bye(master: "Master", peer: Peer, msg: Bye, batch: Batch) -> None:
    if master.presence.drop(msg.id):
        log.info("minion %s disconnected (shutdown)", msg.id)
        master.bus.publish(f"saline/minion/{msg.id}/lost", {"reason": "shutdown"}, msg.id)


Handler = Callable[["Master", Peer, Any, Batch], None]

HANDLERS: dict[str, tuple[Policy, Handler]] = {
    "hello": (Policy.ANY_KEY, on_hello),
    "heartbeat": (Policy.MINION, on_heartbeat),
    "return": (Policy.MINION, on_return),
    "event": (Policy.MINION, on_event),
    "file_request": (Policy.MINION, on_file_request),
    "pillar_request": (Policy.MINION, on_pillar_request),
    "bye": (Policy.MINION, on_bye),
}


def refusal(policy: Policy, peer: Peer, claimed_id: str) -> str | None:
    """Why ``peer`` may not send a message under ``policy`` claiming ``claimed_id``; None if ok."""
    if policy is Policy.ANY_KEY:
        return None
    if peer.accepted_id is None:
        return "not_accepted"
    if peer.accepted_id != claimed_id:
        return "id_mismatch"
    return None
