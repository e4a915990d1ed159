"""The storage seam of the master. SQLite is the embedded default; PostgreSQL comes later.

One interface for everything the master keeps: jobs, returns, events, minions' last-known
grains, and the reactor's audit trail (reactions, their progress) and state.

Timing and atomicity contract (every implementation must keep it):

* ``save_returns`` writes a whole batch in one transaction and returns only after it is
  durable against a crash of the master process; the master acknowledges returns to
  minions only after this call returned. Duplicates by (jid, minion) are ignored, and the
  result tells which of the batch were new.
* ``save_job`` is durable before the job is sent to any minion.
* Reads never block writers for long (SQLite: WAL mode).
* All methods are called from the master's event loop thread only.
* ``prune`` deletes at most ``batch`` rows per kind, each kind in its own short
  transaction (the SQLite write lock is held for one batch only), so a background loop can
  call it again and again between other writes.

Fencing (several masters on one store, one leading at a time): the leader's *epoch* (grows
with every new leader; 0 means no leadership, a single master) rides on every reaction
decision and progress (``ReactionRecord.epoch``), every job it creates (``JobRecord.epoch``)
and its reactor state (``save_reactor_state(..., epoch=)``). The store keeps the newest
epoch it has seen (``fence_epoch``). A write carrying epoch e > 0 checks it in the same
transaction as the write: older than the newest seen raises ``Fenced`` and writes nothing;
otherwise e becomes the newest seen and the write goes through. Two leaders writing at once
are serialised on the fence (PostgreSQL: its one row is locked for the transaction), so
once a newer epoch committed, an older one never commits again. Writes with epoch 0 are
never checked (a single master; ad-hoc jobs any master starts).
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from reactors.model import RenderedAction
from saline.errors import SalineError


class StoreError(SalineError, RuntimeError):
    """The store cannot be used as it is (a schema newer than this code, ...)."""


class StoreUnavailable(StoreError):
    """The store's server does not answer (the message says why, never the DSN)."""


class Fenced(StoreError):
    """A write carried a leadership epoch older than the newest the store has seen: the
    master that sent it no longer leads (nothing of the write was stored)."""

    def __init__(self, epoch: int, newest: int) -> None:
        super().__init__(
            f"fenced: epoch {epoch} is older than epoch {newest} already seen; "
            "this master no longer leads"
        )
        #: the epoch the refused write carried
        self.epoch = epoch
        #: the newest epoch the store had seen
        self.newest = newest

    @classmethod
    def check(cls, epoch: int, newest: int) -> None:
        """Raise unless a write at ``epoch`` may pass a fence at ``newest`` (equal passes).

        :raises Fenced: ``newest`` > ``epoch``.
        """
        if newest > epoch:
            raise cls(epoch, newest)


@dataclass(frozen=True)
class Chain:
    """Where a job or event came from: loop protection and the audit see through jobs.

    Empty (no cause, depth 0, no rule) for what minions and operators start.
    """

    #: seq of the event whose reaction caused it
    cause: int | None = None
    #: length of the reaction chain that led here
    depth: int = 0
    #: the reactor rule whose action caused it
    rule: str | None = None


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
    #: the reaction that started the job (stored: a resumed reaction keeps its chain)
    chain: Chain = field(default_factory=Chain)
    #: the leader's epoch when only the leader may start the job (fenced); 0: unchecked
    epoch: int = 0


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

    @classmethod
    def caused(
        cls,
        tag: str,
        data: dict[str, Any],
        chain: Chain,
        minion: str | None = None,
        ts: float = 0.0,
    ) -> "EventRecord":
        """An event a reaction (or a job it started) produced: it carries the chain."""
        return cls(tag, data, minion, ts, None, chain.cause, chain.depth, chain.rule)


@dataclass(frozen=True)
class MinionRecord:
    id: str
    grains: dict[str, Any] = field(default_factory=dict)
    last_seen: float = 0.0


#: ``list_jobs`` with a test-mode filter reads at most this many times ``limit`` of the
#: newest jobs passing the other filters, and never more than TEST_SCAN_MAX (kwargs are
#: msgpack blobs SQL cannot look into; no column for it, to keep the schema; the bound
#: keeps the master's loop from stalling): an older test-mode job is not listed.
TEST_SCAN_FACTOR = 100
TEST_SCAN_MAX = 100_000


@dataclass(frozen=True)
class JobFilter:
    """Which jobs ``Store.list_jobs`` lists; a field left None does not filter."""

    #: a glob on the function name (``state.*``), case-sensitive
    fun: str | None = None
    #: a glob on the target as it was given (``be*``, ``G@role:backend``), case-sensitive
    target: str | None = None
    #: the user who started the job, exactly
    user: str | None = None
    #: True: only jobs run in test mode (kwarg ``test`` true); False: only the others
    test: bool | None = None

    def admits_test_mode(self, kwargs: dict[str, Any]) -> bool:
        """Whether a job with these kwargs passes the test-mode filter. ``test`` is true in
        the spellings the minion accepts (``minion/modules/cmd.py::parse_bool``)."""
        if self.test is None:
            return True
        value = kwargs.get("test")
        if isinstance(value, str):
            value = value.strip().lower() in _TRUE_WORDS
        return (value is True or (type(value) is int and value == 1)) == self.test


#: the words that mean true to the minion's parse_bool (the master cannot import it)
_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})


@dataclass(frozen=True)
class JobSummary:
    job: JobRecord
    returned: int
    succeeded: int


@dataclass
class ActionProgress:
    """How far one action of a fired reaction got (written before and after it runs)."""

    state: Literal["started", "done", "failed"]
    #: the job it started, durable before the job is sent: after a restart it is awaited
    jid: str | None = None
    detail: str | None = None
    #: an orchestrate action's journal: the jid of each job its runbook started, in call
    #: order, each durable before it is sent; a resumed runbook awaits them, not resends them
    jids: list[str] = field(default_factory=list)


@dataclass
class ReactionRecord:
    """One reactor decision: event -> rule -> verdict and reason -> actions -> outcome."""

    id: str
    event_seq: int | None
    event_tag: str
    rule: str
    #: fire | skip | escalate | dry_run | await_approval | approved | failed
    verdict: str
    reason: str
    key: str
    #: the rendered actions, as the engine decided them
    actions: list[RenderedAction] = field(default_factory=list)
    #: per action index
    progress: dict[int, ActionProgress] = field(default_factory=dict)
    #: None while open; ok | failed | rejected | (the verdict) when finished
    outcome: str | None = None
    created: float = 0.0
    finished: float | None = None
    #: the epoch of the leader that wrote the row last (fenced); 0: a single master
    epoch: int = 0

    @property
    def depth(self) -> int:
        """The chain depth of what the reaction's actions produce."""
        return max((a.depth for a in self.actions), default=1)


@dataclass(frozen=True)
class Cutoffs:
    """What ``Store.prune`` deletes: rows older than these unix times (None: none of that
    kind). Never what is still needed: a job in ``keep_jids`` or whose wait (created +
    timeout) is not over before the cutoff, a reaction open (outcome NULL) or awaiting
    approval, and the event such a reaction names."""

    jobs: float | None = None
    events: float | None = None
    reactions: float | None = None
    #: jobs kept whatever their age (the master's active jobs, those of open reactions)
    keep_jids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Pruned:
    """Rows one ``Store.prune`` call deleted, per table."""

    jobs: int = 0
    returns: int = 0
    events: int = 0
    reactions: int = 0

    @property
    def total(self) -> int:
        return self.jobs + self.returns + self.events + self.reactions

    def __add__(self, other: "Pruned") -> "Pruned":
        return Pruned(
            self.jobs + other.jobs,
            self.returns + other.returns,
            self.events + other.events,
            self.reactions + other.reactions,
        )


#: the states a row of ``minion_keys`` can be in; ``deleted`` is a tombstone
KeyRowState = Literal["accepted", "pending", "rejected", "deleted"]


@dataclass(frozen=True)
class KeyRow:
    """One minion's key as the masters sharing a store mirror it (``master/keysync.py``)."""

    id: str
    state: KeyRowState
    #: the Z85 Curve public key ("" for a tombstone that never had one)
    public: str
    #: the grains the operator trusts for the minion
    grains: dict[str, Any] = field(default_factory=dict)
    #: set by the store on every write, increasing over the whole table; 0 before
    version: int = 0
    #: unix time of the write; set by the store
    changed: float = 0.0


@dataclass(frozen=True)
class TableStats:
    name: str
    rows: int
    #: bytes on disk, indexes included; None when the backend cannot tell per table
    bytes: int | None


@dataclass(frozen=True)
class StoreStats:
    """Rows and sizes of saline's tables (``saline store stats``)."""

    #: what the store is, for people (never a DSN)
    backend: str
    tables: list[TableStats]
    #: bytes of the whole store (SQLite: the file and its WAL; PostgreSQL: the tables)
    total_bytes: int


class Store(ABC):
    """Jobs, returns, events, the last-known grains of minions, and the reactor's trail."""

    @abstractmethod
    def save_job(self, job: JobRecord) -> None:
        """Insert or replace the job, durable when this returns.

        :raises Fenced: ``job.epoch`` > 0 is older than ``fence_epoch()`` (nothing stored).
        """

    @abstractmethod
    def get_job(self, jid: str) -> JobRecord | None: ...

    @abstractmethod
    def list_jobs(self, limit: int = 50, filters: JobFilter | None = None) -> list[JobSummary]:
        """The ``limit`` newest jobs that pass ``filters`` (None: every job), newest first.

        The test-mode filter may read only a bounded number of the newest jobs passing the
        other filters (an implementation documents its bound): a test-mode job older than
        that is not listed.
        """

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
    def last_event_seq(self) -> int:
        """The seq of the newest stored event; 0 when there is none."""

    @abstractmethod
    def save_minion(self, minion: MinionRecord) -> None: ...

    @abstractmethod
    def minions(self) -> dict[str, MinionRecord]: ...

    @abstractmethod
    def forget_minion(self, minion_id: str) -> None: ...

    @abstractmethod
    def save_reactions(self, reactions: Sequence[ReactionRecord]) -> None:
        """Insert or replace the batch atomically (every decision before any action runs).

        The batch is fenced at the largest epoch of its rows (when > 0).

        :raises Fenced: that epoch is older than ``fence_epoch()`` (no row stored).
        """

    @abstractmethod
    def get_reaction(self, reaction_id: str) -> ReactionRecord | None: ...

    @abstractmethod
    def reaction_history(self, limit: int = 50, rule: str | None = None) -> list[ReactionRecord]:
        """Newest first."""

    @abstractmethod
    def open_reactions(self) -> list[ReactionRecord]:
        """Fired or approved reactions not finished: resumed after a restart, oldest first."""

    @abstractmethod
    def decided_events(self, seqs: Sequence[int]) -> set[int]:
        """Which of ``seqs`` some reaction row names (``event_seq``): a new leader replaying
        events decides none twice. One indexed query per call (meant for ~1000 seqs)."""

    @abstractmethod
    def save_reactor_state(self, state: dict[str, Any], epoch: int = 0) -> None:
        """Replace the reactor's state, fenced at ``epoch`` (when > 0).

        :raises Fenced: ``epoch`` is older than ``fence_epoch()`` (the state is unchanged).
        """

    @abstractmethod
    def load_reactor_state(self) -> dict[str, Any] | None: ...

    @abstractmethod
    def fence_epoch(self) -> int:
        """The newest leadership epoch a write carried; 0 when none did (for status)."""

    @abstractmethod
    def prune(self, cutoffs: Cutoffs, batch: int = 1000) -> Pruned:
        """Delete what ``cutoffs`` name, oldest first: at most ``batch`` rows of each kind
        (jobs with their returns counting together, returns first), each kind in its own
        transaction. Call again until it deletes nothing. A job being pruned may show
        fewer returns between two calls (it is past retention).
        """

    @abstractmethod
    def stats(self) -> StoreStats:
        """Row counts and sizes per table (counting reads every row: not for hot paths)."""

    @abstractmethod
    def put_key(self, row: KeyRow) -> None:
        """Insert or replace the key of ``row.id`` (its version and changed are the
        store's: the version grows past every earlier write of the table)."""

    @abstractmethod
    def delete_key(self, minion_id: str) -> None:
        """Mark the key of ``minion_id`` deleted (a tombstone, with a new version), so
        every master that mirrors the table deletes its copy."""

    @abstractmethod
    def keys_since(self, version: int = 0) -> list[KeyRow]:
        """The key rows written after ``version``, tombstones included, oldest first. A
        row committed later never gets a version below one already read."""

    def held_jids(self) -> frozenset[str]:
        """The jobs open reactions started (awaited after a restart): never pruned."""
        return frozenset(p.jid for r in self.open_reactions() for p in r.progress.values() if p.jid)

    @abstractmethod
    def schema_version(self) -> int:
        """The version of saline's tables in this store (migrated on open)."""

    @abstractmethod
    def close(self) -> None: ...
