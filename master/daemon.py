"""The master daemon: wiring of key ring, store, bus, presence, jobs, sockets and signals."""

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any

import zmq
import zmq.asyncio
from pydantic import BaseModel

import saline
from master.admission import KeyAdmission
from master.bus import EventBus
from master.clientapi import ClientApi
from master.config import MasterConfig
from master.drift import bounded, drift_of
from master.fileserver import FileServer
from master.functions import FunctionIndex
from master.handlers import HANDLERS, Batch, Peer, refusal
from master.intake import EventIntake
from master.jobs import JobManager
from master.pillar import PillarCompiler
from master.presence import Presence
from master.ratelimit import RateLimiter
from master.reactor import Reactor
from master.scheduler import Enforcer
from master.stats import Refusals
from master.store.base import EventRecord
from master.store.sqlite import SqliteStore
from master.supervisor import Supervisor
from master.trust import TrustedGrains
from master.zap import ZapHandler
from saline.codec import decode_from_minion, encode
from saline.errors import ProtocolError
from saline.keys import KeyRing, KeyState, ensure_dir, fingerprint, load_or_create_keypair
from saline.protocol import Ack, Refused
from saline.transport import bind_router, tcp_address

log = logging.getLogger(__name__)

#: most frames handled (and returns committed) per pass over the socket
_BATCH = 2000
#: ... and at most about this many bytes of them
_BATCH_BYTES = 64 * 1024 * 1024
#: the largest frame a key that is not accepted may send (a hello with its grains)
MAX_HELLO_BYTES = 256 * 1024
_POLLIN = int(zmq.POLLIN)  # a plain int: IntFlag arithmetic shows in profiles
_HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


class Master:
    def __init__(self, config: MasterConfig) -> None:
        self.config = config
        self.version = saline.__version__
        ensure_dir(config.pki_dir)
        self.keypair = load_or_create_keypair(config.pki_dir, "master")
        self.keys = KeyRing(config.pki_dir)
        self.refusals = Refusals()
        self.admission = KeyAdmission(
            config.new_key_rate,
            config.new_key_burst,
            config.new_key_rate_per_address,
            config.new_key_burst_per_address,
        )
        self.store = SqliteStore(config.store_path)
        self.bus = EventBus(self.store)
        self.presence = Presence(config.presence_timeout)
        self.grains: dict[str, dict[str, Any]] = {
            m.id: m.grains for m in self.store.minions().values()
        }
        #: the execution functions the minions' hellos listed
        self.functions = FunctionIndex()
        self.fileserver = FileServer(config.file_roots)
        #: bytes of file replies per minion: a burst of 4 frames, then one frame a second
        self.file_budget = RateLimiter(config.max_frame_bytes, 4 * config.max_frame_bytes)
        self.pillar = PillarCompiler(config.pillar_roots, config.nodegroups)
        self.trusted = TrustedGrains(config.minion_grains, self.keys)
        self.intake = EventIntake(
            config.minion_event_tags,
            config.minion_event_rate,
            config.minion_event_burst,
            config.max_event_bytes,
        )
        self.jobs = JobManager(
            self.store, self.bus, self.presence, self.send_job, config.max_concurrent_jobs
        )
        self.reactor = Reactor(self)  # a bad rule file stops the start, naming file and line
        self.router: zmq.asyncio.Socket | None = None
        #: the same socket without pyzmq's asyncio layer (5x cheaper per message); every
        #: send and receive goes through it, followed by a readiness check (see _readable)
        self.sock: zmq.Socket[bytes] | None = None
        self._readable = asyncio.Event()
        self.stopping = asyncio.Event()
        self.supervisor = Supervisor()

    # -- outbound ----------------------------------------------------------------------

    def reply(self, route: bytes, message: BaseModel) -> bool:
        """Send to one connection; False when it is gone (ROUTER_MANDATORY) or backed up."""
        return self.send_frame(route, encode(message))

    def send_frame(self, route: bytes, frame: bytes) -> bool:
        assert self.sock is not None
        try:
            self.sock.send_multipart([route, frame], flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            return False
        finally:
            # zmq's FD is edge-triggered and a send may consume the edge: wake the receive
            # loop so it looks at the socket again instead of sleeping on waiting frames
            self._readable.set()
        return True

    def send_job(self, minion_id: str, frame: bytes) -> bool:
        route = self.presence.route(minion_id)
        return route is not None and self.send_frame(route, frame)

    def inventory(self) -> dict[str, dict[str, Any]]:
        """Accepted minions and their last-known grains: what targets match against."""
        return {m: self.grains.get(m, {}) for m in self.keys.ids(KeyState.ACCEPTED)}

    # -- inbound -----------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        assert self.sock is not None
        sock = self.sock
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.FD, self._readable.set)
        while True:
            self._readable.clear()
            if not int(sock.get(zmq.EVENTS)) & _POLLIN:
                await self._readable.wait()
                continue
            frames_batch: list[list[zmq.Frame]] = []
            held = 0  # bytes: 2,000 frames of 16 MiB must not all be held at once
            while len(frames_batch) < _BATCH and held < _BATCH_BYTES:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                frames_batch.append(frames)
                held += sum(len(f) for f in frames)
            batch = Batch()
            for frames in frames_batch:
                try:
                    self._handle(frames, batch)
                except Exception:  # one bad frame must never stop the master
                    self.refusals.count("handler_error")
                    log.exception("error handling a minion frame")
            if batch.returns or batch.event_acks:
                try:
                    self._commit(batch)
                except Exception:  # not acknowledged: the minions resend, nothing is lost
                    self.refusals.count("store_error")
                    log.exception("could not store a batch of %d returns", len(batch.returns))
            await asyncio.sleep(0)  # let clients see returns between batches

    def _handle(self, frames: list[zmq.Frame], batch: Batch) -> None:
        if len(frames) != 2:
            self.refusals.count("malformed", f"{len(frames) - 1} frames in one message")
            return
        route, payload = frames
        public = str(payload.get("User-Id"))
        entry = self.keys.lookup_key(public)
        # a key that is not accepted may only say hello, which is small: a big frame from
        # it is refused before it is parsed (parsing 16 MiB is what such a peer wants)
        cap = self.config.max_frame_bytes
        if entry is None or entry.state is not KeyState.ACCEPTED:
            cap = min(cap, MAX_HELLO_BYTES)
        try:
            if len(payload) > cap:  # before copying the frame out of libzmq
                raise ProtocolError("oversized", f"frame of {len(payload)} bytes exceeds cap {cap}")
            msg = decode_from_minion(payload.bytes, cap)
        except ProtocolError as e:
            self.refusals.count(e.reason, str(e))
            self.reply(route.bytes, Refused(reason=str(e)))
            return
        peer = Peer(route.bytes, public, entry)
        policy, handler = HANDLERS[msg.kind]
        reason = refusal(policy, peer, msg.id)
        if reason is not None:
            self.refusals.count(reason, f"{msg.kind} claiming {msg.id!r}")
            self.reply(route.bytes, Refused(reason=reason))
            return
        handler(self, peer, msg, batch)

    def _commit(self, batch: Batch) -> None:
        """Persist, publish, account, and only then acknowledge (a crash before the ack
        makes the minion resend; the (jid, minion) key makes the resend harmless)."""
        self.bus.publish_records(batch.events)
        records = [r for _, r in batch.returns]
        new = self.store.save_returns(records)
        fresh = [r for r, is_new in zip(records, new, strict=True) if is_new]
        now = time.time()
        chains = self.jobs.chains
        outgoing = [
            EventRecord(
                f"saline/job/{r.jid}/ret/{r.minion}",
                {"fun": r.fun, "success": r.success, "retcode": r.retcode},
                r.minion,
                now,
                None,
                *chains.get(r.jid, (None, 0, None)),
            )
            for r in fresh
        ]
        for record in fresh:
            self.jobs.returned(record)
            drift = drift_of(record)
            if drift is not None:
                if not self.intake.admit(record.minion)[0]:  # derived: the minion's own rate
                    self.refusals.count("event_rate", f"{record.minion} drift over its rate")
                    continue
                drift = bounded(drift, self.config.max_event_bytes)
                chain = chains.get(record.jid, (None, 0, None))
                tag = f"saline/state/{record.minion}/drift"
                outgoing.append(EventRecord(tag, drift, record.minion, now, None, *chain))
        self.bus.publish_records(outgoing)
        acks: dict[bytes, Ack] = {}
        for route, record in batch.returns:
            acks.setdefault(route, Ack()).jids.append(record.jid)
        for route, eid in batch.event_acks:
            acks.setdefault(route, Ack()).events.append(eid)
        for route, ack in acks.items():
            self.reply(route, ack)

    # -- housekeeping ------------------------------------------------------------------

    async def _presence_loop(self) -> None:
        interval = min(self.config.presence_timeout / 4, 1.0)
        while True:
            await asyncio.sleep(interval)
            lost = self.presence.expire()
            for minion_id in lost:
                log.info(
                    "minion %s lost (no heartbeat for %gs)", minion_id, self.config.presence_timeout
                )
            self.bus.publish_many(
                [(f"saline/minion/{m}/lost", {"reason": "heartbeat timeout"}, m) for m in lost]
            )

    async def _monitor_loop(self, monitor: zmq.asyncio.Socket) -> None:
        """Count handshakes that failed: garbage, plain-text peers, wrong server key."""
        while True:
            frames = await monitor.recv_multipart()
            event = int.from_bytes(frames[0][:2], "little")
            # libzmq names the listening endpoint here, not the peer (ZAP refusals name it)
            where = frames[1].decode(errors="replace") if len(frames) > 1 else "?"
            self.refusals.count("handshake_failed", f"zmq event {event:#x} on {where[:80]}")

    # -- life cycle --------------------------------------------------------------------

    async def serve(self) -> None:
        ctx = zmq.asyncio.Context()
        zap = ZapHandler(ctx, self.keys, self.refusals, self.admission)
        address = tcp_address(self.config.interface, self.config.port)
        self.router = bind_router(ctx, self.keypair, address, self.config.max_frame_bytes)
        self.sock = zmq.Socket.shadow(self.router.underlying)
        monitor = self.router.get_monitor_socket(_HANDSHAKE_FAILURES)
        api = ClientApi(self)
        await api.start()
        enforcer = Enforcer(self)
        enforcer.start()
        if self.config.auto_accept:
            log.warning("auto_accept is ON: every new minion key is trusted. Labs only!")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        supervisor = self.supervisor
        supervisor.start("zap", zap.serve)
        supervisor.start("receive", self._receive_loop)
        supervisor.start("presence", self._presence_loop)
        supervisor.start("monitor", lambda: self._monitor_loop(monitor))
        self.reactor.resume()
        supervisor.start("reactor", self.reactor.run)
        log.info(
            "master ready on %s (key %s), client API at %s",
            address,
            fingerprint(self.keypair.public),
            self.config.client_socket,
        )
        try:
            await self.stopping.wait()
        finally:
            enforcer.stop()
            self.reactor.stop()
            await supervisor.stop()
            asyncio.get_running_loop().remove_reader(self.sock.FD)
            await api.stop()
            with contextlib.suppress(zmq.ZMQError):
                self.router.disable_monitor()
            monitor.close()
            self.router.close()
            zap.close()
            ctx.term()
            self.store.close()
            log.info("master stopped")


def run_master(config: MasterConfig) -> None:
    asyncio.run(Master(config).serve())
