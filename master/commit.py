"""The end of one pass over the minion socket: persist, publish, account, acknowledge.

In that order: a crash before the acknowledgement makes the minions resend, and the
store's (jid, minion) and event-id keys make a resend harmless.
"""

import logging
import time
from collections.abc import Callable

from master.bus import EventBus
from master.drift import bounded, drift_of
from master.handlers import Batch
from master.intake import EventIntake
from master.jobs import JobManager
from master.metrics import MasterMetrics
from master.minion_socket import MinionSocket
from master.stats import Refusals
from master.store.base import EventRecord, ReturnRecord, Store
from saline.protocol import Ack

log = logging.getLogger(__name__)


class Committer:
    def __init__(
        self,
        store: Store,
        bus: EventBus,
        jobs: JobManager,
        intake: EventIntake,
        socket: MinionSocket,
        refusals: Refusals,
        max_event_bytes: int,
        metrics: MasterMetrics | None = None,
    ) -> None:
        self.store = store
        #: returns and events received (a registry of its own unless given)
        self.metrics = metrics if metrics is not None else MasterMetrics()
        self.bus = bus
        self.jobs = jobs
        self.intake = intake
        self.socket = socket
        self.refusals = refusals
        self.max_event_bytes = max_event_bytes
        #: takes the fresh returns of each stored batch (the returners' pump), if set
        self.on_returns: Callable[[list[ReturnRecord]], None] | None = None

    def commit(self, batch: Batch) -> None:
        """Store and announce the batch, then acknowledge it. Never raises: what could not
        be stored is not acknowledged, and the minions send it again."""
        if not batch.returns and not batch.event_acks:
            return
        try:
            self._commit(batch)
        except Exception:
            self.refusals.count("store_error")
            log.exception("could not store a batch of %d returns", len(batch.returns))

    def _commit(self, batch: Batch) -> None:
        self.bus.publish_records(batch.events)
        records = [r for _, r in batch.returns]
        new = self.store.save_returns(records)
        self.metrics.returns_received.inc(len(records))
        self.metrics.events_received.inc(len(batch.events))
        fresh = [r for r, is_new in zip(records, new, strict=True) if is_new]
        if self.on_returns is not None:
            self.on_returns(fresh)
        now = time.time()
        outgoing = []
        for record in fresh:
            chain = self.jobs.chain_of(record.jid)
            data = {"fun": record.fun, "success": record.success, "retcode": record.retcode}
            tag = f"saline/job/{record.jid}/ret/{record.minion}"
            outgoing.append(EventRecord.caused(tag, data, chain, record.minion, now))
        for record in fresh:
            self.jobs.returned(record)
            drift = drift_of(record)
            if drift is None:
                continue
            if not self.intake.admit(record.minion)[0]:  # derived: the minion's own rate
                self.refusals.count("event_rate", f"{record.minion} drift over its rate")
                continue
            drift = bounded(drift, self.max_event_bytes)
            tag = f"saline/state/{record.minion}/drift"
            chain = self.jobs.chain_of(record.jid)
            outgoing.append(EventRecord.caused(tag, drift, chain, record.minion, now))
        self.bus.publish_records(outgoing)
        acks: dict[bytes, Ack] = {}
        for route, record in batch.returns:
            acks.setdefault(route, Ack()).jids.append(record.jid)
        for route, eid in batch.event_acks:
            acks.setdefault(route, Ack()).events.append(eid)
        for route, ack in acks.items():
            self.socket.reply(route, ack)
