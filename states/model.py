"""The data of the state engine: compiled chunks and their results.

A *chunk* is one ``module.function`` call under one id of a state file, with its
arguments validated and its requisites declared. ``states.requisites`` resolves the
requisites into keys of other chunks and fixes the run order; ``states.engine`` runs the
chunks and returns one :class:`ChunkResult` each.
"""

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from states.modules.base import StateFunction

Registry: TypeAlias = Mapping[str, Mapping[str, StateFunction]]
"""State module name -> its ``FUNCTIONS`` (function name -> state function)."""


class RequisiteKind(StrEnum):
    """The requisites the engine understands; each also exists as ``<kind>_in``."""

    #: run only if the target succeeded
    REQUIRE = "require"
    #: like require; and call the module's ``mod_watch`` when the target changed something
    WATCH = "watch"
    #: run only if a target changed something
    ONCHANGES = "onchanges"
    #: run only if a target failed
    ONFAIL = "onfail"


class Requisite(BaseModel):
    """A requisite as declared in a state file: ``- require: [{file: /etc/x}]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: RequisiteKind
    #: state module of the target ("file")
    module: str
    #: id or ``name`` of the target
    target: str
    #: declared as ``<kind>_in``: the target depends on the declaring chunk, not the reverse
    reverse: bool = False
    #: line of the declaration in the (rendered) state file
    line: int


class Chunk(BaseModel):
    """One validated state call, ready to order and run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    module: str
    function: str
    #: the ``name`` argument given to the function; defaults to the id
    name: str
    #: the function's other arguments (requisites, ``name`` and ``failhard`` removed)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    #: state name the chunk comes from ("chef_backend.secrets")
    sls: str
    #: file the chunk comes from, relative to ``saline://`` ("chef_backend/secrets.yaml")
    file: str
    line: int
    #: stop the run after this chunk if it fails
    failhard: bool = False
    #: requisites as declared here (``*_in`` ones included, with ``reverse``)
    requisites: list[Requisite] = Field(default_factory=list)
    #: resolved by ``states.requisites``: keys of the chunks this one depends on, per kind,
    #: including edges declared elsewhere with ``*_in``
    require: list[str] = Field(default_factory=list)
    watch: list[str] = Field(default_factory=list)
    onchanges: list[str] = Field(default_factory=list)
    onfail: list[str] = Field(default_factory=list)
    #: position in the run order; -1 until ordered
    order: int = -1

    @property
    def state(self) -> str:
        """``module.function``, e.g. ``file.managed``."""
        return f"{self.module}.{self.function}"

    @property
    def key(self) -> str:
        """Unique in a compiled tree (ids are unique, one function per module per id)."""
        return f"{self.state}:{self.id}"

    @property
    def ref(self) -> str:
        """How a requisite names this chunk: ``file:/etc/x``."""
        return f"{self.module}:{self.id}"

    @property
    def where(self) -> str:
        """``file:line`` for messages."""
        return f"{self.file}:{self.line}"


class ChunkResult(BaseModel):
    """What running one chunk did, in run order."""

    model_config = ConfigDict(extra="forbid")

    #: ``file.managed:/etc/x``
    key: str
    id: str
    #: ``file.managed``
    state: str
    name: str
    sls: str
    #: True: in the declared state; False: failed or not run; None: test mode, would change
    result: bool | None
    changes: dict[str, Any] = Field(default_factory=dict)
    #: why: what was done, skipped or failed
    comment: str = ""
    duration_ms: float = 0.0
    #: False when the function was not called (failhard stopped the run, a requisite failed)
    ran: bool = True
