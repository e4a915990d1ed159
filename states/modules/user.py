"""user.*: local user accounts (``chef_pgsql``, ``chef-backend``), via useradd/usermod."""

import grp
import pwd
import re
import subprocess
from collections.abc import Sequence
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


def _gid_of(gid: int | str) -> int | None:
    """A gid, or a group's by name; None for a group that does not exist (yet)."""
    if isinstance(gid, int):
        return gid
    try:
        return grp.getgrnam(gid).gr_gid
    except KeyError:
        return None


def _supplementary(name: str) -> list[str]:
    return sorted(g.gr_name for g in grp.getgrall() if name in g.gr_mem)


def _plan(
    current: pwd.struct_passwd,
    uid: int | None,
    gid: int | str | None,
    home: str | None,
    shell: str | None,
    groups: list[str] | None,
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if uid is not None and current.pw_uid != uid:
        changes["uid"] = uid
    if gid is not None and _gid_of(gid) != current.pw_gid:
        changes["gid"] = gid
    if home is not None and current.pw_dir != home:
        changes["home"] = home
    if shell is not None and current.pw_shell != shell:
        changes["shell"] = shell
    if groups is not None and _supplementary(current.pw_name) != groups:
        changes["groups"] = groups
    return changes


def _options(changes: dict[str, Any]) -> list[str]:
    """useradd/usermod options for the fields in ``changes`` (both tools share them)."""
    # Short options: the long ones differ between the tools (--home-dir vs --home).
    flags = {"uid": "-u", "gid": "-g", "home": "-d", "shell": "-s"}
    argv: list[str] = []
    for field, flag in flags.items():
        if field in changes:
            argv += [flag, str(changes[field])]
    if "groups" in changes:
        argv += ["-G", ",".join(changes["groups"])]
    return argv


def present(
    ctx: StateContext,
    name: str,
    uid: int | None = None,
    gid: int | str | None = None,
    home: str | None = None,
    shell: str | None = None,
    system: bool = False,
    groups: Sequence[str] | str | None = None,
    createhome: bool = True,
) -> StateResult:
    """Ensure a local user exists with the given attributes; change only those that differ.

    ``gid`` is the primary group (number or name; a new user whose name is already a group
    joins that group). ``groups`` is the exact list of supplementary groups (a string is
    split at commas): the user leaves any other. ``system`` and ``createhome`` apply when
    creating; an existing home directory is never moved. changes: ``created`` and each
    field set.
    """
    if not NAME_PATTERN.match(name):
        return StateResult(result=False, comment=f"invalid user name {name!r}")
    if isinstance(groups, str):  # "a,b" as Salt accepts it; never split into letters
        groups = [g for g in groups.split(",") if g]
    wanted_groups = sorted(set(groups)) if groups is not None else None
    try:
        current: pwd.struct_passwd | None = pwd.getpwnam(name)
    except KeyError:
        current = None
    if current is None:
        fields = {"uid": uid, "gid": gid, "home": home, "shell": shell, "groups": wanted_groups}
        changes = {"created": True, **{k: v for k, v in fields.items() if v is not None}}
    else:
        changes = _plan(current, uid, gid, home, shell, wanted_groups)
    if not changes:
        return StateResult(result=True, comment=f"user {name} exists as declared")
    verb = "create" if current is None else "update"
    if ctx.test:
        return StateResult(result=None, changes=changes, comment=f"would {verb} user {name}")
    if current is None:
        argv = ["useradd", *(["--system"] if system else [])]
        argv.append("--create-home" if createhome else "--no-create-home")
        if gid is None and _gid_of(name) is not None:
            # useradd refuses to make a same-named group when it exists: join that group.
            argv += ["--gid", name]
    else:
        argv = ["usermod"]
    try:
        _tool([*argv, *_options(changes), name])
    except StateError as exc:
        return StateResult(result=False, comment=str(exc))
    return StateResult(result=True, changes=changes, comment=f"{verb}d user {name}")


FUNCTIONS: dict[str, StateFunction] = {"present": present}
