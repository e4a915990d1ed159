"""What the local client API accepts and answers: one model per request and per reply.

Requests are validated strictly (unknown fields refused); replies are built as models and
framed as msgpack maps with a ``type`` (``saline/api.py``). The job stream — ``job``,
``sent``, ``ret``, ``progress``, ``timed_out``, ``not_reached``, ``done`` — is what a job
tells whoever listens to it (``master/jobs.py``).
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reactors.orchestrate import RunbookResult
from saline.targeting import TargetType

# -- requests ---------------------------------------------------------------------------


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: Literal[1] = 1
    op: str


#: a batch given as a share of the minions: 1% to 100%
_SHARE = r"^(100|[1-9][0-9]?)%$"


class RunRequest(Request):
    target: str = Field(min_length=1, max_length=4096)
    tgt_type: TargetType = TargetType.GLOB
    fun: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    #: seconds the client waits for the returns (None: the master's job_timeout); the job
    #: goes on after that, each function up to its own time limit (``timeout=`` in kwargs)
    timeout: float | None = Field(default=None, gt=0, le=86400)
    #: at most N minions at a time, or "N%" of those reached
    batch: Annotated[int, Field(ge=1)] | Annotated[str, Field(pattern=_SHARE)] | None = None
    #: seconds a slot of the batch stays empty after a minion returns (``--batch-wait``)
    batch_wait: float | None = Field(default=None, ge=0, le=3600)
    #: kwarg names (or positions, as digits) whose values are secrets: never stored or shown
    secret: list[str] = Field(default_factory=list, max_length=64)
    #: answer with the jid at once; the job goes on (``saline jobs wait JID``)
    background: bool = False


class JobsListRequest(Request):
    """The newest ``limit`` jobs passing the filters (a filter left None filters nothing)."""

    limit: int = Field(default=50, ge=1, le=10_000)
    #: a glob on the function (``state.*``)
    fun: str | None = Field(default=None, min_length=1, max_length=256)
    #: a glob on the target as it was given (``be*``)
    target: str | None = Field(default=None, min_length=1, max_length=4096)
    #: the user who started the job
    user: str | None = Field(default=None, min_length=1, max_length=256)
    #: True: only jobs in test mode (``test=true``); False: only the others
    test: bool | None = None


class JobShowRequest(Request):
    jid: str = Field(max_length=64)


class EventsRequest(Request):
    tag: str = Field(default="*", max_length=1024)
    #: replay stored events with seq greater than this before streaming live ones
    since: int | None = Field(default=None, ge=0)
    #: False: replay stored events (``since``) and end with ``done`` instead of streaming
    follow: bool = True


class PlainRequest(Request):
    """An operation that takes nothing but its name."""


class ReactorHistoryRequest(Request):
    limit: int = Field(default=50, ge=1, le=10_000)
    rule: str | None = Field(default=None, max_length=128)


class ReactionRequest(Request):
    id: str = Field(min_length=1, max_length=64)


class ForgetRequest(Request):
    rule: str | None = Field(default=None, min_length=1, max_length=128)
    key: str | None = Field(default=None, min_length=1, max_length=1024)


class OrchestrateRequest(Request):
    runbook: str = Field(min_length=1, max_length=256)
    vars: dict[str, Any] = Field(default_factory=dict)
    test: bool = False


class FireRequest(Request):
    tag: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.:@/*+-]+$")
    data: dict[str, Any] = Field(default_factory=dict)


# -- replies ----------------------------------------------------------------------------


class Reply(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    type: str

    def wire(self) -> dict[str, Any]:
        """The map sent to the client (values as they are: returns may hold bytes)."""
        return self.model_dump(by_alias=True)


class Error(Reply):
    type: Literal["error"] = "error"
    message: str


class Done(Reply):
    """The end of a stream; for a job, its summary by outcome."""

    type: Literal["done"] = "done"
    jid: str | None = None
    minions: list[str] = []
    succeeded: list[str] = []
    failed: list[str] = []
    #: no return in time: killed at the function's time limit, or (see ``running``) still
    #: running when the client stopped waiting
    timed_out: list[str] = []
    #: still running (or waiting for their turn) when the client stopped waiting: the job
    #: goes on (``saline jobs wait JID``)
    running: list[str] = []
    not_reached: list[str] = []


class JobAccepted(Reply):
    type: Literal["job"] = "job"
    jid: str
    minions: list[str]
    missing: list[str]


class Started(Reply):
    """``--async``: the job runs on without the client."""

    type: Literal["started"] = "started"
    jid: str


class Sent(Reply):
    type: Literal["sent"] = "sent"
    ids: list[str]


class MinionOutcome(Reply):
    """One minion's job ended without a return: ``timed_out`` or ``not_reached``."""

    type: Literal["timed_out", "not_reached"]
    id: str


class Ret(Reply):
    type: Literal["ret"] = "ret"
    id: str
    success: bool
    retcode: int
    ret: Any = Field(alias="return")
    duration_ms: float


class Progress(Reply):
    type: Literal["progress"] = "progress"
    answered: int
    total: int
    running: list[str]
    waiting: int
    elapsed: float


JobMessage = JobAccepted | Sent | Ret | MinionOutcome | Progress | Done


class Subscribed(Reply):
    type: Literal["subscribed"] = "subscribed"


class EventMessage(Reply):
    type: Literal["event"] = "event"
    seq: int | None
    tag: str
    data: dict[str, Any]
    minion: str | None
    ts: float
    cause: int | None
    depth: int
    rule: str | None


class Result(Reply):
    """A one-answer operation; each operation's subclass names its fields."""

    type: Literal["result"] = "result"


class JobRow(BaseModel):
    jid: str
    fun: str
    target: str
    user: str
    minions: int
    returned: int
    succeeded: int
    created: float


class JobsList(Result):
    jobs: list[JobRow]


class StoredReturn(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    success: bool
    retcode: int
    ret: Any = Field(alias="return")


class JobDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jid: str
    fun: str
    args: list[Any]
    kwargs: dict[str, Any]
    target: str
    tgt_type: str
    user: str
    created: float
    timeout: float
    minions: list[str]
    missing: list[str]


class JobShown(Result):
    job: JobDetail
    returns: dict[str, StoredReturn]
    #: while it runs: who runs it now, and who waits because they are busy
    running: list[str] | None = None
    queued: list[str] | None = None

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class Fired(Result):
    seq: int | None
    tag: str


class Message(Result):
    message: str


class Paused(Result):
    paused: bool


class Verdict(Result):
    verdict: str
    reason: str


class RuleList(Result):
    paused: bool
    rules: list[dict[str, Any]]
    in_flight: list[str]
    awaiting: list[str]


class ReactorView(Result):
    """What the reactor sees now: a snapshot ``saline reactor simulate --view`` starts from."""

    #: the last stored event's seq: record from here (``saline events --since SEQ``)
    seq: int
    #: accepted minion id -> grains
    minions: dict[str, dict[str, Any]]
    online: list[str]
    #: minion -> beacon -> latest observation
    observations: dict[str, dict[str, dict[str, Any]]]
    #: the reactor's memory: throttles, in flight, flap history, pending
    state: dict[str, Any]


class HistoryRow(BaseModel):
    id: str
    event_seq: int | None
    event_tag: str
    rule: str
    verdict: str
    reason: str
    key: str
    actions: list[dict[str, Any]]
    #: per action index (as a string): state, and the jid and detail once known
    progress: dict[str, dict[str, Any]]
    outcome: str | None
    created: float
    finished: float | None


class History(Result):
    history: list[HistoryRow]


class Orchestrated(Result, RunbookResult):
    """What ``saline orchestrate`` did: the runbook's result."""

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ReactorStatus(BaseModel):
    paused: bool
    failures: int
    in_flight: list[str]
    awaiting_approval: list[str]


class LeadershipStatus(BaseModel):
    """Who leads, as this master knows it."""

    #: this master
    name: str
    #: the leading master's name; None while nobody leads
    leader: str | None
    epoch: int
    #: unix time this master learned of the current term
    since: float
    #: whether this master is the leader
    leading: bool
    reason: str
    #: the last failure to reach etcd, if the last attempt failed
    error: str | None = None
    #: every master that announced itself in etcd, with the time it started
    masters: dict[str, float] = Field(default_factory=dict)


class Status(Result):
    online: list[str]
    keys: dict[str, list[str]]
    refusals: dict[str, Any]
    active_jobs: int
    #: the cluster view: latest state per minion and beacon
    observations: dict[str, dict[str, Any]]
    tasks: dict[str, Any]
    reactor: ReactorStatus
    leadership: LeadershipStatus
    #: each returner: queued (on disk), shipped, dropped, last_error
    returners: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: each notify target: queued, sent, retried, failed, dropped, duplicate
    notify: dict[str, dict[str, int]] = Field(default_factory=dict)
    #: keep settings (seconds), passes, last_pass (unix time), last_seconds, deleted per kind
    retention: dict[str, Any] = Field(default_factory=dict)


class Functions(Result):
    """The execution functions the online minions' hellos listed (that the caller may run)."""

    functions: list[str]
