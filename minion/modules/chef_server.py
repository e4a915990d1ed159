"""chef_server.*: drive a Chef Infra Server frontend through ``chef-server-ctl``.

The tool is ``chef-server-ctl`` from PATH unless ``SALINE_CHEF_SERVER_CTL`` names another
executable (the lab points it at a shim). Commands run as argv lists, never through a shell.
Names are validated before anything runs, with the rules of the Chef Infra Server docs.

Moving a file between nodes: the master cannot copy a file from one minion to another, and a
runbook step cannot pass what an earlier step returned to a later one. What does reach a
minion, privately, is its own pillar. So an operator publishes a file's contents under a
pillar key (a ``!secret`` value, targeted only at the nodes that need it); ``pillar_matches``
on the source node checks the published copy is the source file, and ``install_from_pillar``
writes it on the destination. Neither ever returns the contents.
"""

import contextlib
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from minion.modules import cmd
from minion.modules.base import Context, Outcome
from saline.errors import ExecutionError, SalineError
from saline.masking import MASK as MASK  # re-exported: what the password becomes in returns
from saline.masking import mask

TOOL_ENV = "SALINE_CHEF_SERVER_CTL"
DEFAULT_TOOL = "chef-server-ctl"
MIGRATION_LEVEL_PATH = "/var/opt/opscode/upgrades/migration-level"

_SHORT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,254}")
#: an address as chef-server-ctl takes it; never starting with '-' (it reaches an argv)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"[A-Za-z0-9_+][A-Za-z0-9_.+%'=-]{{0,63}}@{_LABEL}(?:\.{_LABEL})+")
_SHORT_RULE = (
    "must begin with a lower-case letter or digit, may only contain lower-case letters, "
    "digits, hyphens and underscores, and must be between 1 and 255 characters"
)
_FULL_RULE = (
    "must begin with a non-white-space character other than '-' and be 1 to 1023 characters"
)


def _tool() -> str:
    return os.environ.get(TOOL_ENV) or DEFAULT_TOOL


def reconfigure(ctx: Context, timeout: float = 1800) -> Outcome:
    """Run ``chef-server-ctl reconfigure``; return its stdout, stderr and retcode.

    Args:
        timeout: seconds before the command is killed.
    """
    return cmd.run(ctx, [_tool(), "reconfigure"], timeout=timeout)


def upgrade(ctx: Context, timeout: float = 3600) -> Outcome:
    """Run ``chef-server-ctl upgrade`` (the standalone upgrade); return stdout, stderr, retcode.

    In a cluster, upgrade one frontend first, copy its migration level to the others, then
    upgrade them one by one (runbook ``chef/rolling_upgrade``).

    Args:
        timeout: seconds before the command is killed.
    """
    return cmd.run(ctx, [_tool(), "upgrade"], timeout=timeout)


#: one service line of ``chef-server-ctl status`` (runit's, as omnibus-ctl prints it), e.g.
#: ``run: nginx: (pid 1234) 5432s; run: log: (pid 1200) 5432s`` or
#: ``down: opscode-erchef: 3s, normally up; run: log: (pid 1100) 5432s``
_STATUS_LINE = re.compile(
    r"^(?P<state>run|down|finish|fail|warning):\s+(?P<service>[A-Za-z0-9_.-]+):\s*"
    r"(?:\(pid (?P<pid>\d+)\)\s*)?(?P<seconds>\d+)s(?P<rest>[^;]*)"
)
_SERVICE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


def parse_status(text: str) -> dict[str, Any]:
    """``chef-server-ctl status`` output as ``{"services", "healthy", "problems"}``; each
    service ``{"state", "pid", "seconds", "normally_up"}`` (the service itself, not its log
    process). A service not running is a problem, one sentence each (``NAME: ...``).

    :raises ExecutionError: a line that is not a service line, or no service at all.
    """
    services: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        found = _STATUS_LINE.match(line.strip())
        if found is None:
            raise ExecutionError(f"chef-server-ctl status: cannot parse line {line.strip()!r}")
        services[found["service"]] = {
            "state": found["state"],
            "pid": None if found["pid"] is None else int(found["pid"]),
            "seconds": int(found["seconds"]),
            "normally_up": "normally up" in found["rest"],
        }
    if not services:
        raise ExecutionError("chef-server-ctl status listed no service")
    problems = [
        f"{name}: {row['state']} for {row['seconds']}s"
        + (", normally up" if row["normally_up"] else "")
        for name, row in services.items()
        if row["state"] != "run"
    ]
    return {"services": services, "healthy": not problems, "problems": problems}


def status(ctx: Context, timeout: float = 60) -> dict[str, Any]:
    """Each frontend service as ``chef-server-ctl status`` reports it (:func:`parse_status`).

    Args:
        timeout: seconds before the command is killed.
    """
    outcome = cmd.run(ctx, [_tool(), "status"], timeout=timeout)
    out: str = outcome.value["stdout"]
    if not out.strip():  # it exits non-zero when a service is down: only no table fails
        err = outcome.value["stderr"].strip().splitlines() or ["no output"]
        raise ExecutionError(f"chef-server-ctl status failed ({outcome.retcode}): {err[-1]}")
    return parse_status(out)


def restart(ctx: Context, service: str, timeout: float = 300) -> Outcome:
    """Restart one frontend service (``chef-server-ctl restart SERVICE``).

    Args:
        service: the service's name as ``chef-server-ctl status`` lists it (``nginx``,
            ``opscode-erchef``, ...).
        timeout: seconds before the command is killed.
    """
    if not isinstance(service, str) or not _SERVICE.match(service):
        raise ExecutionError(
            f"service must be a service name (lower-case letters, digits, '_', '-', '.'), "
            f"got {service!r}"
        )
    return cmd.run(ctx, [_tool(), "restart", service], timeout=timeout)


def _write_atomic(path: str, data: bytes, mode: int, what: str) -> None:
    """Replace ``path`` with ``data`` (temp file + rename); create its directory (0755)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        # mkstemp creates the file 0600, so a secret is never readable by others, even briefly
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    except OSError as exc:
        raise ExecutionError(f"cannot write {what} {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ExecutionError(f"cannot write {what} {path}: {exc.strerror}") from exc


# --- migration level -------------------------------------------------------------------------


def _level_int(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise ExecutionError(f"{field} must be a non-negative integer, got {value!r}")
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, int) and value >= 0:
        return value
    raise ExecutionError(f"{field} must be a non-negative integer, got {value!r}")


def default_level_path(ctx: Context) -> str:
    """The migration-level file under grain ``chef_root`` (empty on a real node; the lab
    roots each node in its own directory)."""
    return f"{ctx.grains.get('chef_root') or ''}{MIGRATION_LEVEL_PATH}"


def migration_level(ctx: Context, path: str | None = None) -> dict[str, Any]:
    """Return the frontend's upgrade migration level: major, minor, sha256 and exists.

    A missing file is not an error: it returns ``exists: False`` with the other keys None.

    Args:
        path: the migration-level file (JSON ``{"major": int, "minor": int}``); default
            ``/var/opt/opscode/upgrades/migration-level`` under grain ``chef_root``.
    """
    path = path or default_level_path(ctx)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return {"major": None, "minor": None, "sha256": None, "exists": False}
    except OSError as exc:
        raise ExecutionError(f"cannot read migration level file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        major = _level_int(data.get("major"), "major")
        minor = _level_int(data.get("minor"), "minor")
    except (ValueError, ExecutionError) as exc:
        raise ExecutionError(f"cannot parse migration level file {path}: {exc}") from exc
    digest = hashlib.sha256(raw).hexdigest()
    return {"major": major, "minor": minor, "sha256": digest, "exists": True}


def set_migration_level(
    ctx: Context, major: int | str, minor: int | str, path: str | None = None
) -> dict[str, Any]:
    """Write the migration level atomically (temp file + rename, mode 0644).

    Nothing is written when the file already holds that level. Returns the new level (as
    ``migration_level``) plus ``changed``.

    Args:
        major: major migration level (non-negative integer).
        minor: minor migration level (non-negative integer).
        path: the migration-level file; only the reference's path under grain
            ``chef_root`` is accepted (the default), its directory created when missing.
    """
    reference = default_level_path(ctx)
    path = path or reference
    if os.path.realpath(path) != os.path.realpath(reference):
        raise ExecutionError(
            f"set_migration_level writes only {reference} (the reference's path under grain"
            f" chef_root), not {path!r}"
        )
    level = {"major": _level_int(major, "major"), "minor": _level_int(minor, "minor")}
    with contextlib.suppress(ExecutionError):
        current = migration_level(ctx, path)
        if current["exists"] and (current["major"], current["minor"]) == tuple(level.values()):
            return {**current, "changed": False}
    data = json.dumps(level, separators=(",", ":")).encode()
    _write_atomic(path, data, 0o644, "migration level file")
    return {**migration_level(ctx, path), "changed": True}


def compare_migration_levels(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    """Compare two migration levels (mappings with ``major`` and ``minor``); pure.

    :returns: -1 when ``a`` is older than ``b``, 0 when equal, 1 when newer.
    :raises ExecutionError: a level lacks an integer major or minor (e.g. a missing file).
    """
    # the one comparison of levels, shared with the master's migration_drift check
    from saline.migration_level import MigrationLevelError, compare_levels

    try:
        return compare_levels(a, b)
    except MigrationLevelError as exc:
        raise ExecutionError(str(exc)) from exc


# --- files handed from node to node through the pillar -----------------------------------------


def _check_key(key: Any) -> list[str]:
    parts = key.split(":") if isinstance(key, str) else []
    if not parts or not all(parts):
        raise ExecutionError(f"invalid key {key!r}: key must be a pillar key like chef:secrets")
    return parts


def _pillar_text(ctx: Context, key: str) -> str | None:
    """The text this minion's pillar holds at ``key`` (``a:b`` is b inside a); None if absent.

    :raises ExecutionError: no channel to the master, or the value is not text.
    """
    parts = _check_key(key)
    if ctx.channel is None:
        raise ExecutionError("reading the pillar needs the master: run this as a job")
    try:
        node: Any = ctx.channel.request("pillar").get("pillar") or {}
    except SalineError as exc:
        raise ExecutionError(f"cannot get pillar: {exc}") from exc
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if not isinstance(node, str):
        # never show the value: it is usually a secret
        raise ExecutionError(f"pillar key {key} must hold a file's text, not {type(node).__name__}")
    return node


def _file_mode(mode: Any) -> int:
    """``"0600"``/``"600"`` (octal text) or mode bits."""
    try:
        bits = int(mode, 8) if isinstance(mode, str) else mode
    except ValueError:
        bits = None
    if isinstance(bits, bool) or not isinstance(bits, int) or not 0 <= bits <= 0o777:
        raise ExecutionError(f"invalid mode {mode!r}: expected octal like '0600'")
    return bits


def install_from_pillar(
    ctx: Context, path: str, key: str, mode: str | int = "0600"
) -> dict[str, Any]:
    """Write the text of pillar ``key`` to ``path`` atomically; nothing is written when the
    file already holds it with that mode. The contents are never returned.

    Returns ``path``, ``key``, ``sha256`` and ``bytes`` of what the file holds, and ``changed``.

    Args:
        path: absolute path of the file; its directory is created when missing.
        key: pillar key of the contents (``a:b`` is key b inside a).
        mode: permission bits as octal text (default ``0600``: these files hold secrets).
    """
    _check_path(path, "path")
    bits = _file_mode(mode)
    text = _pillar_text(ctx, key)
    if text is None:
        raise ExecutionError(
            f"no pillar key {key} on {ctx.minion_id}: publish the file there first"
        )
    data = text.encode()
    digest = hashlib.sha256(data).hexdigest()
    result = {"path": path, "key": key, "sha256": digest, "bytes": len(data)}
    with contextlib.suppress(OSError):
        with open(path, "rb") as fh:
            same = fh.read() == data
        if same and stat.S_IMODE(os.stat(path).st_mode) == bits:
            return {**result, "changed": False}
    _write_atomic(path, data, bits, "file")
    return {**result, "changed": True}


def pillar_matches(ctx: Context, path: str, key: str) -> dict[str, Any]:
    """Whether pillar ``key`` holds the contents of the file at ``path`` (final newlines
    aside: YAML block scalars add or drop one). Neither contents is returned.

    A missing key or file is an answer (``matches`` false), not an error, so a runbook can
    ``wait_for`` an operator to publish the file. Returns ``matches``, ``reason``, ``path``
    and ``key``.

    Args:
        path: absolute path of the source file on this node.
        key: pillar key where the file's contents are published.
    """
    _check_path(path, "path")
    text = _pillar_text(ctx, key)
    try:
        with open(path, "rb") as fh:
            data: bytes | None = fh.read()
    except FileNotFoundError:
        data = None
    except OSError as exc:
        raise ExecutionError(f"cannot read {path}: {exc.strerror}") from exc
    if text is None:
        matches, reason = False, f"no pillar key {key} on {ctx.minion_id}"
    elif data is None:
        matches, reason = False, f"no file {path}"
    elif data.rstrip(b"\n") != text.encode().rstrip(b"\n"):
        matches, reason = False, f"pillar key {key} differs from {path}"
    else:
        matches, reason = True, f"pillar key {key} holds {path}"
    return {"matches": matches, "reason": reason, "path": path, "key": key}


# --- users and organizations -----------------------------------------------------------------


def _check_short(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _SHORT_NAME.fullmatch(value):
        raise ExecutionError(f"invalid {field} {value!r}: {field} {_SHORT_RULE}")
    return value


def _check_full(value: Any, field: str) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 1023
        or value[0].isspace()
        or value[0] == "-"
    ):
        shown = value if not isinstance(value, str) or len(value) <= 40 else value[:40] + "..."
        raise ExecutionError(f"invalid {field} {shown!r}: {field} {_FULL_RULE}")
    return value


def _check_path(value: Any, field: str) -> str:
    if not isinstance(value, str) or not os.path.isabs(value) or "\0" in value:
        raise ExecutionError(f"invalid {field} {value!r}: {field} must be an absolute path")
    return value


def _masked(outcome: Outcome, argv: list[str], secret: str) -> Outcome:
    value = {
        "stdout": outcome.value["stdout"],
        "stderr": outcome.value["stderr"],
        "retcode": outcome.retcode,
        "argv": argv,
    }
    return Outcome(mask(value, [secret]), outcome.retcode)


def user_create(
    ctx: Context,
    username: str,
    first_name: str,
    last_name: str,
    email: str,
    password: str,
    filename: str,
    timeout: float = 300,
) -> Outcome:
    """Create a Chef Infra Server user (``chef-server-ctl user-create``).

    Every argument is validated before the tool runs. The password is masked in the returned
    argv, stdout and stderr, and never appears in an error message.

    Args:
        username: begins with a lower-case letter or digit; lower-case letters, digits,
            hyphens and underscores; 1 to 255 characters.
        first_name: 1 to 1023 characters, not starting with white space or '-'.
        last_name: as first_name.
        email: the user's email address.
        password: the user's password (not starting with '-').
        filename: absolute path where the user's RSA private key is written.
        timeout: seconds before the command is killed.
    """
    _check_short(username, "username")
    _check_full(first_name, "first_name")
    _check_full(last_name, "last_name")
    if not isinstance(email, str) or len(email) > 254 or not _EMAIL.fullmatch(email):
        raise ExecutionError(f"invalid email {email!r}: email must look like user@example.com")
    if not isinstance(password, str) or not password or password.startswith("-"):
        raise ExecutionError("invalid password: password must be non-empty, not starting with '-'")
    _check_path(filename, "filename")
    argv = [_tool(), "user-create", username, first_name, last_name, email, password]
    argv += ["--filename", filename]
    return _masked(cmd.run(ctx, argv, timeout=timeout), argv, password)


def org_create(
    ctx: Context,
    short_name: str,
    full_name: str,
    association_user: str | None = None,
    filename: str | None = None,
    timeout: float = 300,
) -> Outcome:
    """Create a Chef Infra Server organization (``chef-server-ctl org-create``).

    Every argument is validated before the tool runs.

    Args:
        short_name: begins with a lower-case letter or digit; lower-case letters, digits,
            hyphens and underscores; 1 to 255 characters (e.g. ``4thcoffee``).
        full_name: 1 to 1023 characters, not starting with white space or '-'.
        association_user: username to add to the organization's admins group.
        filename: absolute path where the validator's RSA private key is written.
        timeout: seconds before the command is killed.
    """
    _check_short(short_name, "short_name")
    _check_full(full_name, "full_name")
    argv = [_tool(), "org-create", short_name, full_name]
    if association_user is not None:
        argv += ["--association_user", _check_short(association_user, "association_user")]
    if filename is not None:
        argv += ["--filename", _check_path(filename, "filename")]
    outcome = cmd.run(ctx, argv, timeout=timeout)
    return Outcome({**outcome.value, "argv": argv}, outcome.retcode)


#: jobs' time limits when they give no ``timeout=`` (the commands' own, above): a
#: reconfigure or an upgrade takes many minutes on a real frontend
TIMEOUTS: dict[Callable[..., Any], float] = {reconfigure: 1800.0, upgrade: 3600.0}

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "reconfigure": reconfigure,
    "upgrade": upgrade,
    "status": status,
    "restart": restart,
    "install_from_pillar": install_from_pillar,
    "pillar_matches": pillar_matches,
    "migration_level": migration_level,
    "set_migration_level": set_migration_level,
    "user_create": user_create,
    "org_create": org_create,
}
