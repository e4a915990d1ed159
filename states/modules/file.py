"""file.*: files, directories, symlinks and single settings in config files on this node.

Paths must be absolute. Every function reads the node first, works out what differs and
changes only that; in test mode it reports the would-be changes and touches nothing.
Expected failures (missing parent directory, unknown user, bad mode) come back as
``result=False`` with a comment saying what to fix.
"""

import contextlib
import difflib
import functools
import grp
import os
import pwd
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec

from saline.errors import StateError
from saline.masking import Masker
from states.modules.base import StateContext, StateFunction, StateResult
from states.render import render_jinja

#: unified diffs in ``changes`` stop after this many lines
MAX_DIFF_LINES = 500
#: the previous content of a file replaced by ``managed`` (when ``backup`` is true)
BACKUP_SUFFIX = ".saline-bak"
SENSITIVE_DIFF = "<sensitive: diff hidden>"
#: mode of files ``managed`` creates without an explicit ``mode``
DEFAULT_FILE_MODE = 0o644

P = ParamSpec("P")


# -- reading and planning ------------------------------------------------------------------


def _path(name: str) -> str:
    if not name or not os.path.isabs(name):
        raise StateError(f"path must be absolute, got {name!r}")
    return os.path.normpath(name)


def _stat(path: str, follow: bool = True) -> os.stat_result | None:
    try:
        return os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return None


def _mode_bits(mode: str | int | None) -> int | None:
    """Strings are octal ("0644", "644"); ints are mode bits (quote modes in YAML)."""
    if mode is None:
        return None
    if isinstance(mode, bool) or not isinstance(mode, int | str):
        raise StateError(f"invalid mode {mode!r}: expected octal like '0644'")
    try:
        bits = mode if isinstance(mode, int) else int(mode.strip().lower().removeprefix("0o"), 8)
    except ValueError as exc:
        raise StateError(f"invalid mode {mode!r}: expected octal like '0644'") from exc
    if not 0 <= bits <= 0o7777:
        raise StateError(f"invalid mode {mode!r}: out of range")
    return bits


def _owner_id(kind: str, owner: str | int | None) -> int | None:
    """uid (kind "user") or gid (kind "group") of a name; numbers are taken as they are."""
    if owner is None or isinstance(owner, int):
        return owner
    try:
        return pwd.getpwnam(owner).pw_uid if kind == "user" else grp.getgrnam(owner).gr_gid
    except KeyError:
        raise StateError(f"no such {kind}: {owner}") from None


class _Attrs:
    """Declared mode and ownership, resolved to numbers."""

    def __init__(self, mode: str | int | None, user: str | int | None, group: str | int | None):
        self.mode, self.uid, self.gid = (
            _mode_bits(mode),
            _owner_id("user", user),
            _owner_id("group", group),
        )
        self.user, self.group = user, group

    def plan(self, st: os.stat_result | None) -> dict[str, Any]:
        """What differs from ``st`` (everything declared when the path does not exist yet)."""
        changes: dict[str, Any] = {}
        if self.mode is not None and (st is None or stat.S_IMODE(st.st_mode) != self.mode):
            changes["mode"] = f"{self.mode:04o}"
        if self.uid is not None and (st is None or st.st_uid != self.uid):
            changes["user"] = self.user
        if self.gid is not None and (st is None or st.st_gid != self.gid):
            changes["group"] = self.group
        return changes

    def resolve(self, st: os.stat_result | None) -> tuple[int, int, int]:
        """(mode, uid, gid) to write: as declared, else as ``st``, else a new file's defaults."""
        mode, uid, gid = DEFAULT_FILE_MODE, os.geteuid(), os.getegid()
        if st is not None:
            mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        return (
            mode if self.mode is None else self.mode,
            uid if self.uid is None else self.uid,
            gid if self.gid is None else self.gid,
        )

    def apply(self, path: str) -> None:
        # chown first: it clears setuid/setgid bits that the chmod may have to set.
        if self.uid is not None or self.gid is not None:
            os.chown(
                path, -1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid
            )
        if self.mode is not None:
            os.chmod(path, self.mode)


def _redact(ctx: StateContext, text: str) -> str:
    return Masker(ctx.secrets).text(text)


def _diff(ctx: StateContext, path: str, old: bytes, new: bytes, sensitive: bool = False) -> str:
    if sensitive:
        return SENSITIVE_DIFF
    try:
        before, after = old.decode(), new.decode()
    except UnicodeDecodeError:
        return "<binary content differs>"
    lines: list[str] = []
    for line in difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), path, path
    ):
        lines.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    extra = len(lines) - MAX_DIFF_LINES
    tail = [f"... diff truncated: {extra} more lines\n"] if extra > 0 else []
    return _redact(ctx, "".join(lines[:MAX_DIFF_LINES] + tail))


def _fail(comment: str) -> StateResult:
    return StateResult(result=False, comment=comment)


def _reported(fn: Callable[P, StateResult]) -> Callable[P, StateResult]:
    """Expected failures become ``result=False`` with the reason, not an exception."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> StateResult:
        try:
            return fn(*args, **kwargs)
        except StateError as exc:
            return _fail(str(exc))
        except OSError as exc:
            return _fail(f"{exc.filename or 'file operation'}: {exc.strerror or exc}")

    return wrapper


# -- acting --------------------------------------------------------------------------------


def _write_atomic(path: str, data: bytes, mode: int, uid: int, gid: int) -> None:
    """Replace ``path`` in one rename: readers see the old or the new file, never a mix."""
    # Same directory as the target, so os.replace is a same-filesystem (atomic) rename.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            st = os.fstat(fh.fileno())
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.fchown(fh.fileno(), uid, gid)
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _desired_content(
    ctx: StateContext,
    contents: str | bytes | None,
    source: str | None,
    template: str | None,
    context: Mapping[str, Any] | None,
) -> bytes | None:
    if contents is not None and source is not None:
        raise StateError("give either contents or source, not both")
    if template not in (None, "jinja"):
        raise StateError(f"unsupported template {template!r}: only 'jinja'")
    if source is not None:
        data = ctx.files.get(source)
        name = source
    elif isinstance(contents, str | bytes):
        data = contents.encode() if isinstance(contents, str) else contents
        name = "contents"
    elif contents is not None:
        raise StateError(f"contents must be text, got {type(contents).__name__}")
    else:
        return None
    if template == "jinja":
        variables = {"grains": ctx.grains, "pillar": ctx.pillar, "minion_id": ctx.minion_id}
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            raise StateError(f"{name}: a template must be UTF-8 text") from exc
        data = render_jinja(text, name=name, context={**variables, **(context or {})}).encode()
    return data


# -- state functions -----------------------------------------------------------------------


@_reported
def managed(
    ctx: StateContext,
    name: str,
    contents: str | bytes | None = None,
    source: str | None = None,
    template: str | None = None,
    mode: str | int | None = None,
    user: str | int | None = None,
    group: str | int | None = None,
    makedirs: bool = False,
    backup: bool = True,
    sensitive: bool = False,
    context: Mapping[str, Any] | None = None,
) -> StateResult:
    """Ensure a file has the given content, mode and owner; change only what differs.

    Content comes from ``contents`` or ``source`` (``saline://path``), optionally rendered
    with Jinja (``template: jinja``; variables ``grains``, ``pillar``, ``minion_id`` and
    ``context``). Without either, only existence, mode and owner are managed. New content
    replaces the file atomically; the old file is kept as ``NAME.saline-bak`` when
    ``backup`` is true. A symlink is followed. New files default to mode 0644.

    changes: ``created``, ``diff`` (hidden when ``sensitive``), ``mode``, ``user``, ``group``.
    """
    path = os.path.realpath(_path(name))
    data = _desired_content(ctx, contents, source, template, context)
    attrs = _Attrs(mode, user, group)
    parent = os.path.dirname(path)
    if not makedirs and not os.path.isdir(parent):
        return _fail(f"parent directory {parent} does not exist (set makedirs: true to create it)")
    st = _stat(path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        return _fail(f"{path} exists and is not a regular file")
    old = None
    if st is not None and data is not None:
        with open(path, "rb") as fh:
            old = fh.read()
    rewrite = st is None or (data is not None and old != data)
    changes: dict[str, Any] = {"created": True} if st is None else {}
    if data is not None and rewrite:
        changes["diff"] = _diff(ctx, path, old or b"", data, sensitive)
    changes.update(attrs.plan(st))
    if not changes:
        what = "content, mode and owner" if data is not None else "mode and owner"
        return StateResult(result=True, comment=f"{path} is up to date ({what} as declared)")
    verb = "create" if st is None else "update"
    if ctx.test:
        return StateResult(result=None, changes=changes, comment=f"would {verb} {path}")
    if rewrite:
        if makedirs:
            os.makedirs(parent, exist_ok=True)
        if backup and old is not None:
            shutil.copy2(path, path + BACKUP_SUFFIX)  # copy2 keeps the old (maybe 0600) mode
        _write_atomic(path, data or b"", *attrs.resolve(st))
    else:
        attrs.apply(path)
    return StateResult(result=True, changes=changes, comment=f"{verb}d {path}")


@_reported
def directory(
    ctx: StateContext,
    name: str,
    mode: str | int | None = None,
    user: str | int | None = None,
    group: str | int | None = None,
    makedirs: bool = True,
) -> StateResult:
    """Ensure a directory exists with the given mode and owner (parents created by default).

    changes: ``created``, ``mode``, ``user``, ``group``.
    """
    path = _path(name)
    attrs = _Attrs(mode, user, group)
    st = _stat(path)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        return _fail(f"{path} exists and is not a directory")
    parent = os.path.dirname(path)
    if st is None and not makedirs and not os.path.isdir(parent):
        return _fail(f"parent directory {parent} does not exist (set makedirs: true to create it)")
    changes: dict[str, Any] = {"created": True} if st is None else {}
    changes.update(attrs.plan(st))
    if not changes:
        return StateResult(result=True, comment=f"directory {path} is up to date")
    verb = "create" if st is None else "update"
    if ctx.test:
        return StateResult(result=None, changes=changes, comment=f"would {verb} directory {path}")
    if st is None:
        (os.makedirs if makedirs else os.mkdir)(path)
    attrs.apply(path)
    return StateResult(result=True, changes=changes, comment=f"{verb}d directory {path}")


@_reported
def absent(ctx: StateContext, name: str) -> StateResult:
    """Ensure nothing exists at a path: a file, a symlink (not its target) or a whole tree.

    Refuses ``/``. changes: ``removed``.
    """
    path = _path(name)
    if path.strip("/") == "":
        return _fail("refusing to remove the root directory")
    st = _stat(path, follow=False)
    if st is None:
        return StateResult(result=True, comment=f"{path} is already absent")
    changes = {"removed": path}
    if ctx.test:
        return StateResult(result=None, changes=changes, comment=f"would remove {path}")
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)
    return StateResult(result=True, changes=changes, comment=f"removed {path}")


@_reported
def symlink(
    ctx: StateContext, name: str, target: str, force: bool = False, makedirs: bool = False
) -> StateResult:
    """Ensure ``name`` is a symlink to ``target``.

    A symlink pointing elsewhere is replaced; a file or directory in the way only with
    ``force: true``. changes: ``target``, ``old_target`` or ``replaced``.
    """
    path = _path(name)
    if not target:
        return _fail("symlink target must not be empty")
    st = _stat(path, follow=False)
    current = os.readlink(path) if st is not None and stat.S_ISLNK(st.st_mode) else None
    if current == target:
        return StateResult(result=True, comment=f"{path} already points to {target}")
    parent = os.path.dirname(path)
    if not makedirs and not os.path.isdir(parent):
        return _fail(f"parent directory {parent} does not exist (set makedirs: true to create it)")
    changes: dict[str, Any] = {"target": target}
    if current is not None:
        changes["old_target"] = current
    elif st is not None:
        kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
        if not force:
            return _fail(f"{path} exists and is a {kind}; set force: true to replace it")
        changes["replaced"] = kind
    if ctx.test:
        return StateResult(result=None, changes=changes, comment=f"would link {path} -> {target}")
    os.makedirs(parent, exist_ok=True)
    if st is not None and stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    # Link under a random temporary name (os.symlink never overwrites), then rename it over
    # the path: there is no moment without a link.
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{os.urandom(6).hex()}")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return StateResult(result=True, changes=changes, comment=f"linked {path} -> {target}")


@_reported
def exists(ctx: StateContext, name: str) -> StateResult:
    """Check that something exists at a path (a dangling symlink counts); changes nothing."""
    path = _path(name)
    if os.path.lexists(path):
        return StateResult(result=True, comment=f"{path} exists")
    return _fail(f"{path} does not exist")


# -- single lines in config files ----------------------------------------------------------


def _split_lines(text: str) -> list[str]:
    """Lines with their endings, so that ``"".join`` gives back the exact text."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _body(line: str) -> str:
    return line.rstrip("\r\n")


def _with_line(lines: list[str], body: str) -> list[str]:
    """``lines`` plus ``body`` at the end (after closing an unterminated last line)."""
    ending = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    if lines and not lines[-1].endswith("\n"):
        lines = [*lines[:-1], lines[-1] + ending]
    return [*lines, body + ending]


def _edit(
    ctx: StateContext,
    name: str,
    edit: Callable[[list[str]], tuple[list[str], str]],
    if_missing: str | None = None,
) -> StateResult:
    """Apply ``edit`` (lines -> new lines, reason when unchanged) to a file in place.

    Bytes that are not UTF-8 survive untouched (surrogateescape); mode and owner are kept.
    A missing file is an error, unless ``if_missing`` gives the reason it is fine.
    """
    path = os.path.realpath(_path(name))
    st = _stat(path)
    if st is None and if_missing is not None:
        return StateResult(result=True, comment=f"{path} does not exist: {if_missing}")
    if st is None or not stat.S_ISREG(st.st_mode):
        return _fail(
            f"{path} does not exist or is not a regular file (manage it with file.managed)"
        )
    with open(path, "rb") as fh:
        old = fh.read()
    lines, reason = edit(_split_lines(old.decode("utf-8", "surrogateescape")))
    new = "".join(lines).encode("utf-8", "surrogateescape")
    if new == old:
        return StateResult(result=True, comment=f"{path}: {reason}")
    changes = {"diff": _diff(ctx, path, old, new)}
    if ctx.test:
        return StateResult(result=None, changes=changes, comment=f"would edit {path}")
    _write_atomic(path, new, *_Attrs(None, None, None).resolve(st))
    return StateResult(result=True, changes=changes, comment=f"edited {path}")


def _single_line(what: str, text: str) -> str:
    if "\n" in text or "\r" in text:
        raise StateError(f"{what} must be a single line")
    return text


@_reported
def line(
    ctx: StateContext,
    name: str,
    content: str,
    match: str | None = None,
    mode: str = "ensure",
) -> StateResult:
    """Ensure a line is in a file, or (``mode: absent``) that it is not; the rest is kept.

    ensure: replace every line matching the regex ``match`` with ``content``; when nothing
    matches and ``content`` is not already a line, append it.
    absent: remove lines equal to ``content`` (or matching ``match`` when given).
    A missing file is an error for ensure and already fine for absent. changes: ``diff``.
    """
    _single_line("content", content)
    if mode not in ("ensure", "absent"):
        return _fail(f"mode must be 'ensure' or 'absent', got {mode!r}")
    try:
        regex = re.compile(match) if match is not None else None
    except re.error as exc:
        return _fail(f"invalid match regex {match!r}: {exc}")

    def matches(body: str) -> bool:
        return regex.search(body) is not None if regex is not None else body == content

    def ensure(lines: list[str]) -> tuple[list[str], str]:
        if regex is not None and any(matches(_body(x)) for x in lines):
            new = [content + x[len(_body(x)) :] if matches(_body(x)) else x for x in lines]
            return new, "the matching lines already read as declared"
        if any(_body(x) == content for x in lines):
            return lines, "the line is already present"
        return _with_line(lines, content), ""

    def remove(lines: list[str]) -> tuple[list[str], str]:
        return [x for x in lines if not matches(_body(x))], "no such line to remove"

    if mode == "ensure":
        return _edit(ctx, name, ensure)
    return _edit(ctx, name, remove, if_missing="no line to remove")


@_reported
def keyvalue(
    ctx: StateContext,
    name: str,
    key: str,
    value: str | int | float | bool,
    separator: str = " ",
    quote: str | None = "'",
    append_if_missing: bool = True,
) -> StateResult:
    """Set one ``KEY<separator><quote>VALUE<quote>`` setting, keeping every other byte.

    Fits Ruby-style (``publish_address '10.0.0.1'``) and ini-style (separator ``" = "``,
    ``quote: ""`` for a raw value such as ``["samehost", "samenet"]``) config files. Lines
    setting ``key`` (not comments) are replaced in place, keeping their indentation; with
    none, the line is appended unless ``append_if_missing`` is false. Booleans are written
    ``true``/``false``. changes: ``diff``.
    """
    _single_line("key", key)
    if not key.strip():
        return _fail("key must not be empty")
    text = str(value).lower() if isinstance(value, bool) else str(value)
    wanted = _single_line("value", f"{key}{separator}{quote or ''}{text}{quote or ''}")
    # The key must be followed by a blank, the separator or the end of the line: setting
    # "port" must not touch "port_range".
    stops = [r"\s", "$"] + ([re.escape(separator.strip())] if separator.strip() else [])
    pattern = re.compile(rf"^(\s*){re.escape(key)}(?={'|'.join(stops)})")

    def set_value(lines: list[str]) -> tuple[list[str], str]:
        found = False
        new: list[str] = []
        for x in lines:
            m = pattern.match(_body(x))
            found = found or m is not None
            new.append(m.group(1) + wanted + x[len(_body(x)) :] if m else x)
        if found:
            return new, f"{key} is already set as declared"
        if not append_if_missing:
            return lines, f"{key} is not set and append_if_missing is false"
        return _with_line(lines, wanted), ""

    return _edit(ctx, name, set_value)


FUNCTIONS: dict[str, StateFunction] = {
    "managed": managed,
    "directory": directory,
    "absent": absent,
    "symlink": symlink,
    "exists": exists,
    "line": line,
    "keyvalue": keyvalue,
}
