"""The ``returners`` setting: where the master's documents go besides its own store.

Each entry is ``{name, kind, ...}``; ``what``, ``batch`` and ``queue_max`` are common, the
rest belongs to the kind (checked when the master builds the returner, so a plugin's
returner takes the settings it defines). Secrets (a password, a DSN) are inline or the
absolute path of a file not readable by group or others.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Stream = Literal["events", "returns", "reactions"]
ALL: list[Stream] = ["events", "returns", "reactions"]


class ReturnerConfig(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    #: elasticsearch, postgresql, or the name of a ``saline.returners`` entry point
    kind: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    #: which streams it takes
    what: list[Stream] = Field(default_factory=lambda: list(ALL))
    #: documents per shipped batch
    batch: Annotated[int, Field(ge=1, le=10_000)] = 500
    #: documents the on-disk queue holds while the destination is away (then the oldest go)
    queue_max: Annotated[int, Field(ge=100, le=10_000_000)] = 100_000

    def settings(self) -> dict[str, object]:
        """The kind's own settings (everything but the common fields)."""
        return dict(self.model_extra or {})


ReturnerConfigs = list[ReturnerConfig]
