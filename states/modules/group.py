"""group.*: local groups (service accounts such as ``chef_pgsql``), via groupadd/groupmod."""

import grp
import re
import subprocess
from typing import Any

from saline.errors import StateError
from states.modules.base import StateContext, StateFunction, StateResult

#: what shadow-utils accepts, minus a leading "-" (which argv would read as an option)
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")


def _tool(argv: list[str]) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StateError(f"{argv[0]}: {exc}") from exc
    if proc.returncode != 0:
        detail = proc.stderr.strip() or proc.stdout.strip()
        raise StateError(f"{argv[0]} failed (exit {proc.returncode}): {detail}")


def present(
    ctx: StateContext, name: str, gid: int | None = None, system: bool = False
) -> StateResult:
    """Ensure a local group exists, with ``gid`` when given.

    ``system`` picks the gid from the system range; it matters only when creating.
    changes: ``created``, ``gid``.
    """
    if not NAME_PATTERN.match(name):
        return StateResult(result=False, comment=f"invalid group name {name!r}")
    try:
        current: grp.struct_group | None = grp.getgrnam(name)
    except KeyError:
        current = None
    changes: dict[str, Any] = {}
    if current is None:
        changes["created"] = True
        if gid is not None:
            changes["gid"] = gid
    elif gid is not None and current.gr_gid != gid:
        changes["gid"] = gid
    if not changes:
        assert current is not None
        return StateResult(result=True, comment=f"group {name} exists (gid {current.gr_gid})")
    verb = "create" if current is None else "update"
    if ctx.test:
        return StateResult(result=None, changes=changes, comment=f"would {verb} group {name}")
    argv = ["groupadd" if current is None else "groupmod"]
    if current is None and system:
        argv.append("--system")
    if gid is not None:
        argv += ["--gid", str(int(gid))]
    try:
        _tool([*argv, name])
    except StateError as exc:
        return StateResult(result=False, comment=str(exc))
    changes["gid"] = grp.getgrnam(name).gr_gid
    return StateResult(result=True, changes=changes, comment=f"{verb}d group {name}")


FUNCTIONS: dict[str, StateFunction] = {"present": present}
