"""What every state function receives and returns.

A state function is ``fn(ctx: StateContext, name: str, **kwargs) -> StateResult``, listed
in its module's ``FUNCTIONS`` dict ("managed" -> managed). It reads facts, computes the
difference, and changes the node only when ``ctx.test`` is False; in test mode a
function that would change something returns ``result=None`` with the would-be
``changes``. A module may also define ``mod_watch(ctx, name, **kwargs)`` (in FUNCTIONS
under "mod_watch"), run after the function when a watched state changed and the function
itself succeeded without changes (restart a running service, run a waiting command); the
two results are merged. A function that changed something is not followed by it.

States never import the minion: everything node-side goes through ``ctx.call`` (an
execution function by name, e.g. ``ctx.call("service.start", "etcd")``) or plain Python
on the local filesystem; files from the master come through ``ctx.files``.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, Field


class StateResult(BaseModel):
    """The one result shape of every state."""

    #: True: in the declared state; False: failed; None: test mode, would change
    result: bool | None
    changes: dict[str, Any] = Field(default_factory=dict)
    comment: str = ""
    duration_ms: float = 0.0


class FileSource(Protocol):
    """Files from the master's file server (``saline://path``)."""

    def get(self, url: str) -> bytes:
        """Content of ``saline://path``; raises ``saline.errors.StateError`` if missing."""
        ...


class CallFunction(Protocol):
    def __call__(self, fun: str, *args: Any, **kwargs: Any) -> Any:
        """Run an execution function on this node; raises ``StateError`` when it fails."""
        ...


@dataclass
class StateContext:
    """The dependencies of state functions, passed explicitly."""

    minion_id: str
    grains: Mapping[str, Any]
    pillar: Mapping[str, Any]
    #: test mode: change nothing, report what would change
    test: bool
    call: CallFunction
    files: FileSource
    #: values (e.g. secrets from pillar) that must never appear in changes or comments
    secrets: frozenset[str] = field(default_factory=frozenset)


StateFunction = Callable[..., StateResult]
