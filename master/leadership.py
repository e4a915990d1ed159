"""Leadership among masters: a lease in etcd, held by one master at a time.

A master campaigns by granting itself a lease of ``ttl`` seconds and creating the leader key
bound to it, only if the key does not exist (one etcd transaction). The winner's **epoch** is
the key's create revision: it grows with every new leader, so the store can refuse the
writes of an older one (fencing). The leader refreshes its lease every ``ttl / 3``; it
believes it leads only until ``2/3 ttl`` after the start of the last refresh etcd
confirmed, on its own monotonic clock — so a leader that was paused (SIGSTOP) or cut off
from etcd stops acting before its lease can expire and another master is elected. Every
change of term is logged with its reason.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from master.etcd_gateway import EtcdGateway, EtcdUnavailable

log = logging.getLogger(__name__)

LEADER_KEY = "/saline/leader"
#: each running master announces itself under this prefix, on a lease of its own
MEMBERS = "/saline/masters/"


@dataclass(frozen=True)
class Term:
    """Who leads, as this master knows it: ``leader`` None while nobody does."""

    leader: str | None
    epoch: int
    #: unix time this master learned it
    since: float
    reason: str


class Leader(Protocol):
    """What the parts that only the leader may run ask: do I lead, and at which epoch."""

    name: str
    epoch: int
    term: Term
    last_error: str | None
    #: the masters that announced themselves, by name (their ``since``)
    members: dict[str, float]

    def leading(self) -> bool: ...

    def step_down(self, reason: str) -> None: ...


class Solo:
    """The only master (no etcd configured): it always leads, at epoch 0, never fenced."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.epoch = 0
        self.term = Term(name, 0, time.time(), "the only master (no etcd_endpoints)")
        self.last_error: str | None = None
        self.members = {name: self.term.since}

    def leading(self) -> bool:
        return True

    def step_down(self, reason: str) -> None:
        log.error("leadership: a single master cannot step down (%s)", reason)


class Leadership:
    def __init__(
        self,
        gateway: EtcdGateway,
        name: str,
        ttl: int = 3,
        key: str = LEADER_KEY,
        on_change: Callable[[Term], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 2:
            raise ValueError("etcd leases are at least 2 seconds")
        self.gateway = gateway
        self.name = name
        self.ttl = ttl
        self.key = key
        self.on_change = on_change
        self._clock = clock
        self._lease: int | None = None
        self._valid_until = 0.0
        self.epoch = 0
        self.term = Term(None, 0, time.time(), "not yet campaigned")
        #: the last failure to reach etcd, for status
        self.last_error: str | None = None
        self.members: dict[str, float] = {}
        self._started = time.time()
        self._member_lease: int | None = None

    def leading(self) -> bool:
        """True while this master holds the lease, by its own clock's conservative bound."""
        return self._lease is not None and self._clock() < self._valid_until

    async def run(self) -> None:
        """Campaign, then hold: one round every ``ttl / 3`` seconds, until cancelled."""
        try:
            while True:
                await self.step()
                await asyncio.sleep(self.ttl / 3)
        finally:
            await self.resign()

    async def step(self) -> None:
        """One round: refresh the lease when leading, else campaign for it."""
        sent = self._clock()
        try:
            if self._lease is not None:
                left = await asyncio.to_thread(self.gateway.keepalive, self._lease)
                if left <= 0:
                    self._lose("the lease expired before it was refreshed")
                    return
                self._valid_until = sent + self.ttl * 2 / 3
            else:
                await self._campaign(sent)
            await self._announce()
            self.last_error = None
        except EtcdUnavailable as e:
            self.last_error = str(e)
            if self._lease is not None and not self.leading():
                self._lose(f"etcd unreachable past the lease's safe time: {e}")
        if self._lease is not None and not self.leading():
            self._lose("no refresh confirmed within the lease's safe time")

    async def _campaign(self, sent: float) -> None:
        lease = await asyncio.to_thread(self.gateway.grant, self.ttl)
        created, revision = await asyncio.to_thread(self.gateway.create, self.key, self.name, lease)
        if created:
            self._lease, self._valid_until, self.epoch = lease, sent + self.ttl * 2 / 3, revision
            self._change(Term(self.name, revision, time.time(), "won the election"))
            return
        await asyncio.to_thread(self.gateway.revoke, lease)  # not needed: do not let it linger
        holder = await asyncio.to_thread(self.gateway.get, self.key)
        if holder is not None and (holder.value, holder.create_revision) != (
            self.term.leader,
            self.term.epoch,
        ):
            self._change(Term(holder.value, holder.create_revision, time.time(), "another leads"))

    async def _announce(self) -> None:
        """Keep this master's member key alive; read who else is there (for status)."""
        lease = self._member_lease
        if lease is None or await asyncio.to_thread(self.gateway.keepalive, lease) <= 0:
            lease = self._member_lease = await asyncio.to_thread(self.gateway.grant, self.ttl * 2)
            value = json.dumps({"since": self._started})
            await asyncio.to_thread(self.gateway.put, MEMBERS + self.name, value, lease)
        found = await asyncio.to_thread(self.gateway.values_under, MEMBERS)
        self.members = {key.removeprefix(MEMBERS): _since(value) for key, value in found.items()}

    def _lose(self, reason: str) -> None:
        self._lease, self._valid_until = None, 0.0
        self._change(Term(None, self.epoch, time.time(), reason))

    def _change(self, term: Term) -> None:
        self.term = term
        log.warning(
            "leadership: %s (epoch %d): %s", term.leader or "nobody leads", term.epoch, term.reason
        )
        if self.on_change is not None:
            self.on_change(term)

    def step_down(self, reason: str) -> None:
        """Stop leading at once (the store fenced this master's write): the lease is left to
        expire, since a master that was overtaken must not touch etcd's view of the new one."""
        if self._lease is not None:
            self._lose(reason)

    async def resign(self) -> None:
        """Give the lease back (a clean stop hands over at once, not after the TTL)."""
        member, self._member_lease = self._member_lease, None
        if member is not None:
            with contextlib.suppress(EtcdUnavailable):
                await asyncio.to_thread(self.gateway.revoke, member)
        lease, self._lease = self._lease, None
        if lease is None:
            return
        self._valid_until = 0.0
        try:
            await asyncio.to_thread(self.gateway.revoke, lease)
        except EtcdUnavailable as e:
            log.warning("leadership: could not give the lease back: %s", e)
        self._change(Term(None, self.epoch, time.time(), "resigned"))


def _since(value: str) -> float:
    """A member's start time from its announcement (0 when it is not saline's)."""
    try:
        since = json.loads(value).get("since", 0)
        return float(since)
    except (ValueError, AttributeError, TypeError):
        return 0.0
