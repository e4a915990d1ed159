"""Where the state tree saline ships is, as installed (``importlib.resources``)."""

from importlib.resources import files
from pathlib import Path

#: the Chef HA state files
SHIPPED_STATES = Path(str(files("states") / "tree"))
