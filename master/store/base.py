"""The storage seam of the master. SQLite is the embedded default; PostgreSQL comes later.

Timing and atomicity contract (every implementation must keep it):

* ``save_returns`` writes a whole batch in one transaction and returns only after it is
  durable against a crash of the master process; the master acknowledges returns to
  minions only after this call returned. Duplicates by (jid, minion) are ignored, and the
  result tells which of the batch were new.
* ``save_job`` is durable before the job is sent to any minion.
* Reads never block writers for long (SQLite: WAL mode).
* All methods are called from the master's event loop thread only.
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class JobRecord:
    jid: str
    fun: str
    args: list[Any]
    kwargs: dict[str, Any]
    target: str
    tgt_type: str
    #: minions the job was meant for (matched by the target)
    minions: list[str]
    #: matched minions that were offline when the job started
    missing: list[str]
    user: str
    created: float  # unix time
    timeout: float


@dataclass(frozen=True)
class ReturnRecord:
    jid: str
    minion: str
    fun: str
    success: bool
    retcode: int
    ret: Any
    duration_ms: float
    received: float  # unix time


@dataclass(frozen=True)
class EventRecord:
    tag: str
    data: dict[str, Any]
    #: authenticated minion id, or None for the master's own events
    minion: str | None
    ts: float
    #: assigned by the store on save; None before
    seq: int | None = None
    #: seq of the event whose reaction caused this one (loop protection, audit)
    cause: int | None = None
    #: length of the reaction chain that led here: 0 for events from minions and operators
    depth: int = 0
    #: the reactor rule whose action caused this event
    rule: str | None = None


@dataclass(frozen=True)
class MinionRecord:
    id: str
    grains: dict[str, Any] = field(default_factory=dict)
    last_seen: float = 0.0


@dataclass(frozen=True)
class JobSummary:
    job: JobRecord
    returned: int
    succeeded: int


class Store(ABC):
    """Jobs, returns, events and the last-known grains of minions."""

    @abstractmethod
    def save_job(self, job: JobRecord) -> None: ...

    @abstractmethod
    def get_job(self, jid: str) -> JobRecord | None: ...

    @abstractmethod
    def list_jobs(self, limit: int = 50) -> list[JobSummary]:
        """Newest first."""

    @abstractmethod
    def save_returns(self, returns: Sequence[ReturnRecord]) -> list[bool]:
        """Store a batch atomically; element i is True when returns[i] was not stored before."""

    @abstractmethod
    def job_returns(self, jid: str) -> dict[str, ReturnRecord]: ...

    @abstractmethod
    def save_events(self, events: Sequence[EventRecord]) -> list[EventRecord]:
        """Store a batch atomically; returns the events with ``seq`` set (increasing)."""

    @abstractmethod
    def events_since(self, seq: int = 0, limit: int = 1000) -> list[EventRecord]:
        """Events with seq > ``seq``, oldest first."""

    @abstractmethod
    def save_minion(self, minion: MinionRecord) -> None: ...

    @abstractmethod
    def minions(self) -> dict[str, MinionRecord]: ...

    @abstractmethod
    def forget_minion(self, minion_id: str) -> None: ...

    @abstractmethod
    def close(self) -> None: ...
