"""Where the rules and runbooks saline ships are, as installed (``importlib.resources``)."""

from importlib.resources import files
from pathlib import Path

#: the Chef HA rules, loaded before the operator's reactor_dirs
SHIPPED_RULES = Path(str(files("reactors") / "rules"))
#: the Chef HA runbooks, searched after the operator's runbook_roots
SHIPPED_RUNBOOKS = Path(str(files("reactors") / "runbooks"))
