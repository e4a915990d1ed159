"""The minion agent: one CurveZMQ link to the master, jobs forked under timeouts, a spool.

Session walk: connect → (handshake) → hello → welcome → heartbeats; jobs arrive, run in
forked children, their returns are spooled, sent, and resent until acknowledged. A
``pending`` answer makes the minion say hello again every ``acceptance_wait`` seconds; a
``rehello`` (the master restarted) makes it say hello at once.
"""

import asyncio
import contextlib
import itertools
import logging
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio
from pydantic import BaseModel
from zmq.utils.monitor import parse_monitor_message

import saline
from minion.beacons.base import BeaconContext
from minion.beacons.runner import BeaconRunner
from minion.channel import ChannelError
from minion.config import MinionConfig, load_minion_config
from minion.executor import execute
from minion.grains import collect_grains, minion_id
from minion.masterkey import master_public_key
from minion.modules import declared_timeouts, registry
from minion.modules.base import Context
from minion.modules.state import preload as preload_states
from minion.plugins import load_beacons, load_modules
from minion.services.select import select_provider
from minion.spool import Spool, event_spool, return_spool
from saline.codec import decode_from_master, encode
from saline.daemon import run_service
from saline.errors import ProtocolError
from saline.keys import fingerprint, load_or_create_keypair
from saline.protocol import (
    Ack,
    Bye,
    Event,
    FileReply,
    FileRequest,
    Heartbeat,
    Hello,
    Job,
    MasterMessage,
    Pending,
    PillarReply,
    PillarRequest,
    Refused,
    Rehello,
    Return,
    Welcome,
)
from saline.supervisor import Supervisor
from saline.transport import connect_dealer, tcp_address

if TYPE_CHECKING:
    from minion.metrics import MinionMetrics

log = logging.getLogger(__name__)


#: seconds a job waits for the master to answer a file or pillar request
RELAY_TIMEOUT = 30.0


class LinkState(StrEnum):
    CONNECTING = "connecting"
    PENDING = "pending"
    REFUSED = "refused"
    READY = "ready"


class Minion:
    name = "minion"

    def __init__(
        self,
        config: MinionConfig,
        config_path: Path | None = None,
        log_level_fixed: bool = False,
    ) -> None:
        self.config = config
        #: where SIGHUP reloads from; the log level given on the command line stays
        self.config_path = config_path
        self.log_level_fixed = log_level_fixed
        self.id = minion_id(config)
        self.master_pub = master_public_key(config)
        self.keypair = load_or_create_keypair(config.pki_dir, "minion")
        self.grains = collect_grains(config, self.id)
        services = select_provider(config)
        self.ctx = Context(
            minion_id=self.id,
            config=config,
            grains=self.grains,
            services=services,
            functions=registry(load_modules()),  # plugins too; a broken one stops the start
        )
        self.spool = return_spool(config.cachedir / "spool", config.max_frame_bytes)
        self.events = event_spool(config.cachedir / "spool" / "events", config.max_frame_bytes)
        self.metrics: MinionMetrics | None = None
        if config.metrics_listen is not None:  # only then: prometheus_client is not light
            from minion import metrics

            spools: dict[str, Spool[Any]] = {"returns": self.spool, "events": self.events}
            self.metrics = metrics.MinionMetrics(config.metrics_listen, spools)
        beacon_ctx = BeaconContext(self.id, services, functions=self.ctx.functions)
        self.beacons = BeaconRunner(
            config.beacons,
            beacon_ctx,
            self.emit_beacon,
            load_beacons(),
            on_checked=None if self.metrics is None else self.metrics.beacon_checked,
        )
        self._event_ids = itertools.count()
        self.state = LinkState.CONNECTING
        self.sock: zmq.asyncio.Socket | None = None
        self._sent_at: dict[str, float] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        self._requests: dict[int, asyncio.Future[FileReply | PillarReply]] = {}
        self._request_ids = itertools.count()
        self._ctx: zmq.asyncio.Context | None = None
        self._monitor: zmq.asyncio.Socket | None = None

    def send(self, message: BaseModel) -> None:
        assert self.sock is not None
        try:
            self.sock.send(encode(message), flags=zmq.NOBLOCK)
        except zmq.Again:
            log.debug("send queue full; %s will be retried", message.__class__.__name__)

    def hello(self) -> None:
        self.send(
            Hello(
                id=self.id,
                grains=self.grains,
                version=saline.__version__,
                functions=sorted(self.ctx.functions),
                timeouts=declared_timeouts(self.ctx.functions, self.config.max_function_timeout),
                max_function_timeout=self.config.max_function_timeout,
            )
        )

    # -- returns -----------------------------------------------------------------------

    def _bounded(self, ret: Return) -> Return:
        """A return too large for one frame becomes an error saying so (the job still ends)."""
        if len(encode(ret)) <= self.config.max_frame_bytes:
            return ret
        return ret.model_copy(
            update={
                "success": False,
                "retcode": 1,
                "ret": {"error": "return_too_large", "message": "return exceeds max_frame_bytes"},
            }
        )

    def _send_return(self, ret: Return) -> None:
        self._sent_at[ret.jid] = time.monotonic()
        self.send(ret)

    def flush_spool(self, older_than: float = 0.0) -> None:
        """(Re)send spooled returns and events not acknowledged for ``older_than`` seconds."""
        now = time.monotonic()
        for ret in self.spool.pending():
            if now - self._sent_at.get(ret.jid, 0.0) >= older_than:
                self._send_return(ret)
        for event in self.events.pending():
            if now - self._sent_at.get(event.eid, 0.0) >= older_than:
                self._sent_at[event.eid] = now
                self.send(event)

    def emit_beacon(self, suffix: str, data: dict[str, Any]) -> None:
        self.fire_event(f"saline/beacon/{self.id}/{suffix}", data)

    def fire_event(self, tag: str, data: dict[str, Any]) -> None:
        """Spool an event and send it now if the master is there (else on reconnect)."""
        eid = f"{time.time_ns():020d}-{next(self._event_ids)}"  # sorts by time
        event = Event(id=self.id, eid=eid, tag=tag, data=data, ts=time.time())
        self.events.put(event)
        if self.state is LinkState.READY:
            self._sent_at[eid] = time.monotonic()
            self.send(event)

    async def run_job(self, job: Job) -> None:
        # the executor applies the time limit: the job's, else the function's, capped
        ret = self._bounded(await execute(self.ctx, job, self.id, relay=self.relay))
        self.spool.put(ret)  # before sending: an ack can only follow a spooled return
        self._send_return(ret)
        if self.metrics is not None:
            self.metrics.job_done(job.fun, ret.duration_ms)

    async def relay(self, request: dict[str, Any]) -> dict[str, Any]:
        """A job's request for a file or its pillar, asked of the master on its behalf."""
        req = next(self._request_ids)
        message: FileRequest | PillarRequest
        if request.get("op") == "file":
            have = request.get("have")
            message = FileRequest(
                id=self.id, req=req, path=str(request.get("path")), have=have and str(have)
            )
        elif request.get("op") == "pillar":
            message = PillarRequest(id=self.id, req=req)
        else:
            raise ChannelError(f"unknown request {str(request.get('op'))[:32]!r}")
        if self.state is not LinkState.READY:
            raise ChannelError("not connected to the master")
        future: asyncio.Future[FileReply | PillarReply] = asyncio.get_running_loop().create_future()
        self._requests[req] = future
        self.send(message)
        try:
            reply = await asyncio.wait_for(future, RELAY_TIMEOUT)
        except TimeoutError as e:
            raise ChannelError(f"the master did not answer a {message.kind} in time") from e
        finally:
            self._requests.pop(req, None)
        return reply.model_dump(exclude={"v", "kind", "req"})

    # -- inbound -----------------------------------------------------------------------

    def on_message(self, data: bytes) -> None:
        try:
            msg = decode_from_master(data, self.config.max_frame_bytes)
        except ProtocolError as e:
            log.warning("ignored a frame from the master: %s", e)
            return
        try:
            self._dispatch(msg)
        except Exception:  # one bad message must never stop the minion
            log.exception("error handling a %s from the master", msg.kind)

    def _dispatch(self, msg: MasterMessage) -> None:
        match msg:
            case Job():
                log.info("job %s: %s", msg.jid, msg.fun)
                if msg.fun.startswith("state."):
                    try:  # once: later state jobs fork with the engine already loaded
                        preload_states()
                    except Exception:  # the job's child reports the import error itself
                        log.exception("could not preload the state engine")
                task = asyncio.create_task(self.run_job(msg))
                self._jobs.add(task)
                task.add_done_callback(self._jobs.discard)
            case FileReply() | PillarReply():
                future = self._requests.get(msg.req)
                if future is not None and not future.done():
                    future.set_result(msg)
            case Ack():
                for jid in msg.jids:
                    self.spool.remove(jid)
                    self._sent_at.pop(jid, None)
                for eid in msg.events:
                    self.events.remove(eid)
                    self._sent_at.pop(eid, None)
            case Rehello():
                self.hello()
            case Pending():
                if self.state is not LinkState.PENDING:
                    log.warning("key pending on the master: %s", msg.reason)
                self.state = LinkState.PENDING
            case Refused():
                log.error("the master refused us: %s", msg.reason)
                self.state = LinkState.REFUSED
            case Welcome():
                if self.state is not LinkState.READY:
                    log.info("accepted by the master as %s", self.id)
                self.state = LinkState.READY
                self.flush_spool()

    async def _receive_loop(self) -> None:
        assert self.sock is not None
        while True:
            self.on_message(await self.sock.recv())

    async def _timer_loop(self) -> None:
        """Heartbeats when ready; hellos while not; resends of unacknowledged returns."""
        cfg = self.config
        tick = min(cfg.heartbeat_interval, cfg.acceptance_wait, 1.0)
        last_beat = last_hello = last_flush = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if self.state is LinkState.READY:
                if now - last_beat >= cfg.heartbeat_interval:
                    self.send(Heartbeat(id=self.id))
                    last_beat = now
                if now - last_flush >= cfg.return_retry:  # the spool is on disk: read it rarely
                    self.flush_spool(older_than=cfg.return_retry)
                    last_flush = now
            elif now - last_hello >= cfg.acceptance_wait:
                self.hello()
                last_hello = now

    async def _monitor_loop(self, monitor: zmq.asyncio.Socket) -> None:
        """Every successful handshake (first connect, master restart) starts a session."""
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                if self.metrics is not None:
                    self.metrics.handshake()
                self.state = LinkState.CONNECTING
                self.hello()
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.state = LinkState.CONNECTING

    async def start(self, supervisor: Supervisor) -> None:
        self._ctx = zmq.asyncio.Context()
        address = tcp_address(self.config.master, self.config.master_port)
        self.sock = connect_dealer(
            self._ctx, self.keypair, self.master_pub, address, self.config.max_frame_bytes
        )
        monitor = self._monitor = self.sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
        )
        supervisor.start("receive", self._receive_loop)
        supervisor.start("timer", self._timer_loop)
        supervisor.start("monitor", lambda: self._monitor_loop(monitor))
        supervisor.start("beacons", self.beacons.run)
        if self.metrics is not None:
            self.metrics.start()  # a taken address stops the start
            log.info("metrics at http://%s/metrics", self.config.metrics_listen)
        log.info(
            "minion %s connecting to %s (key %s)",
            self.id,
            address,
            fingerprint(self.keypair.public),
        )

    def reload(self) -> list[str]:
        """SIGHUP: the log level (the rest of the config needs a restart, and says so)."""
        if self.config_path is None:
            return ["no config file to reload from"]
        new, _ = load_minion_config(str(self.config_path))  # a bad file: nothing changes
        said = []
        if self.log_level_fixed:
            said.append("log level kept (given on the command line)")
        else:
            logging.getLogger().setLevel(new.log_level.upper())
            said.append(f"log level {new.log_level}")
        old_rest = self.config.model_dump(exclude={"log_level"})
        changed = sorted(
            k for k, v in new.model_dump(exclude={"log_level"}).items() if old_rest[k] != v
        )
        if changed:
            said.append(f"a restart is needed for: {', '.join(changed)}")
        return said

    async def stop(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
        if self.sock is None:
            return
        if self.state is LinkState.READY:
            self.send(Bye(id=self.id))
            # give the bye a moment on the wire; LINGER 0 would drop it
            with contextlib.suppress(zmq.ZMQError):
                self.sock.setsockopt(zmq.LINGER, 500)
        for task in self._jobs:
            task.cancel()
        with contextlib.suppress(zmq.ZMQError):
            self.sock.disable_monitor()
        if self._monitor is not None:
            self._monitor.close()
        self.sock.close()
        if self._ctx is not None:
            self._ctx.term()


def run_minion(
    config: MinionConfig, config_path: Path | None = None, log_level_fixed: bool = False
) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads what can change live from ``config_path``.

    :raises SalineError: on a fatal set-up problem (keys...).
    """
    minion = Minion(config, config_path, log_level_fixed)
    asyncio.run(run_service(minion))
