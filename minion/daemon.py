"""The minion agent: a CurveZMQ link to each master, jobs forked under timeouts, a spool.

Session walk, on each link: connect → (handshake) → hello → welcome → heartbeats. A
``pending`` answer makes the minion say hello again every ``acceptance_wait`` seconds; a
``rehello`` (the master restarted) makes it say hello at once. Jobs arrive on any link
and run once (by jid) in forked children; their returns are spooled, sent to a ready link
(the job's own if it is ready, see :func:`minion.links.choose`), and resent until some
master acknowledges them. Events go the same way, to the first ready master in config
order; while no link is ready everything waits in the spool.
"""

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

import saline
from minion.beacons.base import BeaconContext
from minion.beacons.runner import BeaconRunner
from minion.channel import ChannelError
from minion.config import MinionConfig, load_minion_config
from minion.executor import execute
from minion.grains import collect_grains, minion_id
from minion.links import LinkState, MasterLink, SeenJobs, choose
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

if TYPE_CHECKING:
    from minion.metrics import MinionMetrics

log = logging.getLogger(__name__)


#: seconds a job waits for the master to answer a file or pillar request
RELAY_TIMEOUT = 30.0


__all__ = ["LinkState", "Minion", "run_minion"]


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
        #: one link per master, in config order (the first is the preferred master)
        self.links = [MasterLink(i, host, port) for i, (host, port) in enumerate(config.masters)]
        #: jobs already run (or running): a jid sent again, by any master, runs once
        self.seen_jobs = SeenJobs()
        self._sent_at: dict[str, float] = {}
        #: the link each job came from, until its return is acknowledged
        self._origin: dict[str, MasterLink] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        self._requests: dict[int, asyncio.Future[FileReply | PillarReply]] = {}
        self._request_ids = itertools.count()
        self._ctx: zmq.asyncio.Context | None = None

    @property
    def ready_links(self) -> list[MasterLink]:
        return [link for link in self.links if link.ready]

    def _choose(self, origin: MasterLink | None = None) -> MasterLink | None:
        """The ready link a return (from ``origin``'s job) or an event goes to, if any."""
        states = [link.state for link in self.links]
        index = choose(states, None if origin is None else origin.index)
        return None if index is None else self.links[index]

    def hello(self, link: MasterLink) -> None:
        link.last_hello = time.monotonic()
        link.send(
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

    def _send_return(self, ret: Return, only: MasterLink | None = None) -> None:
        """Send ``ret`` to its chosen link (if that is ``only``, when given); none ready:
        it waits in the spool for the next link to become ready."""
        link = self._choose(self._origin.get(ret.jid))
        if link is not None and (only is None or link is only):
            self._sent_at[ret.jid] = time.monotonic()
            link.send(ret)

    def _send_event(self, event: Event, only: MasterLink | None = None) -> None:
        link = self._choose()
        if link is not None and (only is None or link is only):
            self._sent_at[event.eid] = time.monotonic()
            link.send(event)

    def flush_spool(self, older_than: float = 0.0, only: MasterLink | None = None) -> None:
        """(Re)send spooled returns and events not acknowledged for ``older_than`` seconds,
        each to its chosen ready link; with ``only``, just those whose choice is that link
        (the one just welcomed: the others' messages are on their way already)."""
        if not self.ready_links:
            return  # the spool is on disk: not read while nothing could be sent
        now = time.monotonic()
        for ret in self.spool.pending():
            if now - self._sent_at.get(ret.jid, 0.0) >= older_than:
                self._send_return(ret, only)
        for event in self.events.pending():
            if now - self._sent_at.get(event.eid, 0.0) >= older_than:
                self._send_event(event, only)

    def emit_beacon(self, suffix: str, data: dict[str, Any]) -> None:
        self.fire_event(f"saline/beacon/{self.id}/{suffix}", data)

    def fire_event(self, tag: str, data: dict[str, Any]) -> None:
        """Spool an event and send it now to the preferred ready master (else when one is)."""
        eid = f"{time.time_ns():020d}-{next(self._event_ids)}"  # sorts by time
        event = Event(id=self.id, eid=eid, tag=tag, data=data, ts=time.time())
        self.events.put(event)
        self._send_event(event)

    async def run_job(self, job: Job, origin: MasterLink | None = None) -> None:
        """Run ``job`` (from ``origin``'s master), spool its return and send it."""
        if origin is not None:
            self._origin[job.jid] = origin
        relay: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] = self.relay
        if origin is not None:

            async def relay(request: dict[str, Any]) -> dict[str, Any]:
                return await self.relay(request, origin)

        # the executor applies the time limit: the job's, else the function's, capped
        ret = self._bounded(await execute(self.ctx, job, self.id, relay=relay))
        self.spool.put(ret)  # before sending: an ack can only follow a spooled return
        self._send_return(ret)
        if self.metrics is not None:
            self.metrics.job_done(job.fun, ret.duration_ms)

    async def relay(
        self, request: dict[str, Any], origin: MasterLink | None = None
    ) -> dict[str, Any]:
        """A job's request for a file or its pillar, asked on its behalf of the master the
        job came from (``origin``), or of another ready one when that one is not ready."""
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
        link = self._choose(origin)
        if link is None:
            raise ChannelError("not connected to any master")
        future: asyncio.Future[FileReply | PillarReply] = asyncio.get_running_loop().create_future()
        self._requests[req] = future
        link.send(message)
        try:
            reply = await asyncio.wait_for(future, RELAY_TIMEOUT)
        except TimeoutError as e:
            raise ChannelError(
                f"the master at {link.address} did not answer a {message.kind} in time"
            ) from e
        finally:
            self._requests.pop(req, None)
        return reply.model_dump(exclude={"v", "kind", "req"})

    # -- inbound -----------------------------------------------------------------------

    def on_message(self, link: MasterLink, data: bytes) -> None:
        try:
            msg = decode_from_master(data, self.config.max_frame_bytes)
        except ProtocolError as e:
            log.warning("ignored a frame from the master at %s: %s", link.address, e)
            return
        try:
            self._dispatch(link, msg)
        except Exception:  # one bad message must never stop the minion
            log.exception("error handling a %s from the master at %s", msg.kind, link.address)

    def _dispatch(self, link: MasterLink, msg: MasterMessage) -> None:
        match msg:
            case Job():
                self._start_job(link, msg)
            case FileReply() | PillarReply():
                future = self._requests.get(msg.req)
                if future is not None and not future.done():
                    future.set_result(msg)
            case Ack():  # from any master: they share the store
                for jid in msg.jids:
                    self.spool.remove(jid)
                    self._sent_at.pop(jid, None)
                    self._origin.pop(jid, None)
                for eid in msg.events:
                    self.events.remove(eid)
                    self._sent_at.pop(eid, None)
            case Rehello():
                self.hello(link)
            case Pending():
                if link.state is not LinkState.PENDING:
                    self._lost(link)
                    log.warning("master %s: key pending: %s", link.address, msg.reason)
                link.state = LinkState.PENDING
            case Refused():
                self._lost(link)
                log.error("master %s refused us: %s", link.address, msg.reason)
                link.state = LinkState.REFUSED
            case Welcome():
                if link.state is not LinkState.READY:
                    link.state = LinkState.READY
                    log.info(
                        "master %s: link ready, accepted as %s (%s)",
                        link.address,
                        self.id,
                        self._ready_count(),
                    )
                self.flush_spool(only=link)

    def _start_job(self, link: MasterLink, job: Job) -> None:
        if not self.seen_jobs.first_time(job.jid):
            log.info(
                "job %s from %s: already seen (sent by another master, or again): not run",
                job.jid,
                link.address,
            )
            return
        log.info("job %s from %s: %s", job.jid, link.address, job.fun)
        if job.fun.startswith("state."):
            try:  # once: later state jobs fork with the engine already loaded
                preload_states()
            except Exception:  # the job's child reports the import error itself
                log.exception("could not preload the state engine")
        task = asyncio.create_task(self.run_job(job, link))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    def _ready_count(self) -> str:
        return f"{len(self.ready_links)} of {len(self.links)} masters ready"

    def _lost(self, link: MasterLink) -> None:
        """``link`` leaves READY: say so, and hand what was sent its way to another link."""
        if link.state is not LinkState.READY:
            return
        link.state = LinkState.CONNECTING
        log.warning("master %s: link lost (%s)", link.address, self._ready_count())
        # what it was sent and did not acknowledge goes to the next ready master at once
        # (a resend the lost one did store is harmless: masters deduplicate)
        self.flush_spool()

    async def _receive_loop(self, link: MasterLink) -> None:
        assert link.sock is not None
        while True:
            self.on_message(link, await link.sock.recv())

    async def _timer_loop(self) -> None:
        """Per link: heartbeats when ready, hellos while not; resends of what no master
        acknowledged."""
        cfg = self.config
        tick = min(cfg.heartbeat_interval, cfg.acceptance_wait, 1.0)
        last_flush = time.monotonic()
        for link in self.links:
            link.last_beat = link.last_hello = last_flush
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for link in self.links:
                if link.ready:
                    if now - link.last_beat >= cfg.heartbeat_interval:
                        link.send(Heartbeat(id=self.id))
                        link.last_beat = now
                elif now - link.last_hello >= cfg.acceptance_wait:
                    self.hello(link)
            if now - last_flush >= cfg.return_retry:  # the spool is on disk: read it rarely
                self.flush_spool(older_than=cfg.return_retry)
                last_flush = now

    async def _monitor_loop(self, link: MasterLink) -> None:
        """Every successful handshake (first connect, master restart) starts a session."""
        assert link.monitor is not None
        while True:
            event = parse_monitor_message(await link.monitor.recv_multipart())
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                if self.metrics is not None:
                    self.metrics.handshake()
                self._lost(link)
                link.state = LinkState.CONNECTING
                self.hello(link)
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._lost(link)
                link.state = LinkState.CONNECTING

    async def start(self, supervisor: Supervisor) -> None:
        self._ctx = zmq.asyncio.Context()
        for link in self.links:
            link.open(self._ctx, self.keypair, self.master_pub, self.config.max_frame_bytes)
        for link in self.links:
            supervisor.start(f"receive {link.address}", partial(self._receive_loop, link))
            supervisor.start(f"monitor {link.address}", partial(self._monitor_loop, link))
        supervisor.start("timer", self._timer_loop)
        supervisor.start("beacons", self.beacons.run)
        if self.metrics is not None:
            self.metrics.start()  # a taken address stops the start
            log.info("metrics at http://%s/metrics", self.config.metrics_listen)
        log.info(
            "minion %s connecting to %s (key %s)",
            self.id,
            ", ".join(link.address for link in self.links),
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
        for task in self._jobs:
            task.cancel()
        for link in self.links:
            if link.ready:
                link.send(Bye(id=self.id))
                # give the bye a moment on the wire; LINGER 0 would drop it
                link.close(linger_ms=500)
            else:
                link.close()
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
