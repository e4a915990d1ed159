"""Messages between master and minions: a versioned envelope as a pydantic discriminated union.

Every frame on the minion socket is one msgpack map with a protocol version ``v`` and a
message ``kind``. The transport (``saline.transport``) never looks inside; the codec
(``saline.codec``) turns bytes into exactly one of the models below or raises
``ProtocolError``.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from saline.wire import DEFAULT_MAX_FRAME, MINION_ID_PATTERN  # noqa: F401 - re-exported

#: protocol version spoken by this build; frames with another version are refused
PROTOCOL_VERSION = 1
#: what a job id may look like: it is used in event tags and file names, so no '/' or '.'
JID_PATTERN = r"^[0-9A-Za-z_-]{1,64}$"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    #: protocol version of the sender
    v: Literal[1] = 1


# -- minion -> master -------------------------------------------------------------------


class Hello(_Message):
    """First message of a minion session: who it claims to be and what it looks like."""

    kind: Literal["hello"] = "hello"
    #: the id the minion claims; must equal the id bound to its accepted key
    id: str = Field(pattern=MINION_ID_PATTERN)
    #: grains collected on the minion, used for targeting
    grains: dict[str, Any] = Field(default_factory=dict)
    #: saline version of the minion
    version: str = ""
    #: the execution functions it has ("test.ping", ...): a misspelled function is refused
    #: before a job is sent (an older minion sends none)
    functions: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list, max_length=5000
    )


class Heartbeat(_Message):
    """Periodic proof of life; keeps presence fresh."""

    kind: Literal["heartbeat"] = "heartbeat"
    id: str = Field(pattern=MINION_ID_PATTERN)


class Return(_Message):
    """The outcome of one job on one minion; spooled on the minion until acknowledged."""

    kind: Literal["return"] = "return"
    jid: str = Field(pattern=JID_PATTERN)
    id: str = Field(pattern=MINION_ID_PATTERN)
    fun: str = Field(max_length=256)
    #: True when the function ran and reported success
    success: bool
    #: 0 on success; the process exit code for cmd.run; 1 for an error raised by the function
    retcode: int = Field(ge=-(2**31), lt=2**31)
    #: the function's return value, or a structured error ``{"error": ..., "message": ...}``
    ret: Any = None
    #: wall time of the function on the minion
    duration_ms: float = 0.0


class Event(_Message):
    """Something a minion observed (a beacon edge) or was asked to announce.

    The master stamps the authenticated minion id; tags outside the minion's allowed
    namespaces are refused. Spooled on the minion until acknowledged.
    """

    kind: Literal["event"] = "event"
    id: str = Field(pattern=MINION_ID_PATTERN)
    #: minion-unique and time-ordered; the master drops resends of an id it stored
    eid: str = Field(pattern=r"^[0-9A-Za-z_.-]{1,64}$")
    tag: str = Field(min_length=1, max_length=256)
    data: dict[str, Any] = Field(default_factory=dict)
    ts: float = 0.0


class FileRequest(_Message):
    """Ask the master's file server for ``saline://path`` (on behalf of a running job)."""

    kind: Literal["file_request"] = "file_request"
    id: str = Field(pattern=MINION_ID_PATTERN)
    #: correlates the reply; chosen by the minion
    req: int = Field(ge=0)
    path: str = Field(max_length=1024)
    #: sha256 of the copy the minion has; the master sends no data when it still matches
    have: str | None = Field(default=None, max_length=64)


class PillarRequest(_Message):
    """Ask for this minion's pillar (compiled on the master for the authenticated id only)."""

    kind: Literal["pillar_request"] = "pillar_request"
    id: str = Field(pattern=MINION_ID_PATTERN)
    req: int = Field(ge=0)


class Bye(_Message):
    """A minion shutting down cleanly: mark it lost at once instead of after the timeout."""

    kind: Literal["bye"] = "bye"
    id: str = Field(pattern=MINION_ID_PATTERN)


# -- master -> minion -------------------------------------------------------------------


class Welcome(_Message):
    """The master accepted the session; the minion may now receive jobs."""

    kind: Literal["welcome"] = "welcome"
    id: str
    master_version: str = ""


class Pending(_Message):
    """The minion's key waits for an operator; retry later."""

    kind: Literal["pending"] = "pending"
    reason: str = ""


class Refused(_Message):
    """The master refuses the session or message (wrong id for the key, rejected key...)."""

    kind: Literal["refused"] = "refused"
    reason: str = ""


class Rehello(_Message):
    """The master has no session for this minion (for example after a restart): say hello."""

    kind: Literal["rehello"] = "rehello"


class Job(_Message):
    """Run one execution function."""

    kind: Literal["job"] = "job"
    jid: str = Field(pattern=JID_PATTERN)
    fun: str = Field(max_length=256)
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    #: seconds the function may run before the minion kills it
    timeout: float = Field(default=60.0, gt=0)


class FileReply(_Message):
    """A file from the file server; ``data`` is None when the minion's copy is current."""

    kind: Literal["file_reply"] = "file_reply"
    req: int
    path: str
    sha256: str = ""
    data: bytes | None = None
    #: set instead of data when the file cannot be served (missing, refused path)
    error: str | None = None


class PillarReply(_Message):
    """This minion's pillar, and which values in it are secrets (never logged or returned)."""

    kind: Literal["pillar_reply"] = "pillar_reply"
    req: int
    pillar: dict[str, Any] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)
    error: str | None = None


class Ack(_Message):
    """The master stored these returns and events; the minion may drop them from its spool."""

    kind: Literal["ack"] = "ack"
    jids: list[str] = Field(default_factory=list)
    events: list[str] = Field(default_factory=list)


MinionMessage = Annotated[
    Hello | Heartbeat | Return | Event | FileRequest | PillarRequest | Bye,
    Field(discriminator="kind"),
]
MasterMessage = Annotated[
    Welcome | Pending | Refused | Rehello | Job | Ack | FileReply | PillarReply,
    Field(discriminator="kind"),
]
MINION_KINDS = frozenset(
    {"hello", "heartbeat", "return", "event", "file_request", "pillar_request", "bye"}
)
MASTER_KINDS = frozenset(
    {"welcome", "pending", "refused", "rehello", "job", "ack", "file_reply", "pillar_reply"}
)
