"""The master daemon: the composition root. It builds the parts, each given only what it
needs, wires them, and runs their loops under a supervisor; nothing imports it."""

import asyncio
import logging
from pathlib import Path

import zmq
import zmq.asyncio

import saline
from master.admission import KeyAdmission
from master.bus import EventBus
from master.clientapi import ClientApi
from master.commit import Committer
from master.config import MasterConfig, load_master_config
from master.etcd_gateway import EtcdGateway
from master.fileserver import FileServer, FileServerError
from master.functions import FunctionIndex
from master.handlers import Batch, MinionHandlers
from master.intake import EventIntake
from master.inventory import Inventory
from master.jobs import JobManager
from master.keysync import KeySync
from master.leadership import Leader, Leadership, Solo
from master.metrics import MasterMetrics, MetricsServer, StateCollector, StateParts
from master.minion_socket import MinionSocket
from master.notify import Notifier
from master.operations import Operations
from master.pillar import PillarCompiler
from master.presence import Presence
from master.ratelimit import RateLimiter
from master.reactor import Reactor
from master.retention import Keep, Retention
from master.returners.config import ReturnerConfig
from master.returners.pump import Pump, Worker
from master.returners.queue import DiskQueue
from master.returners.registry import build
from master.scheduler import Enforcer
from master.stats import Refusals
from master.store.open import open_store
from master.trust import TrustedGrains
from master.zap import ZapHandler
from reactors.rules import RuleError
from reactors.shipped import SHIPPED_RULES, SHIPPED_RUNBOOKS
from saline.daemon import run_service
from saline.keys import KeyRing, ensure_dir, fingerprint, load_or_create_keypair
from saline.supervisor import Supervisor
from saline.transport import tcp_address
from states.compiler import state_files

log = logging.getLogger(__name__)

#: failed handshakes logged one by one: a burst, then this many a second
HANDSHAKE_LOG_BURST = 20
HANDSHAKE_LOG_RATE = 1.0


class Master:
    name = "master"

    def __init__(
        self,
        config: MasterConfig,
        config_path: Path | None = None,
        log_level_fixed: bool = False,
    ) -> None:
        self.config = config
        #: where SIGHUP reloads from; the log level given on the command line stays
        self.config_path = config_path
        self.log_level_fixed = log_level_fixed
        ensure_dir(config.pki_dir)
        self.keypair = load_or_create_keypair(config.pki_dir, "master")
        self.keys = KeyRing(config.pki_dir)
        self.refusals = Refusals()
        self.store = open_store(config)
        #: the keys mirrored to and from the store (shared by masters on one store)
        self.keysync = KeySync(self.keys, self.store)
        #: with etcd, one of several masters leads (reactor, schedule, runbooks); else this one
        self.leadership: Leadership | None = (
            Leadership(EtcdGateway(config.etcd_endpoints), config.name, config.leader_ttl)
            if config.etcd_endpoints
            else None
        )
        self.leader: Leader = self.leadership or Solo(config.name)
        #: the master's own Prometheus registry; its counters go to the parts that count
        self.metrics = MasterMetrics()
        self.metrics.time_store_writes(self.store)
        self.bus = EventBus(self.store)
        self.presence = Presence(config.presence_timeout)
        self.inventory = Inventory(self.keys, self.presence, self.store)
        self.socket = MinionSocket()
        self.admission = KeyAdmission(
            config.new_key_rate,
            config.new_key_burst,
            config.new_key_rate_per_address,
            config.new_key_burst_per_address,
        )
        self.intake = EventIntake(
            config.minion_event_tags,
            config.minion_event_rate,
            config.minion_event_burst,
            config.max_event_bytes,
        )
        self.functions = FunctionIndex()  # the execution functions the minions' hellos listed
        self.fileserver = FileServer(config.file_roots)
        self.jobs = JobManager(
            self.store,
            self.bus,
            self.inventory,
            self._send_job,
            config.max_concurrent_jobs,
            metrics=self.metrics,
        )
        self.handlers = MinionHandlers(
            version=saline.__version__,
            max_frame_bytes=config.max_frame_bytes,
            auto_accept=config.auto_accept,
            max_pending_keys=config.max_pending_keys,
            socket=self.socket,
            keys=self.keys,
            admission=self.admission,
            inventory=self.inventory,
            functions=self.functions,
            jobs=self.jobs,
            intake=self.intake,
            bus=self.bus,
            fileserver=self.fileserver,
            # bytes of file replies per minion: a burst of 4 frames, then one frame a second
            file_budget=RateLimiter(config.max_frame_bytes, 4 * config.max_frame_bytes),
            pillar=PillarCompiler(config.pillar_roots, config.nodegroups),
            trusted=TrustedGrains(config.minion_grains, self.keys),
            refusals=self.refusals,
        )
        self.committer = Committer(
            self.store,
            self.bus,
            self.jobs,
            self.intake,
            self.socket,
            self.refusals,
            config.max_event_bytes,
            metrics=self.metrics,
        )
        runbook_roots = [*config.runbook_roots, SHIPPED_RUNBOOKS]
        #: escalations and failed reactions told to the notify targets (a bad secret file stops)
        self.notifier = Notifier(
            config.notify, config.notify_on, self.store, self.bus, config.data_dir
        )
        self.reactor = Reactor(  # a bad rule file stops the start, naming file and line
            store=self.store,
            bus=self.bus,
            inventory=self.inventory,
            jobs=self.jobs,
            rule_paths=[SHIPPED_RULES, *config.reactor_dirs],
            runbook_roots=runbook_roots,
            max_depth=config.reactor_max_depth,
            state_exists=self._state_exists,
            ships_states=SHIPPED_RULES,  # its rules name saline's own state tree
            metrics=self.metrics,
            notifier=self.notifier,
            leader=self.leader,
        )
        self.supervisor = Supervisor(daemon="master")
        self.operations = Operations(
            job_timeout=config.job_timeout,
            max_jobs_per_user=config.max_jobs_per_user,
            runbook_roots=runbook_roots,
            jobs=self.jobs,
            inventory=self.inventory,
            functions=self.functions,
            store=self.store,
            bus=self.bus,
            reactor=self.reactor,
            refusals=self.refusals,
            supervisor=self.supervisor,
            notifier=self.notifier,
        )
        self.api = ClientApi(
            config.sock_dir,
            config.client_socket,
            config.client_acl,
            self.operations.table,
            self.refusals,
        )
        self.enforcer = Enforcer(config.schedule, self.jobs, self.leader)
        #: jobs, events and reactions past their keep setting, pruned in small batches
        self.pump = Pump(
            [_worker(c, config.data_dir, self.metrics) for c in config.returners], self.bus
        )
        self.committer.on_returns = self.pump.offer
        self.operations.returners = self.pump.status
        self.retention = Retention(self.store, Keep.of(config), lambda: self.jobs.active)
        self.operations.retention = self.retention.status
        #: gauges read from the parts when scraped
        self.metrics_state = StateCollector(
            StateParts(
                leadership=self.leadership,
                keys=self.keys,
                presence=self.presence,
                refusals=self.refusals,
                reactor_state=lambda: self.reactor.state,
                observations=self.reactor.observations,
                bus=self.bus,
                socket=self.socket,
                notifier=self.notifier,
                retention=self.retention,
            )
        )
        self.metrics.registry.register(self.metrics_state)
        self.metrics_server = (
            None
            if config.metrics_listen is None
            else MetricsServer(config.metrics_listen, self.metrics.registry, self.metrics_state)
        )
        self._ctx: zmq.asyncio.Context | None = None
        self._zap: ZapHandler | None = None

    def _send_job(self, minion_id: str, frame: bytes) -> bool:
        route = self.presence.route(minion_id)
        return route is not None and self.socket.send_frame(route, frame)

    def _state_exists(self, name: str) -> bool:
        for file in state_files(name):
            try:
                self.fileserver.find(file)
            except FileServerError:
                continue
            return True
        return False

    # -- loops -------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        while True:
            frames_batch = await self.socket.receive()
            batch = Batch()
            for frames in frames_batch:
                try:
                    self.handlers.handle(frames, batch)
                except Exception:  # one bad frame must never stop the master
                    self.refusals.count("handler_error")
                    log.exception("error handling a minion frame")
            self.committer.commit(batch)
            await asyncio.sleep(0)  # let clients see returns between batches

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

    async def _monitor_loop(self) -> None:
        """Count and log handshakes that failed (garbage, plain-text peers, a wrong server
        key), each with its peer: one line per failure up to a rate, then one line per
        flood (the counter in ``saline status`` keeps every one)."""
        lines = RateLimiter(HANDSHAKE_LOG_RATE, HANDSHAKE_LOG_BURST)
        while True:
            detail = await self.socket.handshake_failure()
            self.refusals.counts["handshake_failed"] += 1
            logged, flood = lines.take("*")
            if logged:
                log.warning("refused (handshake_failed): %s", detail)
            elif flood:
                log.warning("handshake failures arrive faster than logged: counted only")

    # -- life cycle --------------------------------------------------------------------

    async def start(self, supervisor: Supervisor) -> None:
        config = self.config
        self._ctx = zmq.asyncio.Context()
        log.info("keys at start: %s", self.keysync.sync())  # a store down: retried
        self._zap = ZapHandler(self._ctx, self.keys, self.refusals, self.admission)
        address = tcp_address(config.interface, config.port)
        self.socket.bind(self._ctx, self.keypair, address, config.max_frame_bytes)
        await self.api.start()
        self.enforcer.start()
        if config.auto_accept:
            log.warning("auto_accept is ON: every new minion key is trusted. Labs only!")
        supervisor.start("zap", self._zap.serve)
        supervisor.start("receive", self._receive_loop)
        supervisor.start("presence", self._presence_loop)
        supervisor.start("monitor", self._monitor_loop)
        if self.leadership is None:
            self.reactor.resume()  # with several masters, the leader does when it takes over
        else:
            supervisor.start("leadership", self.leadership.run)
        supervisor.start("reactor", self.reactor.run)
        supervisor.start("retention", self.retention.run)
        supervisor.start("keysync", self.keysync.run)
        if config.notify:
            supervisor.start("notify", self.notifier.run)
        if self.pump.workers:
            supervisor.start("returners", self.pump.run)
        if self.metrics_server is not None:
            self.metrics_server.start()  # a taken address stops the start
            log.info("metrics at http://%s/metrics", config.metrics_listen)
        log.info(
            "master ready on %s (key %s), client API at %s",
            address,
            fingerprint(self.keypair.public),
            config.client_socket,
        )

    def reload(self) -> list[str]:
        """SIGHUP: rules and runbooks, the schedule, client_acl and the log level."""
        if self.config_path is None:
            return ["no config file to reload from"]
        new, _ = load_master_config(str(self.config_path))  # a bad file: nothing changes
        said = []
        runbook_roots = [*new.runbook_roots, SHIPPED_RUNBOOKS]
        try:
            said.append(self.reactor.reload([SHIPPED_RULES, *new.reactor_dirs], runbook_roots))
            self.operations.runbook_roots = runbook_roots
        except RuleError as e:
            said.append(str(e))
        said.append(self.enforcer.replace(new.schedule))
        said.append(self.api.set_acl(new.client_acl))
        if self.log_level_fixed:
            said.append("log level kept (given on the command line)")
        else:
            logging.getLogger().setLevel(new.log_level.upper())
            said.append(f"log level {new.log_level}")
        live = {"reactor_dirs", "runbook_roots", "schedule", "client_acl", "log_level"}
        old_rest = self.config.model_dump(exclude=live)
        changed = sorted(k for k, v in new.model_dump(exclude=live).items() if old_rest[k] != v)
        if changed:
            said.append(f"a restart is needed for: {', '.join(changed)}")
        return said

    async def stop(self) -> None:
        self.enforcer.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.reactor.stop()
        await asyncio.to_thread(self.pump.close)
        await self.api.stop()
        self.socket.close()
        if self._zap is not None:
            self._zap.close()
        if self._ctx is not None:
            self._ctx.term()
        self.store.close()


def _worker(config: ReturnerConfig, data_dir: Path, metrics: MasterMetrics) -> Worker:
    """One configured returner with its queue file (a bad setting stops the start)."""
    disk = DiskQueue(Pump.queue_path(data_dir, config.name), config.queue_max)
    return Worker(build(config), disk, frozenset(config.what), config.batch, metrics)


def run_master(
    config: MasterConfig, config_path: Path | None = None, log_level_fixed: bool = False
) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads what can change live from ``config_path``."""
    master = Master(config, config_path, log_level_fixed)
    asyncio.run(run_service(master, master.supervisor))
