"""Messages between master and minions: a versioned envelope as a pydantic discriminated union.

Every frame on the minion socket is one msgpack map with a protocol version ``v`` and a
message ``kind``. The transport (``saline.transport``) never looks inside; the codec
(``saline.codec``) turns bytes into exactly one of the models below or raises
``ProtocolError``.
"""

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from saline.wire import DEFAULT_MAX_FRAME, MINION_ID_PATTERN  # noqa: F401 - re-exported

#: protocol version spoken by this build; frames with another version are refused
PROTOCOL_VERSION = 1
#: what a job id may look like: it is used in event tags and file names, so no '/' or '.'
JID_PATTERN = r"^[0-9A-Za-z_-]{1,64}$"
#: seconds a function may run when the job gives no ``timeout=`` and the function declares
#: no default of its own (``TIMEOUTS`` of its module)
DEFAULT_FUNCTION_TIMEOUT = 300.0
#: the longest ``timeout=`` a job may ask (a day); the minion's max_function_timeout caps it
MAX_FUNCTION_TIMEOUT = 86400.0
#: the minion's max_function_timeout unless its config says otherwise
DEFAULT_MAX_FUNCTION_TIMEOUT = 3600.0
#: seconds a function past its time limit has, after SIGTERM, to stop what it started
#: before the minion kills its process group
KILL_GRACE = 5.0
#: the retcode of a function the minion killed at its time limit (as coreutils' timeout)
TIMEOUT_RETCODE = 124


def killed_at_time_limit(retcode: int, ret: Any) -> bool:
    """A return saying the minion killed the function at its time limit."""
    return retcode == TIMEOUT_RETCODE and isinstance(ret, dict) and ret.get("error") == "timeout"


def timeout_keyword(kwargs: Mapping[str, Any]) -> float | None:
    """The job's own ``timeout=`` keyword in seconds (None: not given).

    It is the function's time limit on the minion (and a function taking a ``timeout``
    argument, such as ``cmd.run``, gets it too).

    :raises ValueError: not a number of seconds in (0, ``MAX_FUNCTION_TIMEOUT``].
    """
    if "timeout" not in kwargs or kwargs["timeout"] is None:
        return None
    value = kwargs["timeout"]
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not 0 < seconds <= MAX_FUNCTION_TIMEOUT:
        raise ValueError(
            f"timeout= must be a number of seconds up to {MAX_FUNCTION_TIMEOUT:g}, got {value!r}"
        )
    return seconds


#: "module.function", as a hello lists it
_FunctionName = Annotated[str, Field(max_length=128)]


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
    functions: list[_FunctionName] = Field(default_factory=list, max_length=5000)
    #: seconds it lets each function that declares its own default run when a job gives no
    #: timeout (capped by its max_function_timeout): the master's deadline for such a job
    timeouts: dict[_FunctionName, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, max_length=5000
    )
    #: its max_function_timeout (None: not said; the master then assumes the default)
    max_function_timeout: float | None = Field(default=None, gt=0)


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
    #: seconds the function may run before the minion kills it (at most the minion's
    #: max_function_timeout)
    timeout: float = Field(default=60.0, gt=0)
    #: True when the caller gave no timeout: the function's declared default applies
    #: (``DEFAULT_FUNCTION_TIMEOUT`` when it declares none), at most ``timeout``
    default_timeout: bool = False


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
