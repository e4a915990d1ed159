"""State modules: one file each, registered in ``REGISTRY`` (module name -> its FUNCTIONS)."""

from states.modules import cmd, file, group, pkg, service, test, user
from states.modules.base import StateFunction

REGISTRY: dict[str, dict[str, StateFunction]] = {
    "file": file.FUNCTIONS,
    "service": service.FUNCTIONS,
    "cmd": cmd.FUNCTIONS,
    "user": user.FUNCTIONS,
    "group": group.FUNCTIONS,
    "pkg": pkg.FUNCTIONS,
    "test": test.FUNCTIONS,
}
